"""The oq custom-op library in ONNX Runtime CPU: oq.Hadamard against NumPy, clear errors."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from oqcompile.hadamard import hadamard, kronecker_pair
from oqcompile.runtime import DOMAIN, ops_library_path, session_options


def hadamard_session(with_factor: bool, factor_size: int = 1) -> ort.InferenceSession:
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT))
    inputs = [x]
    if with_factor:
        inputs.append(ir.Value(name="h", type=ir.TensorType(ir.DataType.FLOAT)))
    node = ir.node("Hadamard", inputs, domain=DOMAIN)
    node.outputs[0].name = "y"
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph(inputs, node.outputs, nodes=[node], opset_imports={"": 21, DOMAIN: 1})
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=10))
    return ort.InferenceSession(proto.SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"])


def test_library_is_installed():
    assert ops_library_path().is_file()


@pytest.mark.parametrize("size", [1, 2, 64, 1024, 96, 160, 224, 576, 640, 1536])
def test_hadamard_matches_numpy(size):
    x = np.random.default_rng(size).standard_normal((3, 5, size)).astype(np.float32)
    h_a, _ = kronecker_pair(size)
    session = hadamard_session(with_factor=h_a.shape[0] > 1)
    feeds = {"x": x} if h_a.shape[0] == 1 else {"x": x, "h": h_a.astype(np.float32)}
    actual = session.run(None, feeds)[0]
    np.testing.assert_allclose(actual, x @ hadamard(size), rtol=1e-4, atol=1e-4)


def test_bad_shapes_give_an_ort_error_not_a_crash():
    session = hadamard_session(with_factor=True)
    with pytest.raises(Exception, match="not a power of two"):
        session.run(None, {"x": np.zeros((2, 36), np.float32), "h": np.eye(12, dtype=np.float32)})
    with pytest.raises(Exception, match="square"):
        session.run(None, {"x": np.zeros((2, 24), np.float32), "h": np.zeros((12, 2), np.float32)})
