"""The oq CUDA kernels. On a GPU: every op against the NumPy references through PyTorch and
the library's C entry points (oqcompile.cuda_kernels), and through ORT's CUDA execution
provider where onnxruntime-gpu is installed. Without a GPU: the library (cudart linked
statically) still loads and its entry points answer with an error message, never a crash."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oq_ops import FLOAT_TYPES, hadamard_reference, op_session, qmatmul_reference, quantize_reference, random_qmatmul_case
from oqcompile import cuda_kernels
from oqcompile.errors import OQError
from oqcompile.hadamard import dense_factor
from oqcompile.quant import pack_codes, qrange

TORCH_TYPES = {np.float32: torch.float32, np.float16: torch.float16}
PROPERTY = settings(max_examples=60, deadline=None)

needs_kernels = pytest.mark.skipif(not cuda_kernels.available(), reason="the op library was built without nvcc")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
needs_ort_cuda = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                    reason="this onnxruntime has no CUDA execution provider")


def on_gpu(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).cuda()


# --- without a GPU ------------------------------------------------------------------------

@needs_kernels
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the kernel tests below run instead")
def test_without_a_gpu_the_entry_points_return_cudas_error():
    library = cuda_kernels.library()
    calls = {"OqCudaHadamard": (None, None, 2, 64, None, 1, 0, None),
             "OqCudaQuantizePerToken": (None, None, None, 2, 64, 8, 1.0, 0.0, 0, None),
             "OqCudaQMatMul": (None, None, None, None, None, None, 2, 64, 16, 1, 4, 0, None)}
    for name, arguments in calls.items():
        error = getattr(library, name)(*arguments)
        assert error is not None and (b"CUDA" in error or b"device" in error), (name, error)


@needs_kernels
def test_entry_points_reject_bad_arguments_before_touching_the_gpu():
    library = cuda_kernels.library()
    assert library.OqCudaHadamard(None, None, 2, 96, None, 1, 0, None) == b"oq.Hadamard (CUDA): n must be K times a power of two"
    assert b"bits must be 8, 6 or 4" in library.OqCudaQuantizePerToken(None, None, None, 2, 64, 5, 1.0, 0.0, 0, None)
    assert b"clip must be positive" in library.OqCudaQuantizePerToken(None, None, None, 2, 64, 8, 0.0, 0.0, 0, None)
    assert b"groups must divide" in library.OqCudaQMatMul(None, None, None, None, None, None, 2, 64, 16, 3, 4, 0, None)
    assert library.OqCudaHadamard(None, None, 0, 64, None, 1, 0, None) is None  # no rows: nothing to do


@pytest.mark.skipif(cuda_kernels.available(), reason="the op library has its CUDA kernels")
def test_library_without_kernels_says_so():
    with pytest.raises(OQError, match="built without its CUDA kernels"):
        cuda_kernels.library()


@needs_kernels
def test_torch_wrappers_reject_host_tensors():
    with pytest.raises(OQError, match="contiguous CUDA tensor"):
        cuda_kernels.hadamard(torch.zeros(2, 64))


# --- on a GPU, through PyTorch ---------------------------------------------------------------

@needs_kernels
@needs_gpu
@PROPERTY
@given(base=st.sampled_from([1, 12, 20, 28, 36, 40]), power=st.integers(0, 10),
       lead=st.lists(st.integers(1, 4), max_size=3), dtype=st.sampled_from(list(FLOAT_TYPES)))
def test_cuda_hadamard_matches_numpy(base, power, lead, dtype):
    size = base * 2 ** power
    x = np.random.default_rng(size).standard_normal((*lead, size)).astype(dtype)
    h_k = dense_factor(size)
    factor = None if h_k is None else on_gpu(h_k.astype(np.float32))
    # Rows of up to 40 * 1024 values fit a block's shared memory on sm_90 (about 56000 floats);
    # an sm_80 GPU (about 40000) refuses the longest, and this test then fails.
    actual = cuda_kernels.hadamard(on_gpu(x), factor).cpu().numpy()
    tolerance = 1e-4 if dtype == np.float32 else 4e-3
    np.testing.assert_allclose(actual, hadamard_reference(x), rtol=tolerance, atol=tolerance)


@needs_kernels
@needs_gpu
@pytest.mark.parametrize("size", [4096, 8192, 16384, 32768, 28 * 512])
def test_cuda_hadamard_at_model_sizes(size):
    x = np.random.default_rng(size).standard_normal((3, size)).astype(np.float32)
    h_k = dense_factor(size)
    factor = None if h_k is None else on_gpu(h_k.astype(np.float32))
    np.testing.assert_allclose(cuda_kernels.hadamard(on_gpu(x), factor).cpu().numpy(), hadamard_reference(x),
                               rtol=1e-4, atol=1e-4)


@needs_kernels
@needs_gpu
@PROPERTY
@given(bits=st.sampled_from([8, 6, 4]), clip=st.sampled_from([1.0, 0.9, 0.75]),
       static_scale=st.sampled_from([0.0, 1.0, 0.05]), channels=st.integers(1, 5000),
       lead=st.lists(st.integers(1, 5), max_size=3), dtype=st.sampled_from(list(FLOAT_TYPES)))
def test_cuda_quantize_per_token_matches_numpy(bits, clip, static_scale, channels, lead, dtype):
    x = (np.random.default_rng(channels).standard_normal((*lead, channels)) * 3).astype(dtype)
    codes, scales = cuda_kernels.quantize_per_token(on_gpu(x), bits, clip, static_scale)
    expected_codes, expected_scales = quantize_reference(x, bits, clip, static_scale)
    np.testing.assert_array_equal(scales.cpu().numpy(), expected_scales)
    np.testing.assert_array_equal(codes.cpu().numpy(), expected_codes)


@needs_kernels
@needs_gpu
@pytest.mark.parametrize("dtype", list(FLOAT_TYPES))
def test_cuda_quantize_per_token_treats_nan_like_the_cpu_op(dtype):
    """A NaN makes its token's scale NaN (the absmax is taken on the float bits, as on the CPU)."""
    x = np.random.default_rng(0).standard_normal((3, 700)).astype(dtype)
    x[1, 5] = np.nan
    kind = FLOAT_TYPES[dtype]
    cpu_codes, cpu_scales = op_session("QuantizePerToken", {"x": kind}, {"codes": onnx.TensorProto.INT8, "scales": kind},
                                       bits=8).run(None, {"x": x})
    codes, scales = cuda_kernels.quantize_per_token(on_gpu(x), 8)
    np.testing.assert_array_equal(scales.cpu().numpy(), cpu_scales)
    np.testing.assert_array_equal(codes.cpu().numpy(), cpu_codes)
    assert np.isnan(cpu_scales[1, 0])


def cuda_qmatmul(case, bits, with_bias):
    codes, scales, weight, weight_scales, bias = case
    return cuda_kernels.qmatmul(on_gpu(codes), on_gpu(scales), on_gpu(pack_codes(weight, bits)),
                                on_gpu(weight_scales.T), on_gpu(bias) if with_bias else None, bits).cpu().numpy()


@needs_kernels
@needs_gpu
@PROPERTY
@given(bits=st.sampled_from([8, 6, 4]), k=st.integers(1, 300), n=st.integers(1, 200),
       lead=st.lists(st.integers(0, 150), max_size=2), group_index=st.integers(0, 10), with_bias=st.booleans(),
       dtype=st.sampled_from(list(FLOAT_TYPES)))
def test_cuda_qmatmul_matches_numpy(bits, k, n, lead, group_index, with_bias, dtype):
    """Any k and group size (k-tiles are zero-filled past a group's end), rows on both tilings."""
    rng = np.random.default_rng(k * 1000 + n)
    divisors = [g for g in range(1, k + 1) if k % g == 0]
    case = random_qmatmul_case(rng, bits, lead, k, n, divisors[group_index % len(divisors)], dtype)
    actual = cuda_qmatmul(case, bits, with_bias)
    codes, scales, weight, weight_scales, bias = case
    expected = qmatmul_reference(codes, scales, weight, weight_scales, bias if with_bias else 0.0)
    tolerance = 1e-5 if dtype == np.float32 else 1e-3
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max(initial=1))


@needs_kernels
@needs_gpu
@pytest.mark.parametrize("bits", [8, 6, 4])
@pytest.mark.parametrize("rows", [1, 16, 600])
def test_cuda_qmatmul_at_model_shapes(bits, rows):
    rng = np.random.default_rng(bits)
    for groups in (1, 32):
        case = random_qmatmul_case(rng, bits, (rows,), 4096, 1000, groups, np.float32)
        codes, scales, weight, weight_scales, bias = case
        expected = qmatmul_reference(codes, scales, weight, weight_scales, bias)
        np.testing.assert_allclose(cuda_qmatmul(case, bits, True), expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())


@needs_kernels
@needs_gpu
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_cuda_qmatmul_integer_sums_are_exact_at_the_extremes(bits):
    k, n = 4096, 48
    w_low, w_high = qrange(bits)
    rng = np.random.default_rng(bits)
    codes = rng.choice([-128, 127], (16, k)).astype(np.int8)
    codes[0], codes[1] = -128, 127
    weight = rng.choice([w_low, w_high], (k, n)).astype(np.int8)
    weight[:, 0], weight[:, 1] = w_low, w_high
    actual = cuda_kernels.qmatmul(on_gpu(codes), torch.ones(16, 1, device="cuda"), on_gpu(pack_codes(weight, bits)),
                                  torch.ones(n, 1, device="cuda"), None, bits).cpu().numpy()
    np.testing.assert_array_equal(actual, codes.astype(np.int64) @ weight.astype(np.int64))


# --- on a GPU, inside ONNX Runtime's CUDA execution provider ------------------------------------

@needs_kernels
@needs_gpu
@needs_ort_cuda
@pytest.mark.parametrize("dtype", list(FLOAT_TYPES))
def test_ort_cuda_provider_runs_the_oq_ops_like_the_cpu(dtype):
    kind = FLOAT_TYPES[dtype]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 1536)).astype(dtype)
    h_k = dense_factor(1536)
    codes, scales, weight, weight_scales, bias = random_qmatmul_case(rng, 4, (2, 5), 1536, 576, 12, dtype)
    cases = [("Hadamard", {"x": kind, "h": onnx.TensorProto.FLOAT}, {"y": kind}, {}, {"x": x, "h": h_k.astype(np.float32)}),
             ("QuantizePerToken", {"x": kind}, {"codes": onnx.TensorProto.INT8, "scales": kind}, {"bits": 4}, {"x": x}),
             ("QMatMul", {"codes": onnx.TensorProto.INT8, "scales": kind, "w": onnx.TensorProto.UINT8,
                          "w_scales": onnx.TensorProto.FLOAT, "bias": onnx.TensorProto.FLOAT}, {"y": kind},
              {"bits": 4, "in_features": 1536},
              {"codes": codes, "scales": scales, "w": pack_codes(weight, 4), "w_scales": weight_scales.T.copy(),
               "bias": bias})]
    for op, inputs, outputs, attributes, feeds in cases:
        cpu, gpu = (op_session(op, inputs, outputs, provider=provider, **attributes).run(None, feeds)
                    for provider in ("CPUExecutionProvider", "CUDAExecutionProvider"))
        for expected, actual in zip(cpu, gpu):
            tolerance = 1e-4 if dtype == np.float32 else 4e-3
            np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
