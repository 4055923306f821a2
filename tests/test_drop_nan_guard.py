"""drop_nan_guard: the exporter's NaN guard after a finitely masked softmax goes, and the
logits stay bit for bit the same, at padded positions too."""

import collections

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from conftest import FAMILIES
from oqcompile import compile_file, evaluate
from oqcompile.passes.drop_nan_guard import DropNanGuard

LAYERS = 2  # every tiny model


def op_counts(path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def without_guards(source, target):
    model = ir.load(source)
    DropNanGuard()(model)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    ir.save(model, target)
    return target


def left_padded_batch(seed: int):
    ids = np.random.default_rng(seed).integers(0, 256, (2, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :5] = 0  # the second sequence is left-padded by 5: its first rows are fully masked
    return ids, mask


@pytest.mark.parametrize("model_id", FAMILIES)
def test_guards_go_and_logits_stay_bit_for_bit_padding_included(tiny_export, tmp_path, model_id):
    source = tiny_export(model_id, kv_cache=True)
    assert op_counts(source)["IsNaN"] == LAYERS  # the exporter's guard, one per attention
    target = without_guards(source, tmp_path / "out.onnx")
    assert op_counts(target)["IsNaN"] == 0
    ids, mask = left_padded_batch(3)
    expected = evaluate.prefill_and_decode(evaluate.session(source), ids, mask)
    actual = evaluate.prefill_and_decode(evaluate.session(target), ids, mask)
    for got, want in zip(actual, expected):  # prefill logits (every position), then one decode step
        np.testing.assert_array_equal(got, want)


def test_guard_on_an_infinite_mask_stays(tiny_export, tmp_path):
    """With a −∞ mask a fully masked row is NaN and the guard is needed: it is kept."""
    model = ir.load(tiny_export("tiny-llama"))
    masks = [node for node in model.graph if node.op_type == "Where" and node.inputs[2].const_value is not None
             and node.inputs[2].const_value.numpy().item() == np.finfo(np.float32).min]
    assert masks
    for mask in masks:
        mask.replace_input_with(2, ir.Value(name=f"{mask.name}_minus_infinity",
                                            const_value=ir.tensor(np.float32(-np.inf))))
        model.graph.register_initializer(mask.inputs[2])
    DropNanGuard()(model)
    assert sum(node.op_type == "IsNaN" for node in model.graph) == LAYERS


def test_every_compile_drops_the_guards_fuse_ort_left(tiny_export, tmp_path):
    source = tiny_export("tiny-llama")
    portable = compile_file(source, tmp_path / "portable.onnx", "rotate", portable=True).target
    assert op_counts(portable)["IsNaN"] == 0 and op_counts(portable)["Softmax"] == LAYERS
