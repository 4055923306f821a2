"""SpinQuant learns R1/R2 under fake quantization and folds them exactly.

Bound on the float function: 1e-4 relative logits, as every function-preserving pass
(tests/test_passes.py; measured: at most 1.3e-6, section "tiny-errors" of docs/RESULTS.md;
spinquant here: at most 1.3e-6).
"""

import numpy as np
import onnx_ir as ir
import pytest

from conftest import relative_error, run_logits
from oqcompile import modelio
from oqcompile.calibrate import CalibrationData
from oqcompile.passes.fuse_norms import FuseNorms
from oqcompile.passes.rotate_residual import RotateResidual
from oqcompile.passes.spinquant import SpinQuant
from oqcompile.structure import analyze

TOLERANCE = 1e-4


def learned(source, steps: int, windows: np.ndarray, bits: int | None = 4,
            learning_rate: float = 1e-2) -> tuple[ir.Model, SpinQuant]:
    model = modelio.load(source)
    FuseNorms()(model)
    spinquant = SpinQuant(bits=bits, steps=steps, sequence=windows.shape[1], learning_rate=learning_rate,
                          calibration=CalibrationData(windows, "random tokens"))
    spinquant(model)
    return model, spinquant


@pytest.mark.parametrize("bits", [4, None])
# biases; packed qkv, gate_up; LayerNorm, learned positions, no gate
@pytest.mark.parametrize("model_id", ["tiny-llama", "tiny-qwen2", "tiny-phi3", "tiny-opt"])
def test_learned_rotations_keep_the_float_function(tiny_export, tmp_path, model_id, bits):
    source = tiny_export(model_id)
    windows = np.random.default_rng(1).integers(0, 256, (2, 32))
    model, _ = learned(source, 6, windows, bits)
    modelio.save(model, tmp_path / "learned.onnx")
    ids = np.random.default_rng(0).integers(0, 256, (2, 24))
    assert relative_error(run_logits(tmp_path / "learned.onnx", ids), run_logits(source, ids)) <= TOLERANCE


def test_training_moves_r1_off_the_hadamard(tiny_export):
    source = tiny_export("tiny-llama")
    model, spinquant = learned(source, 4, np.random.default_rng(1).integers(0, 256, (1, 64)))
    assert len(spinquant.training_losses) == 4 and np.isfinite(spinquant.training_losses).all()
    hadamard = modelio.load(source)
    FuseNorms()(hadamard)
    RotateResidual()(hadamard)
    q_learned, q_hadamard = (analyze(m).blocks[0].attention.q.weight() for m in (model, hadamard))
    assert not np.allclose(q_learned, q_hadamard, atol=1e-3)


@pytest.mark.real_model
def test_smollm2_training_lowers_the_quantized_loss(smollm2_onnx):
    """Four steps on one window of Emma: the W4A4 fake-quantized loss on it falls (a random tiny
    model's loss is chance-level noise, the real model's is not)."""
    from oqcompile.data import CALIBRATION_BOOK, book_tokens

    window = book_tokens(CALIBRATION_BOOK, "smollm2-135m")[:128].reshape(1, 128)
    _, spinquant = learned(smollm2_onnx, 4, window, learning_rate=1e-3)
    assert spinquant.training_losses[-1] < spinquant.training_losses[0]


def test_post_norm_blocks_are_refused_before_training(tiny_export):
    with pytest.raises(ir.passes.PreconditionError, match="post-norm"):
        learned(tiny_export("tiny-gemma2"), 1000, np.zeros((1, 8), np.int64))
