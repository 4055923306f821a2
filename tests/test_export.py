"""Exports run in ORT with PyTorch's logits: every family, fp16, and the KV-cache signature."""

import numpy as np
import pytest
import torch

from conftest import FAMILIES, FILE_EXPORTERS, relative_error, run_logits
from oqcompile import compile_file, evaluate, modelio
from oqcompile.models import load_torch_model

IDS = np.random.default_rng(1).integers(0, 256, (2, 12)).astype(np.int64)
# Measured by benchmarks/tiny_errors.py (docs/RESULTS.md, section "tiny-errors"): ORT against
# PyTorch at most 6.7e-7 in fp32; the fp16 export 9.2e-4 against PyTorch, 1.1e-3 after rotate.


def torch_logits(model_id: str, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_torch_model(model_id)(torch.from_numpy(ids)).logits.numpy()


@pytest.mark.parametrize("model_id", FAMILIES)
def test_ort_matches_pytorch(tiny_export, model_id):
    assert relative_error(run_logits(tiny_export(model_id), IDS), torch_logits(model_id, IDS)) <= 1e-5


def test_fp16_export_matches_pytorch(tiny_export):
    path = tiny_export("tiny-llama", dtype="fp16")
    actual = run_logits(path, IDS)
    assert actual.dtype == np.float16
    assert relative_error(actual.astype(np.float32), torch_logits("tiny-llama", IDS)) <= 5e-3


def prefill_then_decode(path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate.prefill_and_decode`, checking the cache's names and length on the way."""
    session = evaluate.session(path)
    past_names = [i.name for i in session.get_inputs()][2:]
    assert [o.name for o in session.get_outputs()][1:] == [n.replace("past_key_values", "present")
                                                            for n in past_names]
    assert session.run(None, evaluate.feeds(session, ids))[1].shape[2] == ids.shape[1]  # one cache entry per token
    return evaluate.prefill_and_decode(session, ids)


@pytest.mark.parametrize("model_id", ["tiny-llama", "tiny-opt"])
def test_kv_cache_export_decodes_like_pytorch(tiny_export, model_id):
    expected = torch_logits(model_id, IDS)
    prefill, last = prefill_then_decode(tiny_export(model_id, kv_cache=True), IDS)
    assert relative_error(prefill, expected[:, :-1]) <= 1e-5
    assert relative_error(last, expected[:, -1]) <= 1e-5


@pytest.mark.parametrize("model_id", ["tiny-llama", "tiny-opt"])
def test_rotate_keeps_kv_cache_decoding(tiny_export, tmp_path, model_id):
    """Rotated keys/values live in the cache; a rotated model fed its own cache decodes alike."""
    source = tiny_export(model_id, kv_cache=True)
    rotated = compile_file(source, tmp_path / "rotated.onnx", "rotate", seed=2).target
    expected_prefill, expected_last = prefill_then_decode(source, IDS)
    prefill, last = prefill_then_decode(rotated, IDS)
    assert relative_error(prefill, expected_prefill) <= 1e-4
    assert relative_error(last, expected_last) <= 1e-4


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("exporter", FILE_EXPORTERS)
def test_rotate_on_fp16_export(tiny_export, tmp_path, exporter, portable):
    """The TorchScript exporter records no types inside the graph: the inserted Hadamards take the
    type of the weights beside them (once were float32 beside float16 MatMuls, refused by ORT)."""
    source = tiny_export("tiny-llama", exporter, dtype="fp16")
    rotated = run_logits(compile_file(source, tmp_path / "rotated.onnx", "rotate", seed=1, portable=portable).target,
                         IDS).astype(np.float32)
    assert relative_error(rotated, run_logits(source, IDS).astype(np.float32)) <= 5e-3


@pytest.mark.parametrize("model_id,parameters", [("llama-1b-shaped", 1_235_814_400), ("llama-3b-shaped", 3_212_749_824),
                                                  ("llama-8b-shaped", 8_030_261_248)])
def test_shaped_models_have_the_shapes_of_llama_3(model_id, parameters):
    from oqcompile.models.shaped import weightless_model

    model = weightless_model(model_id)  # shapes only, on the meta device
    assert sum(p.numel() for p in model.parameters()) == parameters  # LLaMA-3.2-1B/3B, LLaMA-3.1-8B
    assert model.config.num_key_value_heads == 8


def test_shaped_export_draws_its_weights_when_saved_and_rotates(tmp_path):
    """The weightless export maps like a real one, its seeded weights are the same in two
    exports, and ``rotate`` keeps its logits (fp16; measured 1.4e-3, "tiny-errors" in docs/RESULTS.md)."""
    from oqcompile.models.shaped import export_shaped
    from oqcompile.structure import analyze

    paths = [modelio.save(export_shaped("llama-1b-shaped", dtype="fp16", layers=2), tmp_path / f"{i}.onnx")
             for i in range(2)]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    transformer = analyze(modelio.load(paths[0]))
    assert (len(transformer.blocks), transformer.hidden_size) == (2, 2048)
    ids = np.random.default_rng(0).integers(0, 128256, (1, 8)).astype(np.int64)
    rotated = compile_file(paths[0], tmp_path / "rotated.onnx", "rotate", portable=True).target
    assert relative_error(run_logits(rotated, ids).astype(np.float32),
                          run_logits(paths[0], ids).astype(np.float32)) <= 5e-3


def test_output_that_ort_refuses_is_not_written(tiny_export, tmp_path, monkeypatch):
    """The bug above, put back: compile_file checks that ORT loads the result before it appears."""
    import oqcompile.rotation

    from oqcompile.errors import OQError

    monkeypatch.setattr(oqcompile.rotation, "_float_type", lambda value: np.dtype(np.float32))
    with pytest.raises(OQError, match="rotated.onnx: not written, ONNX Runtime cannot load it .*MatMul"):
        compile_file(tiny_export("tiny-llama", "legacy", dtype="fp16"), tmp_path / "rotated.onnx", "rotate",
                     portable=True)
    assert list(tmp_path.iterdir()) == []
