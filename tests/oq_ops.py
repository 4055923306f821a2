"""The oq ops for the tests: NumPy references and one-node ORT models, shared by the CPU and CUDA tests."""

import numpy as np
import onnx
import onnxruntime as ort

from oqcompile.hadamard import hadamard
from oqcompile.quant import qrange
from oqcompile.runtime import DOMAIN, session_options

FLOAT_TYPES = {np.float32: onnx.TensorProto.FLOAT, np.float16: onnx.TensorProto.FLOAT16}


def op_session(op: str, inputs: dict[str, int], outputs: dict[str, int], constants: dict[str, np.ndarray] = {},
               provider: str = "CPUExecutionProvider", **attributes) -> ort.InferenceSession:
    """A one-node model ``oq.<op>`` with the named inputs/outputs of the given ONNX element types
    on ``provider``; inputs named in ``constants`` are initializers with those values."""
    node = onnx.helper.make_node(op, list(inputs), list(outputs), domain=DOMAIN, **attributes)
    graph = onnx.helper.make_graph(
        [node], op,
        [onnx.helper.make_tensor_value_info(name, kind, None) for name, kind in inputs.items() if name not in constants],
        [onnx.helper.make_tensor_value_info(name, kind, None) for name, kind in outputs.items()],
        [onnx.numpy_helper.from_array(value, name) for name, value in constants.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21),
                                                         onnx.helper.make_opsetid(DOMAIN, 1)], ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), session_options(), providers=[provider])


def hadamard_reference(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ hadamard(x.shape[-1])


def quantize_reference(x: np.ndarray, bits: int, clip: float, static_scale: float,
                       group: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The portable graph's arithmetic, step by step in the tensor's own float type; scales
    ``[..., channels / group]`` (group 0: one per token)."""
    dtype = x.dtype.type
    low, high = qrange(bits)
    grouped = x.reshape(*x.shape[:-1], -1, group or x.shape[-1])
    if static_scale > 0:
        scale = np.full((*grouped.shape[:-1], 1), dtype(static_scale))
    else:
        absmax = np.abs(grouped).max(axis=-1, keepdims=True)
        scale = np.maximum(absmax * dtype(np.float32(clip) / np.float32(high)), dtype(np.finfo(dtype).tiny))
    codes = np.clip(np.rint(grouped.astype(np.float32) / scale.astype(np.float32)), low, high)
    return codes.astype(np.int8).reshape(x.shape), scale[..., 0]


def random_qmatmul_case(rng, bits, lead, k, n, groups, dtype, activation_bits=8, activation_groups=1):
    """Codes of ``activation_bits`` (the QMatMul kernels pick their integer form by the codes' range),
    their scales in ``activation_groups`` per token."""
    low, high = qrange(bits)
    codes = rng.integers(*qrange(activation_bits), endpoint=True, size=(*lead, k)).astype(np.int8)
    scales = rng.uniform(0.01, 0.1, (*lead, activation_groups)).astype(dtype)
    weight = rng.integers(low, high + 1, (k, n)).astype(np.int8)
    weight_scales = rng.uniform(0.001, 0.02, (groups, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return codes, scales, weight, weight_scales, bias


def qmatmul_reference(codes, scales, weight, weight_scales, bias):
    """Dequantized codes (``scales [..., A]``, one per ``K / A`` channels of a token) times dequantized weights."""
    k, groups = weight.shape[0], weight_scales.shape[0]
    dequantized = weight.astype(np.float64) * np.repeat(weight_scales.astype(np.float64), k // groups, axis=0)
    activations = codes.astype(np.float64) * np.repeat(scales.astype(np.float64), k // scales.shape[-1], axis=-1)
    return activations @ dequantized + bias
