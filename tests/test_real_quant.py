"""SmolLM2-135M quantized: short perplexity runs on Pride and Prejudice, calibrated on Emma."""

import pytest

from oqcompile import modelio
from oqcompile.calibrate import calibration_data
from oqcompile.compiler import needs_calibration, optimize
from oqcompile.data import EVALUATION_BOOK, book_tokens
from oqcompile.evaluate import perplexity, session

pytestmark = pytest.mark.real_model
TOKENS, SEQ, CALIBRATION_TOKENS = 2048, 512, 4096


@pytest.fixture(scope="module")
def score(smollm2_onnx, tmp_path_factory):
    """``score(recipe)`` -> perplexity of SmolLM2 compiled with ``recipe`` (``"fp"``: the export)."""
    tokens = book_tokens(EVALUATION_BOOK, "smollm2-135m")[:TOKENS]
    calibration = calibration_data("smollm2-135m", CALIBRATION_TOKENS, seq=SEQ)
    folder = tmp_path_factory.mktemp("quantized")
    scores = {}

    def get(recipe: str) -> float:
        if recipe not in scores:
            path = smollm2_onnx
            if recipe != "fp":
                model = modelio.load(smollm2_onnx)
                optimize(model, recipe, calibration=calibration if needs_calibration(recipe) else None)
                path = modelio.save(model, folder / f"{recipe}.onnx")
            scores[recipe] = perplexity(session(path), tokens, seq=SEQ, progress=False).perplexity
        return scores[recipe]

    return get


def test_quarot_w8a8_within_one_percent(score):
    assert score("quarot-w8a8") <= 1.01 * score("fp")


def test_outliertune_w6a6_clearly_beats_naive_w6a6(score):
    naive, outliertune = score("naive-w6a6"), score("outliertune-w6a6")
    assert outliertune < 0.9 * naive
    assert naive > 1.2 * score("fp")  # the naive one really is hurt at 6 bits
