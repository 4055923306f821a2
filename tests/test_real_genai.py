"""SmolLM2-135M through the ONNX Runtime GenAI model builder: same perplexity as oqcompile's own export,
``rotate`` keeps it to 4 decimals, and quarot-w8a8 scores within 0.5% of the same recipe on the own export.

Measured by benchmarks/accuracy.py --exporter genai (docs/RESULTS.md, section "accuracy-genai", same
tokens and calibration as section "accuracy-tests"): fp 20.832 and rotate 20.832 (the own export: 20.832),
quarot-w8a8 20.955 (the own export: 20.942, 0.06% apart).
"""

import pytest

from oqcompile import compile_file
from oqcompile.calibrate import calibration_data
from oqcompile.data import EVALUATION_BOOK, book_tokens
from oqcompile.evaluate import perplexity, session

pytestmark = pytest.mark.real_model
TOKENS, SEQ, CALIBRATION_TOKENS = 2048, 512, 4096
FP_PERPLEXITY = 20.8319  # the own export's, docs/RESULTS.md section "foundation"


def score(path) -> float:
    tokens = book_tokens(EVALUATION_BOOK, "smollm2-135m")[:TOKENS]
    return perplexity(session(path), tokens, seq=SEQ, progress=False).perplexity


def test_rotate_keeps_genai_perplexity(smollm2_genai, tmp_path):
    base = score(smollm2_genai)
    assert base == pytest.approx(FP_PERPLEXITY, rel=1e-4)  # the builder's graph computes the same model
    rotated = compile_file(smollm2_genai, tmp_path / "model.onnx", "rotate").target
    assert abs(score(rotated) - base) < 5e-5  # equal to 4 decimals


def test_w8a8_on_genai_export_scores_like_the_own_export(smollm2_genai, smollm2_onnx, tmp_path):
    calibration = calibration_data("smollm2-135m", CALIBRATION_TOKENS, seq=SEQ)
    scores = {}
    for name, source in (("genai", smollm2_genai), ("own", smollm2_onnx)):
        (tmp_path / name).mkdir()
        target = compile_file(source, tmp_path / name / "model.onnx", "quarot-w8a8", calibration=calibration).target
        scores[name] = score(target)
    assert scores["genai"] == pytest.approx(scores["own"], rel=5e-3)
