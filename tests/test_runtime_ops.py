"""The oq custom-op library in ONNX Runtime CPU: every op against a NumPy reference
(hypothesis-drawn shapes, both float types, every CPU instruction set this machine has),
and clear ORT errors, never crashes, on bad input."""

import os
import pathlib
import re
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oq_ops import FLOAT_TYPES, hadamard_reference, op_session, qmatmul_reference, quantize_reference, random_qmatmul_case
from oqcompile.hadamard import dense_factor
from oqcompile.quant import pack_codes, qrange
from oqcompile.runtime import cpu_isas, ops_library_path

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=cpu_isas())
def cpu_isa(request, monkeypatch):
    """Each instruction set this CPU supports, forced through OQ_CPU_ISA (read at session creation)."""
    monkeypatch.setenv("OQ_CPU_ISA", request.param)
    return request.param


def test_library_is_installed():
    assert ops_library_path().is_file()


# --- oq.Hadamard -------------------------------------------------------------------------

@PROPERTY
@given(base=st.sampled_from([1, 12, 20, 28, 36, 40]), power=st.integers(0, 9),
       lead=st.lists(st.integers(1, 4), max_size=3), dtype=st.sampled_from(list(FLOAT_TYPES)))
def test_hadamard_matches_numpy(cpu_isa, base, power, lead, dtype):
    size = base * 2 ** power
    x = np.random.default_rng(size).standard_normal((*lead, size)).astype(dtype)
    h_k = dense_factor(size)
    kind = FLOAT_TYPES[dtype]
    if h_k is None:
        actual = op_session("Hadamard", {"x": kind}, {"y": kind}).run(None, {"x": x})[0]
    else:
        actual = op_session("Hadamard", {"x": kind, "h": onnx.TensorProto.FLOAT}, {"y": kind}).run(
            None, {"x": x, "h": h_k.astype(np.float32)})[0]
    assert actual.dtype == dtype and actual.shape == x.shape
    tolerance = 1e-4 if dtype == np.float32 else 4e-3
    np.testing.assert_allclose(actual, hadamard_reference(x), rtol=tolerance, atol=tolerance)


def test_hadamard_bad_shapes_give_an_ort_error_not_a_crash():
    session = op_session("Hadamard", {"x": onnx.TensorProto.FLOAT, "h": onnx.TensorProto.FLOAT},
                         {"y": onnx.TensorProto.FLOAT})
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="not a power of two"):
        session.run(None, {"x": np.zeros((2, 36), np.float32), "h": np.eye(12, dtype=np.float32)})
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="square"):
        session.run(None, {"x": np.zeros((2, 24), np.float32), "h": np.zeros((12, 2), np.float32)})
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="at least one axis"):
        session.run(None, {"x": np.zeros((), np.float32), "h": np.eye(1, dtype=np.float32)})


# --- oq.QuantizePerToken ------------------------------------------------------------------

@PROPERTY
@given(bits=st.sampled_from([8, 6, 4]), clip=st.sampled_from([1.0, 0.9, 0.75]),
       static_scale=st.sampled_from([0.0, 1.0, 0.05]), channels=st.integers(1, 300), group_index=st.integers(0, 10),
       lead=st.lists(st.integers(1, 5), max_size=3), dtype=st.sampled_from(list(FLOAT_TYPES)))
def test_quantize_per_token_matches_numpy(bits, clip, static_scale, channels, group_index, lead, dtype):
    """One scale per token (group 0), or per group of channels of a token (dynamic scales only)."""
    x = (np.random.default_rng(channels).standard_normal((*lead, channels)) * 3).astype(dtype)
    kind = FLOAT_TYPES[dtype]
    groups = [0] if static_scale > 0 else [0] + [g for g in range(1, channels + 1) if channels % g == 0]
    group = groups[group_index % len(groups)]
    session = op_session("QuantizePerToken", {"x": kind}, {"codes": onnx.TensorProto.INT8, "scales": kind},
                         bits=bits, clip=clip, static_scale=static_scale, group=group)
    codes, scales = session.run(None, {"x": x})
    expected_codes, expected_scales = quantize_reference(x, bits, clip, static_scale, group)
    assert scales.dtype == dtype and scales.shape == (*lead, channels // (group or channels))
    np.testing.assert_array_equal(scales, expected_scales)
    np.testing.assert_array_equal(codes, expected_codes)


def test_quantize_per_token_rejects_bad_attributes():
    with pytest.raises(Exception, match="bits must be 8, 6 or 4"):
        op_session("QuantizePerToken", {"x": onnx.TensorProto.FLOAT},
                   {"codes": onnx.TensorProto.INT8, "scales": onnx.TensorProto.FLOAT}, bits=5)
    with pytest.raises(Exception, match="bits"):
        op_session("QuantizePerToken", {"x": onnx.TensorProto.FLOAT},
                   {"codes": onnx.TensorProto.INT8, "scales": onnx.TensorProto.FLOAT})
    with pytest.raises(Exception, match="a static scale has no groups"):
        op_session("QuantizePerToken", {"x": onnx.TensorProto.FLOAT},
                   {"codes": onnx.TensorProto.INT8, "scales": onnx.TensorProto.FLOAT}, bits=8, static_scale=1.0, group=4)
    session = op_session("QuantizePerToken", {"x": onnx.TensorProto.FLOAT},
                         {"codes": onnx.TensorProto.INT8, "scales": onnx.TensorProto.FLOAT}, bits=8, group=32)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="groups of 32 do not divide"):
        session.run(None, {"x": np.zeros((2, 48), np.float32)})


# --- oq.QMatMul ---------------------------------------------------------------------------

def qmatmul_session(dtype, bits: int, in_features: int, bias: bool,
                    constants: dict[str, np.ndarray] = {}) -> ort.InferenceSession:
    """A QMatMul session; weights given in ``constants`` are initializers (their group sums, and
    int6 panels, made once at session creation), else inputs (read on every call)."""
    kind = FLOAT_TYPES[dtype]
    inputs = {"codes": onnx.TensorProto.INT8, "scales": kind, "w": onnx.TensorProto.UINT8,
              "w_scales": onnx.TensorProto.FLOAT}
    if bias:
        inputs["bias"] = onnx.TensorProto.FLOAT
    return op_session("QMatMul", inputs, {"y": kind}, constants, bits=bits, in_features=in_features)


def run_qmatmul(dtype, bits, k, codes, scales, packed, weight_scales, bias, constant_weights):
    weights = {"w": packed, "w_scales": weight_scales}
    feeds = {"codes": codes, "scales": scales, **({} if bias is None else {"bias": bias})}
    if constant_weights:
        session = qmatmul_session(dtype, bits, k, bias is not None, weights)
    else:
        session, feeds = qmatmul_session(dtype, bits, k, bias is not None), {**feeds, **weights}
    return session.run(None, feeds)[0]


@PROPERTY
@given(bits=st.sampled_from([8, 6, 4]), activation_bits=st.sampled_from([8, 6, 4]), k=st.integers(1, 200),
       n=st.integers(1, 80), lead=st.lists(st.integers(0, 7), max_size=3), group_index=st.integers(0, 10),
       activation_group_index=st.integers(0, 10), with_bias=st.booleans(), constant_weights=st.booleans(),
       dtype=st.sampled_from(list(FLOAT_TYPES)))
def test_qmatmul_matches_numpy(cpu_isa, bits, activation_bits, k, n, lead, group_index, activation_group_index,
                               with_bias, constant_weights, dtype):
    """Weight scales in G groups of K / G channels, token scales in A groups, A dividing G."""
    rng = np.random.default_rng(k * 1000 + n)
    divisors = [g for g in range(1, k + 1) if k % g == 0]
    groups = divisors[group_index % len(divisors)]
    activation_divisors = [a for a in divisors if groups % a == 0]
    activation_groups = activation_divisors[activation_group_index % len(activation_divisors)]
    codes, scales, weight, weight_scales, bias = random_qmatmul_case(rng, bits, lead, k, n, groups, dtype,
                                                                     activation_bits, activation_groups)
    actual = run_qmatmul(dtype, bits, k, codes, scales, pack_codes(weight, bits), weight_scales.T.copy(),
                         bias if with_bias else None, constant_weights)
    expected = qmatmul_reference(codes, scales, weight, weight_scales, bias if with_bias else 0.0)
    assert actual.dtype == dtype and actual.shape == (*lead, n)
    tolerance = 1e-5 if dtype == np.float32 else 1e-3
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max(initial=1))


@pytest.mark.parametrize("bits", [8, 6, 4])
@pytest.mark.parametrize("activation_bits", [8, 4])
@pytest.mark.parametrize("tokens", [1, 5, 600])
def test_qmatmul_at_model_shapes(cpu_isa, bits, activation_bits, tokens):
    """SmolLM2's down_proj and up_proj for decode (1 and 5 tokens: the row kernels) and 600 tokens
    (several row blocks and panels), with constant weights: per channel, in groups of 128, and in
    groups of 32 and 64, which the row kernels pack several to a block (up_proj's 576 codes end in
    half a block); token scales per token, and in groups of 32 and 64 channels."""
    rng = np.random.default_rng(bits)
    for k, n, groups, activation_groups in ((1536, 576, 1, 1), (1536, 576, 12, 1), (1536, 576, 48, 1),
                                            (576, 1536, 18, 1), (576, 1536, 9, 1), (1536, 576, 48, 48),
                                            (1536, 576, 48, 24), (576, 1536, 18, 18), (576, 1536, 9, 9)):
        codes, scales, weight, weight_scales, bias = random_qmatmul_case(rng, bits, (1, tokens), k, n, groups,
                                                                         np.float32, activation_bits,
                                                                         activation_groups)
        actual = run_qmatmul(np.float32, bits, k, codes, scales, pack_codes(weight, bits), weight_scales.T.copy(),
                             bias, constant_weights=True)
        expected = qmatmul_reference(codes, scales, weight, weight_scales, bias)
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("bits", [8, 6, 4])
@pytest.mark.parametrize("activation_bits", [8, 6, 4])
@pytest.mark.parametrize("tokens", [5, 200])
@pytest.mark.parametrize("groups", [1, 32])
def test_qmatmul_integer_sums_are_exact_at_the_extremes(cpu_isa, bits, activation_bits, tokens, groups):
    """Codes and weights at the ends of their ranges, the largest sums the int16 steps of the
    kernels meet, through the row kernels (5 tokens) and the panels (200), per channel and in
    groups of 32: every output is the exact integer (unit scales, fp32 represents them)."""
    k, n = 1024, 48
    a_low, a_high = qrange(activation_bits)
    w_low, w_high = qrange(bits)
    rng = np.random.default_rng(bits * 10 + activation_bits)
    codes = rng.choice([a_low, a_high], (tokens, k)).astype(np.int8)
    codes[0], codes[1] = a_low, a_high  # rows whose products all share one sign
    weight = rng.choice([w_low, w_high], (k, n)).astype(np.int8)
    weight[:, 0], weight[:, 1] = w_low, w_high
    scales, weight_scales = np.ones((tokens, 1), np.float32), np.ones((n, groups), np.float32)
    actual = run_qmatmul(np.float32, bits, k, codes, scales, pack_codes(weight, bits), weight_scales, None,
                         constant_weights=True)
    np.testing.assert_array_equal(actual, codes.astype(np.int64) @ weight.astype(np.int64))


def test_qmatmul_bad_shapes_give_an_ort_error_not_a_crash():
    session = qmatmul_session(np.float32, 4, 64, False)
    good = {"codes": np.zeros((3, 64), np.int8), "scales": np.ones((3, 1), np.float32),
            "w": np.zeros((8, 32), np.uint8), "w_scales": np.ones((8, 1), np.float32)}
    assert session.run(None, good)[0].shape == (3, 8)
    for change, message in [({"codes": np.zeros((3, 65), np.int8)}, "in_features = 64"),
                            ({"scales": np.ones((2, 1), np.float32)}, r"scales must be \[\.\.\., A\] for the 3 tokens"),
                            ({"scales": np.ones((3, 2), np.float32)}, "A dividing the weight scales' 1 groups"),
                            ({"w": np.zeros((8, 64), np.uint8)}, r"packed weight must be \[N, 32\]"),
                            ({"w_scales": np.ones((8, 3), np.float32)}, "G dividing in_features"),
                            ({"w_scales": np.ones((7, 1), np.float32)}, r"\[N, G\]")]:
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=message):
            session.run(None, {**good, **change})
    with pytest.raises(Exception, match="Unexpected input data type"):
        session.run(None, {**good, "codes": np.zeros((3, 64), np.float32)})


def test_forcing_an_unknown_instruction_set_is_an_error(monkeypatch):
    monkeypatch.setenv("OQ_CPU_ISA", "sse9")
    with pytest.raises(Exception, match="OQ_CPU_ISA=sse9 is not one of"):
        qmatmul_session(np.float32, 8, 16, False)


def test_cpu_isas_lists_what_this_cpu_has():
    isas = cpu_isas()
    assert isas[0] == "scalar"
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    assert ("avx2" in isas) == ("avx2" in flags)
    assert ("avx512_vnni" in isas) == ("avx512_vnni" in flags and "avx512bw" in flags)
    # AMX also needs Linux's permission for tile data, so it may be missing where the flag is not
    assert "amx_int8" not in isas or {"amx_int8", "amx_tile"} <= set(flags)


def test_forcing_an_instruction_set_this_cpu_lacks_is_an_error(monkeypatch):
    missing = [isa for isa in ("avx2", "avx512_vnni", "amx_int8") if isa not in cpu_isas()]
    if not missing:
        pytest.skip("this CPU supports every instruction set the op library has")
    for isa in missing:
        monkeypatch.setenv("OQ_CPU_ISA", isa)
        with pytest.raises(Exception, match=f"OQ_CPU_ISA={isa} but this CPU .or the OS. does not support it"):
            qmatmul_session(np.float32, 8, 16, False)


def test_readme_cpp_snippet_compiles(tmp_path):
    """The C++ registration snippet of the README compiles against the ORT headers the build uses."""
    root = pathlib.Path(__file__).resolve().parents[1]
    snippet = re.search(r"```cpp\n(.*?)```", (root / "README.md").read_text(), re.S).group(1)
    includes = [line for line in snippet.splitlines() if line.startswith("#include")]
    body = [line for line in snippet.splitlines() if not line.startswith("#include")]
    source = tmp_path / "snippet.cc"
    source.write_text("\n".join(includes + ["int main() {", *body, "}"]) + "\n")
    headers = subprocess.run(["sh", str(root / "runtime_ops" / "fetch_ort_headers.sh")], check=True,
                             capture_output=True, text=True).stdout.strip()
    subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-I", headers, str(source)], check=True)
