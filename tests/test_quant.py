"""Quantization math: code ranges, RTN and GPTQ, streaming statistics, the QDQ subgraph in ORT."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from oqcompile import quant
from oqcompile.calibrate import ActivationStats
from oqcompile.qdq import insert_activation_qdq


def test_code_ranges():
    assert [quant.qrange(b) for b in (4, 6, 8)] == [(-8, 7), (-32, 31), (-128, 127)]


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("group", [None, 16])
def test_rtn_round_trip(bits, group):
    weight = np.random.default_rng(bits).standard_normal((64, 24))
    q = quant.rtn(weight, bits, group)
    low, high = quant.qrange(bits)
    assert q.codes.dtype == np.int8 and low <= q.codes.min() and q.codes.max() <= high
    assert q.scales.shape == ((1 if group is None else 64 // group), 24)
    assert np.all(np.abs(q.dequantize() - weight) <= q.expanded_scales() / 2 + 1e-12)
    again = quant.rtn(q.dequantize(), bits, group)  # codes on the grid quantize to themselves
    np.testing.assert_array_equal(again.codes, q.codes)


@pytest.mark.parametrize("group", [None, 8])
def test_rtn_in_column_chunks_equals_one_chunk(monkeypatch, group):
    """rtn quantizes RTN_COLUMNS output channels at a time; chunks that split the columns
    unevenly give the same codes and scales (clip search included)."""
    weight = np.random.default_rng(1).standard_t(3, (32, 23))
    whole = quant.rtn(weight, 4, group, clip_search=True)
    monkeypatch.setattr(quant, "RTN_COLUMNS", 5)
    chunked = quant.rtn(weight, 4, group, clip_search=True)
    np.testing.assert_array_equal(chunked.codes, whole.codes)
    np.testing.assert_array_equal(chunked.scales, whole.scales)


def test_clip_search_lowers_weight_error():
    weight = np.random.default_rng(0).standard_t(3, (256, 32))  # heavy tails: clipping pays off
    plain, searched = quant.rtn(weight, 4), quant.rtn(weight, 4, clip_search=True)
    error = lambda q: (np.abs(q.dequantize() - weight) ** quant.CLIP_NORM).sum()
    assert error(searched) < 0.9 * error(plain)  # measured 0.765 ("tiny-errors")


def test_gptq_beats_rtn_on_outlier_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 128)) @ rng.standard_normal((128, 128))
    x[:, :4] *= 20  # outlier columns
    weight = 0.05 * rng.standard_normal((128, 64))
    error = lambda q: np.linalg.norm(x @ q.dequantize() - x @ weight) / np.linalg.norm(x @ weight)
    for bits in (4, 6, 8):
        rtn, gptq = quant.rtn(weight, bits), quant.gptq(weight, x.T @ x, bits)
        assert error(gptq) < 0.6 * error(rtn)  # measured 0.468, 0.462, 0.473 ("tiny-errors")
    grouped = quant.gptq(weight, x.T @ x, 4, group=32, act_order=True, clip_search=True)
    assert grouped.scales.shape == (4, 64)
    assert error(grouped) < 0.6 * error(quant.rtn(weight, 4, group=32))  # measured 0.434


def test_streaming_statistics_equal_one_shot():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 5, 8)) * rng.uniform(0.1, 9, 8) for _ in range(4)]
    stats = ActivationStats(8, with_gram=True)
    for batch in batches:
        stats.update(batch)
    flat = np.concatenate([b.reshape(-1, 8) for b in batches])
    assert stats.tokens == 40
    np.testing.assert_allclose(stats.absmax, np.abs(flat).max(axis=0))
    np.testing.assert_allclose(stats.midpoint, (flat.max(axis=0) + flat.min(axis=0)) / 2)
    np.testing.assert_allclose(stats.gram, flat.T @ flat, rtol=1e-5)
    assert stats.token_absmax_max == pytest.approx(np.abs(flat).max())


def _qdq_model(bits, granularity, clip, scale=None):
    x = ir.Value(name="x", shape=ir.Shape(["t", 16]), type=ir.TensorType(ir.DataType.FLOAT))
    identity = ir.node("Identity", [x], name="consumer")
    identity.outputs[0].name = "y"
    graph = ir.Graph([x], identity.outputs, nodes=[identity], opset_imports={"": 21})
    insert_activation_qdq(x, [identity], bits=bits, granularity=granularity, name="probe", channels=16,
                          clip=clip, scale=scale)
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=10))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("clip", [1.0, 0.8])
def test_per_token_qdq_matches_numpy(bits, clip):
    x = (np.random.default_rng(bits).standard_normal((6, 16)) * np.arange(1, 17)).astype(np.float32)
    x[2] = 0  # an all-zero token must not produce NaN
    actual = _qdq_model(bits, "per_token", clip).run(None, {"x": x})[0]
    low, high = quant.qrange(bits)
    scale = np.maximum(clip * np.abs(x).max(axis=1, keepdims=True) / quant.qmax(bits), np.finfo(np.float32).tiny)
    expected = np.clip(np.rint(x / scale), low, high) * scale
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    assert np.isfinite(actual).all()


@pytest.mark.parametrize("bits", [4, 6])
def test_prescaled_qdq_rounds_and_clips(bits):
    x = np.linspace(-40, 40, 32, dtype=np.float32).reshape(2, 16)
    actual = _qdq_model(bits, "prescaled", 1.0).run(None, {"x": x})[0]
    np.testing.assert_array_equal(actual, np.clip(np.rint(x), *quant.qrange(bits)))


def test_matmulnbits_packing_matches_ort_kernel():
    weight = np.random.default_rng(3).standard_normal((64, 24))
    q = quant.rtn(weight, 4, group=32)
    packed, scales = quant.pack_matmulnbits(q)
    x = ir.Value(name="x", shape=ir.Shape([5, 64]), type=ir.TensorType(ir.DataType.FLOAT))
    b = ir.Value(name="b", const_value=ir.tensor(packed))
    s = ir.Value(name="s", const_value=ir.tensor(scales.astype(np.float32)))
    node = ir.node("MatMulNBits", [x, b, s], attributes={"K": 64, "N": 24, "bits": 4, "block_size": 32},
                   domain="com.microsoft")
    node.outputs[0].name = "y"
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x], node.outputs, nodes=[node], initializers=[b, s],
                     opset_imports={"": 21, "com.microsoft": 1})
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=10))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = np.random.default_rng(4).standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": inputs})[0], inputs @ q.dequantize(), rtol=1e-4, atol=1e-4)


def test_activation_clip_search_beats_no_clip_on_heavy_tails():
    rng = np.random.default_rng(7)
    x = rng.standard_t(2, (512, 64))
    weight = rng.standard_normal((64, 32))
    clip, error = quant.search_activation_clip(x, weight, 4)
    unclipped = np.linalg.norm((quant.fake_quantize_per_token(x, 4) - x) @ weight) / np.linalg.norm(x @ weight)
    assert clip < 1.0 and error < unclipped  # measured: clip 0.95, error 0.986 of unclipped ("tiny-errors")


def test_statistics_keep_an_even_token_sample():
    stats = ActivationStats(4, sample_rows_per_batch=3)
    for value in range(5):
        stats.update(np.full((2, 6, 4), value, np.float32))
    assert stats.sample.shape == (15, 4)
    assert sorted(set(stats.sample[:, 0])) == [0, 1, 2, 3, 4]


def test_gptq_consuming_the_gram_gives_the_same_codes():
    """With consume_gram the factor is formed in the Gram's own memory (no n x n copy): same result."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1024, 96)) @ rng.standard_normal((96, 96))
    weight = 0.05 * rng.standard_normal((96, 40))
    gram = x.T @ x
    kept = quant.gptq(weight, gram, 4, clip_search=True)
    consumed = quant.gptq(weight, gram_copy := gram.copy(), 4, clip_search=True, consume_gram=True)
    assert np.array_equal(kept.codes, consumed.codes) and np.array_equal(kept.scales, consumed.scales)
    assert not np.array_equal(gram_copy, gram)  # its buffer now holds the factor
