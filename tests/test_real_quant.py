"""SmolLM2-135M quantized: short perplexity runs on Pride and Prejudice, calibrated on Emma."""

import onnx
import pytest

from conftest import relative_error, run_logits
from oqcompile import modelio
from oqcompile.calibrate import calibration_data
from oqcompile.compiler import needs_calibration, optimize
from oqcompile.data import EVALUATION_BOOK, book_tokens
from oqcompile.evaluate import perplexity, session
from oqcompile.runtime import DOMAIN

pytestmark = pytest.mark.real_model
TOKENS, SEQ, CALIBRATION_TOKENS = 2048, 512, 4096


@pytest.fixture(scope="module")
def compiled(smollm2_onnx, tmp_path_factory):
    """``compiled(recipe, portable=False)`` -> path of SmolLM2 compiled with ``recipe`` (``"fp"``: the export)."""
    calibration = calibration_data("smollm2-135m", CALIBRATION_TOKENS, seq=SEQ)
    folder = tmp_path_factory.mktemp("quantized")
    paths = {}

    def get(recipe: str, portable: bool = False):
        if recipe == "fp":
            return smollm2_onnx
        if (recipe, portable) not in paths:
            model = modelio.load(smollm2_onnx)
            optimize(model, recipe, calibration=calibration if needs_calibration(recipe) else None,
                     portable=portable)
            paths[recipe, portable] = modelio.save(model, folder / f"{recipe}{'.portable' if portable else ''}.onnx")
        return paths[recipe, portable]

    return get


@pytest.fixture(scope="module")
def score(compiled):
    """``score(recipe, portable=False)`` -> perplexity of SmolLM2 compiled with ``recipe``."""
    tokens = book_tokens(EVALUATION_BOOK, "smollm2-135m")[:TOKENS]
    scores = {}

    def get(recipe: str, portable: bool = False) -> float:
        if (recipe, portable) not in scores:
            path = compiled(recipe, portable)
            scores[recipe, portable] = perplexity(session(path), tokens, seq=SEQ, progress=False).perplexity
        return scores[recipe, portable]

    return get


def test_quarot_w8a8_within_one_percent(score):
    assert score("quarot-w8a8") <= 1.01 * score("fp")


def test_outliertune_w6a6_clearly_beats_naive_w6a6(score):
    naive, outliertune = score("naive-w6a6"), score("outliertune-w6a6")
    assert outliertune < 0.9 * naive
    assert naive > 1.2 * score("fp")  # the naive one really is hurt at 6 bits


@pytest.mark.parametrize("recipe", ["quarot-w8a8", "outliertune-w6a6", "quarot-w4a4-rtn"])
def test_lowered_model_computes_what_the_portable_one_does(compiled, score, recipe):
    """oq ops (packed int8/int6/int4 weights, per-token and static codes, Hadamards) against the QDQ graph."""
    lowered = onnx.load(compiled(recipe), load_external_data=False)
    used = {node.op_type for node in lowered.graph.node if node.domain == DOMAIN}
    assert used >= {"QuantizePerToken", "QMatMul"}
    assert not {node.op_type for node in lowered.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    ids = book_tokens(EVALUATION_BOOK, "smollm2-135m")[:256].reshape(2, 128)
    expected = run_logits(compiled(recipe, portable=True), ids)
    assert relative_error(run_logits(compiled(recipe), ids), expected) <= 1e-3
    assert abs(score(recipe) - score(recipe, portable=True)) < 5e-4  # equal to 3 decimals
