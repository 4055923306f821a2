"""Every function-preserving pass keeps the fp32 ORT logits (max|Δ| / max|logits| <= 1e-4).

Measured: at most 1.3e-6 over every recipe and family below (benchmarks/tiny_errors.py, section
"tiny-errors" of docs/RESULTS.md; every exporter: test_file_exporters.py).
"""

import json

import numpy as np
import onnx
import pytest

from conftest import FAMILIES, relative_error, run_logits
from oqcompile import compile_file, modelio
from oqcompile.compiler import optimize
from oqcompile.rotation import find_rotations
from oqcompile.structure import analyze

RECIPES = ("fuse_norms", "rotate_residual", "rotate_heads", "rotate_qk", "online_hadamard", "rotate")
TOLERANCE = 1e-4


def input_ids(vocab: int = 256) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, (2, 24)).astype(np.int64)


def optimized(source, recipe, target, seed=0, portable=False):
    return compile_file(source, target, recipe, seed=seed, portable=portable).target


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("model_id", FAMILIES)
def test_recipe_keeps_logits(tiny_export, tmp_path, model_id, recipe):
    source = tiny_export(model_id)
    expected = run_logits(source, input_ids())
    actual = run_logits(optimized(source, recipe, tmp_path / "out.onnx", seed=7), input_ids())
    assert relative_error(actual, expected) <= TOLERANCE


def test_rotate_changes_weights_and_inserts_named_online_rotations(tiny_export):
    model = modelio.load(tiny_export("tiny-llama"))
    before = analyze(model).blocks[0].mlp.down.weight().copy()
    optimize(model, "rotate", seed=1, portable=True)  # analyze() does not read ORT-fused norms yet
    rotations = find_rotations(model.graph)
    names = {r.name for r in rotations}
    assert "layers.0.mlp.down_proj/hadamard" in names
    assert "layers.1.self_attn.o_proj/hadamard" in names
    assert "layers.0.self_attn.q_proj/hadamard" in names and "layers.0.self_attn.k_proj/hadamard" in names
    assert all(r.online for r in rotations)
    after = analyze(model).blocks[0].mlp.down.weight()
    assert np.abs(after - before).max() > 1e-3
    assert all(n.kind == "rms" and n.scale_free for n in analyze(model).norms())


def test_cancel_rotations_folds_an_emitted_inverse(tiny_export, tmp_path):
    """online_hadamard(fold_inverse=False) leaves H followed by Hᵀ; cancel folds Hᵀ into W."""
    from oqcompile.passes.cancel_rotations import CancelRotations
    from oqcompile.passes.online_hadamard import OnlineHadamard

    source = tiny_export("tiny-mistral")
    expected = run_logits(source, input_ids())
    model = modelio.load(source)
    OnlineHadamard(fold_inverse=False)(model)
    assert sum(not r.online for r in find_rotations(model.graph)) == 2
    unfolded = run_logits(modelio.save(model, tmp_path / "unfolded.onnx"), input_ids())
    result = CancelRotations()(model)
    assert result.modified
    assert all(r.online for r in find_rotations(model.graph))
    folded = run_logits(modelio.save(model, tmp_path / "folded.onnx"), input_ids())
    assert relative_error(unfolded, expected) <= TOLERANCE
    assert relative_error(folded, expected) <= TOLERANCE


def test_cancel_rotations_removes_adjacent_inverse_pair(tiny_export, tmp_path):
    from oqcompile.passes.cancel_rotations import CancelRotations
    from oqcompile.rotation import insert_hadamard

    source = tiny_export("tiny-llama")
    model = modelio.load(source)
    node_count = len(list(model.graph))
    value = analyze(model).blocks[0].attention.q_rotary
    rotated = insert_hadamard(value, 16, "probe", online=False)
    insert_hadamard(rotated, 16, "probe", inverse=True, online=False)
    CancelRotations()(model)
    assert find_rotations(model.graph) == []
    assert len(list(model.graph)) == node_count
    actual = run_logits(modelio.save(model, tmp_path / "out.onnx"), input_ids())
    np.testing.assert_array_equal(actual, run_logits(source, input_ids()))


def test_output_is_valid_recorded_deterministic_and_input_untouched(tiny_export, tmp_path):
    source = tiny_export("tiny-qwen2")
    before = source.read_bytes()
    first = optimized(source, "rotate", tmp_path / "a.onnx", seed=5)
    second = optimized(source, "rotate", tmp_path / "b.onnx", seed=5)
    third = optimized(source, "rotate", tmp_path / "c.onnx", seed=6)
    assert source.read_bytes() == before
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != third.read_bytes()
    onnx.checker.check_model(str(optimized(source, "rotate", tmp_path / "portable.onnx", portable=True)),
                             full_check=True)  # the lowered one holds ORT's contrib ops, which onnx does not know
    meta = modelio.metadata(first)
    assert meta["oq.recipe"] == "rotate" and meta["oq.seed"] == "5"
    passes = json.loads(meta["oq.passes"])
    assert [p["pass"] for p in passes] == ["fuse_norms", "rotate_residual", "rotate_heads",
                                           "rotate_qk", "online_hadamard", "cancel_rotations", "lower", "fuse_ort",
                                           "drop_nan_guard"]
    assert passes[1]["params"] == {"seed": 5}


def test_layer_norms_become_rms_on_a_centred_stream(tiny_export):
    """fuse_norms on OPT: every LayerNorm turns into a scale-free RMS norm, every writer is mean-free."""
    model = modelio.load(tiny_export("tiny-opt"))
    optimize(model, "fuse_norms", portable=True)
    t = analyze(model)
    assert all(n.kind == "rms" and n.scale_free for n in t.norms())
    writers = [t.embedding.table(), t.positional[0].table()] + [w.weight() for w in t.stream_writers()]
    writers += [w.bias()[None] for w in t.stream_writers()]
    assert max(np.abs(w.mean(axis=1)).max() for w in writers) < 1e-6


def test_residual_rotation_requires_fused_norms(tiny_export):
    import onnx_ir as ir

    from oqcompile.passes.rotate_residual import RotateResidual

    model = modelio.load(tiny_export("tiny-llama"))
    with pytest.raises(ir.passes.PreconditionError, match="layers.0.input_layernorm is not scale-free"):
        RotateResidual()(model)


@pytest.mark.parametrize("portable", [True, False])
def test_post_norm_blocks_decline_r1_and_keep_logits(tiny_export, tmp_path, caplog, portable):
    """Gemma 2: each sub-layer's output is normalized (with a gain) before the residual add, which no
    stream rotation passes. R1 declines with a sentence; R2-R4 still run, exactly (measured 7.7e-7,
    "tiny-errors")."""
    source = tiny_export("tiny-gemma2")
    block = analyze(modelio.load(source)).blocks[1]
    assert block.attn_post_norm.name == "layers.1.attention_output_norm" and block.mlp_post_norm is not None
    target = optimized(source, "rotate", tmp_path / "out.onnx", portable=portable)
    assert "R1 not applied: layers.0.attention_output_norm normalizes" in caplog.text
    assert relative_error(run_logits(target, input_ids()), run_logits(source, input_ids())) <= TOLERANCE
    assert any(r.name == "layers.0.mlp.down_proj/hadamard" for r in find_rotations(modelio.load(target).graph))
