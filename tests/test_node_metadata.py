"""Records one pass leaves on nodes for another come back with their types (and exact text)."""

import onnx_ir as ir

from oqcompile.qdq import QDQTag
from oqcompile.rotation import RotationTag


def test_records_round_trip_with_their_types():
    node = ir.node("Relu", [ir.Value(name="x")])
    QDQTag("layers.0.mlp/quantize_input", 6, "per_token", 0.9).write(node)
    RotationTag("layers.0.mlp.down_proj/hadamard", 1536, inverse=False, online=True).write(node)
    assert dict(node.metadata_props) == {
        "oq.qdq": "layers.0.mlp/quantize_input", "oq.qdq_bits": "6", "oq.qdq_granularity": "per_token",
        "oq.qdq_clip": "0.9", "oq.rotation": "layers.0.mlp.down_proj/hadamard", "oq.rotation_size": "1536",
        "oq.rotation_inverse": "0", "oq.rotation_online": "1"}
    assert QDQTag.read(node) == QDQTag("layers.0.mlp/quantize_input", 6, "per_token", 0.9)
    assert RotationTag.read(node) == RotationTag("layers.0.mlp.down_proj/hadamard", 1536, False, True)


def test_absent_fields_and_records():
    node = ir.node("Relu", [ir.Value(name="x")])
    assert QDQTag.read(node) is None
    QDQTag("k.cache/quantize", 4, "asymmetric_group").write(node)
    assert "oq.qdq_clip" not in node.metadata_props
    assert QDQTag.read(node).clip is None
