"""SmolLM2-135M (the real default model): the rotations keep logits and perplexity."""

import numpy as np
import onnx
import pytest

from conftest import relative_error, run_logits
from oqcompile import compile_file
from oqcompile.data import EVALUATION_BOOK, book_tokens
from oqcompile.evaluate import perplexity, session
from oqcompile.runtime import DOMAIN

pytestmark = pytest.mark.real_model
TOKENS, SEQ = 2048, 512
# Measured by benchmarks/foundation.py (docs/RESULTS.md, section "foundation"): ORT perplexity of the
# fp32 export on these tokens. Float rounding moves it by about 1e-7 (ORT and PyTorch agree to
# 6.4e-8, rotate moves it by 1.1e-8), also on other CPUs and kernels. 0.1% is far above that and
# below what a changed model, tokenization or window does (checked: a BOS token in front moves it
# by +0.6%, the tokens shifted by one by -0.3%).
FP_PERPLEXITY = 20.8319
# Function-preserving rewrites keep logits to float rounding: the worst rotation recipe moves them by
# 4.2e-6, and ORT's logits differ from PyTorch's by 2.7e-6 ("foundation").
FLOAT_ROUNDING = 1e-4


@pytest.fixture(scope="module")
def eval_tokens():
    return book_tokens(EVALUATION_BOOK, "smollm2-135m")[:TOKENS]


@pytest.fixture(scope="module")
def rotated(smollm2_onnx, tmp_path_factory):
    return compile_file(smollm2_onnx, tmp_path_factory.mktemp("rotate") / "smollm2.rotate.onnx", "rotate").target


def test_rotate_keeps_perplexity(smollm2_onnx, rotated, eval_tokens):
    base = perplexity(session(smollm2_onnx), eval_tokens, seq=SEQ, progress=False)
    after = perplexity(session(rotated), eval_tokens, seq=SEQ, progress=False)
    assert base.tokens == TOKENS and base.predictions == TOKENS - TOKENS // SEQ
    assert base.perplexity == pytest.approx(FP_PERPLEXITY, rel=1e-3)
    assert after.perplexity == pytest.approx(base.perplexity, rel=FLOAT_ROUNDING)


def test_rotate_keeps_logits(smollm2_onnx, rotated, eval_tokens):
    """All of R1-R4 (fuse_norms, rotate_residual, rotate_heads, rotate_qk, online_hadamard); each pass
    alone is checked on every tiny family (test_passes.py)."""
    ids = eval_tokens[:256].reshape(2, 128)
    assert relative_error(run_logits(rotated, ids), run_logits(smollm2_onnx, ids)) <= FLOAT_ROUNDING


def test_ort_matches_pytorch(smollm2_onnx, eval_tokens):
    import torch

    from oqcompile.models import load_torch_model

    ids = eval_tokens[:128].reshape(1, 128)
    with torch.no_grad():
        expected = load_torch_model("smollm2-135m")(torch.from_numpy(ids)).logits.numpy()
    assert relative_error(run_logits(smollm2_onnx, ids), expected) <= FLOAT_ROUNDING
    assert np.isfinite(expected).all()


def test_rotate_output_runs_on_oq_hadamards(rotated):
    """`optimize` lowers by default: the 4 online Hadamards per layer (R2 at o_proj, R3 on q and k,
    R4 before down_proj) are oq.Hadamard ops, and the logits above come from them."""
    proto = onnx.load(str(rotated), load_external_data=False)
    assert sum(node.domain == DOMAIN and node.op_type == "Hadamard" for node in proto.graph.node) == 4 * 30
    assert not any(node.op_type == "MatMul" and "hadamard" in node.name for node in proto.graph.node)
