"""Memory-bounded compiles: calibration one block at a time, new weights spilled to scratch files."""

import filecmp

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from oqcompile import compile_file, evaluate, modelio, scratch
from oqcompile.calibrate import CalibrationData, collect_statistics
from oqcompile.compiler import optimize
from oqcompile.passes.base import block_outputs
from oqcompile.structure import analyze

CALIBRATION = CalibrationData(np.random.default_rng(3).integers(0, 200, (4, 32)), "random tokens", batch=2)
EXPORTS = [("tiny-llama", "dynamo", False), ("tiny-opt", "dynamo", False), ("tiny-qwen2", "dynamo", True),
           ("tiny-mistral", "legacy", False)]


@pytest.mark.parametrize("model_id,exporter,kv_cache", EXPORTS, ids=[f"{m}-{e}{'-kv' * kv}" for m, e, kv in EXPORTS])
def test_blockwise_statistics_equal_whole_graph_ones_to_the_bit(tiny_export, model_id, exporter, kv_cache):
    model = modelio.load(tiny_export(model_id, exporter, **({"kv_cache": True} if kv_cache else {})))
    transformer = analyze(model)
    values = [linear.input for linear in transformer.linears()]
    values += [block.attention.context.outputs[0] for block in transformer.blocks]
    whole = collect_statistics(model, values, CALIBRATION, (), gram=True, sample_tokens=16, progress=False)
    blockwise = collect_statistics(model, values, CALIBRATION, block_outputs(model), gram=True, sample_tokens=16,
                                   progress=False)
    assert whole.keys() == blockwise.keys() == {value.name for value in values}
    for name, stats in whole.items():
        for field in ("minimum", "maximum", "gram", "sample"):
            np.testing.assert_array_equal(getattr(blockwise[name], field), getattr(stats, field), err_msg=name)


def test_each_stage_holds_one_block_of_weights(tiny_export, monkeypatch):
    """ORT sees one stage file per block plus the head, each with its own block's linears only."""
    model = modelio.load(tiny_export("tiny-llama"))
    transformer = analyze(model)
    stage_weights = []
    session = evaluate.session

    def recording_session(path, *args, **kwargs):
        proto = onnx.load(str(path))
        stage_weights.append({init.name for init in proto.graph.initializer})
        return session(path, *args, **kwargs)

    monkeypatch.setattr(evaluate, "session", recording_session)
    collect_statistics(model, [linear.input for linear in transformer.linears()], CALIBRATION,
                       block_outputs(model), progress=False)
    assert len(stage_weights) == len(transformer.blocks) + 1
    linears = {linear.weight_value().name for linear in transformer.linears()}
    for index, (names, block) in enumerate(zip(stage_weights, transformer.blocks)):
        own = {linear.weight_value().name for linear in block.attention.readers + [block.attention.o]}
        own |= {linear.weight_value().name for linear in block.mlp.readers + [block.mlp.down]}
        assert names & linears == own, f"stage {index}"
    assert not stage_weights[-1] & linears  # the final norm, to observe the lm_head's input


def test_spilled_compile_writes_the_in_memory_bytes_and_cleans_up(tiny_export, tmp_path, monkeypatch):
    source = tiny_export("tiny-llama")
    model, _ = optimize(modelio.load(source), "quarot-w4a8", calibration=CALIBRATION)
    modelio.save(model, tmp_path / "memory.onnx")
    monkeypatch.setattr(scratch, "SPILL_BYTES", 0)  # every new tensor goes to a scratch file
    spilled = []
    new_tensor = scratch.new_tensor
    monkeypatch.setattr(scratch, "new_tensor", lambda *a, **k: spilled.append(new_tensor(*a, **k)) or spilled[-1])
    compile_file(source, tmp_path / "spilled.onnx", "quarot-w4a8", calibration=CALIBRATION)
    assert spilled and all(isinstance(tensor, ir.ExternalTensor) for tensor in spilled)
    assert filecmp.cmp(tmp_path / "memory.onnx", tmp_path / "spilled.onnx", shallow=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["memory.onnx", "spilled.onnx"]
