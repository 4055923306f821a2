"""Run a recipe on a model and record what was done in the model's metadata."""

from __future__ import annotations

import json
import logging

import onnx_ir as ir
import onnx_ir.passes.common

from oqcompile import __version__
from oqcompile.calibrate import CalibrationData
from oqcompile.errors import OQError
from oqcompile.passes.base import TransformerPass
from oqcompile.passes.lower import Lower
from oqcompile.recipes import build_recipe

__all__ = ["needs_calibration", "optimize", "run_passes"]

logger = logging.getLogger(__name__)


def needs_calibration(recipe: str) -> bool:
    """True when a pass of ``recipe`` reads activation statistics (so calibration text is needed)."""
    return any(p.needs_calibration for p in build_recipe(recipe))


def optimize(model: ir.Model, recipe: str, seed: int = 0, calibration: CalibrationData | None = None,
             progress: bool = False, portable: bool = False) -> ir.Model:
    """Apply ``recipe`` to ``model`` in place and return it.

    Unless ``portable``, the ``lower`` pass runs last: the recipe's QDQ and Hadamard
    patterns become ``oq`` custom ops (the file then needs :mod:`oqcompile.runtime`).

    Passes that need activation statistics collect them from ``calibration`` on the graph
    as it is when they run. ``metadata_props`` records ``oq.recipe``, ``oq.seed``,
    ``oq.version``, ``oq.passes`` (a JSON list of ``{"pass": name, "params": {...}}``) and,
    when calibration was used, ``oq.calibration`` (source text, token count, hash). A pass
    whose precondition fails raises :class:`OQError` with the pass's own sentence.
    """
    passes = build_recipe(recipe, seed)
    if not portable and not any(isinstance(p, Lower) for p in passes):
        passes.append(Lower())
    run_passes(model, passes, calibration, progress)
    ir.passes.common.DeduplicateInitializersPass()(model)
    model.metadata_props.update({
        "oq.recipe": recipe,
        "oq.seed": str(seed),
        "oq.version": __version__,
        "oq.passes": json.dumps([{"pass": p.name, "params": p.params()} for p in passes]),
    })
    if any(p.needs_calibration for p in passes):
        model.metadata_props["oq.calibration"] = json.dumps(
            {"text": calibration.source, "tokens": calibration.tokens, "sha256": calibration.digest()})
    return model


def run_passes(model: ir.Model, passes: list[TransformerPass], calibration: CalibrationData | None = None,
               progress: bool = False) -> None:
    """Run ``passes`` on ``model`` in order; calibrating passes read ``calibration``."""
    calibrated = [p for p in passes if p.needs_calibration]
    if calibrated and calibration is None:
        raise OQError(f"{calibrated[0].name} reads activation statistics: calibration data is needed")
    for p in passes:
        logger.info("running %s %s", p.name, p.params())
        if p.needs_calibration:
            p.calibration, p.progress = calibration, progress
        try:
            p(model)
        except ir.passes.PreconditionError as error:
            raise OQError(f"{p.name}: {error}") from error
        # Passes store new weights beside the old ones; drop the dead ones before the next
        # pass (a calibrating pass would otherwise hand ORT both).
        ir.passes.common.RemoveUnusedNodesPass()(model)
