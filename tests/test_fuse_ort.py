"""fuse_ort: ORT's fused attention and norms, after oqcompile's passes, keep the logits.

The lowered output of every recipe goes through fuse_ort (test_passes.py covers every
rotation recipe on every family with it). Measured (benchmarks/tiny_errors.py, section
"tiny-errors" of docs/RESULTS.md): rotation recipes, lowered and fused, at most 1.3e-6 against
the export; a left-padded KV-cache batch, prefill and one decode step, 6.6e-7 at the real
tokens, and padded positions stay finite.
"""

import collections

import numpy as np
import onnx
import pytest

from conftest import FAMILIES, relative_error, run_logits
from oqcompile import compile_file, evaluate
from oqcompile.models.tiny import TINY_CONFIGS
from oqcompile.recipes import ROTATE, recipe_toml

TOLERANCE = 1e-4
LAYERS = 2  # every tiny model
FUSED_NORMS = ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization")


def op_counts(path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.mark.parametrize("model_id", FAMILIES)
def test_every_norm_and_attention_is_fused_and_logits_stay(tiny_export, tmp_path, model_id):
    source = tiny_export(model_id)
    target = compile_file(source, tmp_path / "out.onnx", "rotate").target
    ops = op_counts(target)
    assert sum(ops[op] for op in FUSED_NORMS) == 2 * LAYERS + 1  # the gain-free norms fuse_norms left
    assert ops["SkipSimplifiedLayerNormalization"] >= 1
    if model_id != "tiny-opt":  # OPT's attention is not the exporter's SDPA pattern: it stays unfused
        assert ops["MultiHeadAttention"] == LAYERS and not ops["Softmax"] and not ops["IsNaN"]
    ids = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)
    assert relative_error(run_logits(target, ids), run_logits(source, ids)) <= TOLERANCE


def test_portable_output_has_no_contrib_ops(tiny_export, tmp_path):
    target = compile_file(tiny_export("tiny-llama"), tmp_path / "out.onnx", "rotate", portable=True).target
    model = onnx.load(str(target), load_external_data=False)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert not set(op_counts(target)) & {"MultiHeadAttention", *FUSED_NORMS}


@pytest.mark.parametrize("fold_min_kv_heads", [None, 1])
def test_fused_kv_cache_model_keeps_left_padded_batches(tiny_export, tmp_path, fold_min_kv_heads):
    """MultiHeadAttention replaces the exporter's guard for fully masked rows (padded queries),
    and reads the KV cache heads first (no Transpose). By default tiny-llama's 2 key/value heads
    stay repeated for its 4 query heads (``Expand``); with ``fold_min_kv_heads`` 1 the query
    groups fold into the sequence and the kernel reads the cache itself (module doc)."""
    source = tiny_export("tiny-llama", kv_cache=True)
    recipe = "rotate"
    if fold_min_kv_heads is not None:
        recipe = tmp_path / "rotate-fold.toml"
        recipe.write_text(recipe_toml([(cls.name, params) for cls, params in ROTATE]
                                      + [("lower", {}), ("fuse_ort", {"fold_min_kv_heads": fold_min_kv_heads})]))
    target = compile_file(source, tmp_path / "out.onnx", str(recipe)).target
    graph = onnx.load(str(target), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    attentions = [node for node in graph.node if node.op_type == "MultiHeadAttention"]
    assert len(attentions) == LAYERS
    heads = {onnx.helper.get_attribute_value(a) for node in attentions for a in node.attribute if a.name == "num_heads"}
    config = TINY_CONFIGS["tiny-llama"]
    for key_or_value in (producers[node.input[i]] for node in attentions for i in (1, 2)):
        if fold_min_kv_heads is None:
            assert key_or_value.op_type == "Reshape" and producers[key_or_value.input[0]].op_type == "Expand"
        else:
            assert key_or_value.op_type == "Concat"  # past and present keys (values): the cache itself
    assert heads == {config.num_attention_heads if fold_min_kv_heads is None else config.num_key_value_heads}
    ids = np.random.default_rng(3).integers(0, 256, (2, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :5] = 0  # the second sequence is left-padded by 5
    expected_prefill, expected_last = evaluate.prefill_and_decode(evaluate.session(source), ids, mask)
    prefill, last = evaluate.prefill_and_decode(evaluate.session(target), ids, mask)
    assert np.isfinite(prefill).all() and np.isfinite(last).all()
    real = mask[:, :-1].astype(bool)
    assert relative_error(prefill[real], expected_prefill[real]) <= TOLERANCE
    assert relative_error(last, expected_last) <= TOLERANCE


def test_own_fused_output_is_mapped_but_refused(tiny_export, tmp_path):
    """oqcompile's own output (fuse_ort: MultiHeadAttention, skip norms) is mapped, but refused as an
    input: its online rotations already sit where new ones would go (graphs as ORT's own optimizer
    saves them: test_file_exporters.py)."""
    from oqcompile import modelio
    from oqcompile.errors import OQError
    from oqcompile.passes.split_skip_norms import SplitSkipNorms
    from oqcompile.structure import analyze

    source = tiny_export("tiny-llama")
    fused = compile_file(source, tmp_path / "fused.onnx", "rotate").target
    model = modelio.load(fused)
    SplitSkipNorms()(model)
    assert analyze(model).blocks[0].attention.fused.op_type == "MultiHeadAttention"
    with pytest.raises(OQError, match="already compiled by oqcompile \\(recipe rotate\\)"):
        compile_file(fused, tmp_path / "again.onnx", "rotate")
    quantized = compile_file(source, tmp_path / "w8a8.onnx", "naive-w8a8").target
    model = modelio.load(quantized)
    model.metadata_props.clear()  # even without the record, its QMatMuls say what it is
    with pytest.raises(OQError, match="QMatMul .* already quantized and lowered by oqcompile"):
        analyze(model)