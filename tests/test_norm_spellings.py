"""The fused RMS norm spellings (ORT's SimplifiedLayerNormalization, ONNX RMSNormalization) map
and rotate like the decomposed form. The test graphs are made by swapping every decomposed
RMS norm of a tiny export for the fused op."""

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common
import pytest

from conftest import relative_error, run_logits
from oqcompile import modelio
from oqcompile.compiler import optimize
from oqcompile.structure import analyze

IDS = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)


def fuse_norms_as(model: ir.Model, op_type: str) -> ir.Model:
    for norm in analyze(model).norms():
        node = ir.node(op_type, [norm.input, norm.gain_slot[0].inputs[norm.gain_slot[1]]],
                       attributes={"axis": -1, "epsilon": norm.epsilon}, name=f"{norm.name}/fused")
        node.outputs[0].name = f"{norm.name}.fused"
        model.graph.insert_after(norm.output.producer(), node)
        norm.output.replace_all_uses_with(node.outputs[0], replace_graph_outputs=True)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    if op_type == "RMSNormalization":
        model.opset_imports[""] = 23
        model.ir_version = 11
    return model


@pytest.mark.parametrize("op_type", ["SimplifiedLayerNormalization", "RMSNormalization"])
def test_fused_rms_spellings_map_and_rotate(tiny_export, tmp_path, op_type):
    source = tiny_export("tiny-llama")
    fused = modelio.save(fuse_norms_as(modelio.load(source), op_type), tmp_path / "fused.onnx")
    expected = run_logits(source, IDS)
    assert relative_error(run_logits(fused, IDS), expected) <= 1e-5
    t = analyze(modelio.load(fused))
    assert all(n.fused and n.kind == "rms" for n in t.norms()) and len(t.blocks) == 2
    model = modelio.load(fused)
    optimize(model, "rotate", seed=1)
    assert relative_error(run_logits(modelio.save(model, tmp_path / "rotated.onnx"), IDS), expected) <= 1e-4
