"""Run a recipe on a model and record what was done in the model's metadata.

:func:`compile_file` is the one path from an ONNX file to a compiled one (the CLI, the
benchmarks and the tests all take it): check the output can be written, build the recipe's
passes (handing them the calibration data), load, run the passes, save atomically.
:func:`optimize` is the Python entry point: a file or an ``ir.Model`` in, the compiled model
and a :class:`CompileSummary` out, written to a file when asked (through :func:`compile_file`
for a file in and out, so memory stays bounded by layers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import resource
import time

import onnx_ir as ir
import onnx_ir.passes.common
from tqdm import tqdm

from oqcompile import __version__, evaluate, genai_folder, modelio, scratch
from oqcompile.calibrate import CalibrationData
from oqcompile.errors import OQError
from oqcompile.passes.base import TransformerPass
from oqcompile.passes.drop_nan_guard import DropNanGuard
from oqcompile.passes.fuse_ort import FuseOrt
from oqcompile.passes.lower import Lower
from oqcompile.passes.split_fused_linears import SplitFusedLinears, holds_fused_linears
from oqcompile.passes.split_skip_norms import SplitSkipNorms, holds_skip_norms
from oqcompile.recipes import build_recipe
from oqcompile.runtime import LIBRARY_METADATA

__all__ = ["LOWERING", "CompileSummary", "compile_file", "optimize", "run_passes"]

LOWERING = (Lower, FuseOrt)  # run after the recipe unless portable

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CompileSummary:
    """What :func:`compile_file` did."""

    target: pathlib.Path | None  # None: compiled in memory only
    recipe: str
    seed: int
    portable: bool
    passes: list[str]
    calibration: str | None  # e.g. "emma[:131072]"; None when no pass read statistics
    seconds: float
    peak_rss_mib: float  # of this process so far


def compile_file(source: str | os.PathLike, target: str | os.PathLike, recipe: str = "rotate", *, seed: int = 0,
                 calibration: CalibrationData | None = None, portable: bool = False,
                 progress: bool = False) -> CompileSummary:
    """Compile the ONNX file ``source`` with ``recipe`` into ``target`` (see :func:`optimize`).

    New weights are spilled to a scratch folder beside ``target`` as passes make them
    (:mod:`oqcompile.scratch`), so memory stays near the weights one pass works on at a time.
    When ``source`` lies in an ONNX Runtime GenAI folder, ``target``'s folder becomes one too
    (:mod:`oqcompile.genai_folder`). ``source`` is never modified and ``target`` appears only
    when complete and ONNX Runtime loads it (:func:`oqcompile.evaluate.check_loads`); every expected
    failure (unreadable input, no transformer, unwritable output, unknown recipe, missing
    calibration, an output ORT refuses) raises :class:`OQError` and leaves nothing written.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    modelio.check_writable(target)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise OQError(f"{target}: refusing to overwrite the input file")
    genai_folder.check_target(source, target)
    passes = build_recipe(recipe, seed, calibration, progress)
    start = time.perf_counter()
    with scratch.spilled_weights(target.parent):
        model = modelio.load(source)
        passes = _apply(model, recipe, seed, passes, portable, progress)
        _save(model, target)
    genai_folder.write_folder(source, target, lowered=LIBRARY_METADATA in model.metadata_props)
    return _summary(target, recipe, seed, portable, passes, start)


def optimize(model: ir.Model | str | os.PathLike, recipe: str = "rotate", *, seed: int = 0,
             calibration: CalibrationData | None = None, output: str | os.PathLike | None = None,
             portable: bool = False, progress: bool = False) -> tuple[ir.Model, CompileSummary]:
    """Compile ``model`` with ``recipe``; return the compiled model and what was done.

    ``model`` is an ``onnx_ir`` model, changed in place (run a pass of one's own on it before or
    after), or an ONNX file, never changed. With ``output`` the result is also written there as
    :func:`compile_file` writes (atomically, only once ONNX Runtime loads it); a file in and a
    file out take :func:`compile_file` itself, and the model returned is the written file,
    its weights mapped from disk. ``calibration``: :func:`oqcompile.calibrate.calibration_data`
    (the book) or :func:`oqcompile.calibrate.text_calibration` (a text of one's own), needed by
    recipes whose passes read activation statistics.

    Unless ``portable``, ``lower`` and ``fuse_ort`` run after the recipe: the recipe's QDQ and
    Hadamard patterns become ``oq`` custom ops (the file then needs :mod:`oqcompile.runtime`),
    and attention, norms and rotary embeddings become ORT's contrib ops. ``drop_nan_guard``
    runs last in both cases.

    Passes that need activation statistics collect them from ``calibration`` on the graph
    as it is when they run. ``metadata_props`` records ``oq.recipe``, ``oq.seed``,
    ``oq.version``, ``oq.passes`` (a JSON list of ``{"pass": name, "params": {...}}``) and,
    when calibration was used, ``oq.calibration`` (source text, token count, hash). A pass
    whose precondition fails raises :class:`OQError` with the pass's own sentence.
    """
    if not isinstance(model, ir.Model):
        if output is not None:
            summary = compile_file(model, output, recipe, seed=seed, calibration=calibration, portable=portable,
                                   progress=progress)
            return modelio.load(summary.target), summary
        model = modelio.load(model)
    if output is not None:
        modelio.check_writable(output)
    start = time.perf_counter()
    passes = _apply(model, recipe, seed, build_recipe(recipe, seed, calibration, progress), portable, progress)
    if output is not None:
        _save(model, pathlib.Path(output))
    return model, _summary(None if output is None else pathlib.Path(output), recipe, seed, portable, passes, start)


def _save(model: ir.Model, target: pathlib.Path) -> None:
    modelio.save(model, target, check=lambda staged: evaluate.check_loads(staged, target))


def _summary(target: pathlib.Path | None, recipe: str, seed: int, portable: bool, passes: list[TransformerPass],
             start: float) -> CompileSummary:
    calibrated = [p for p in passes if p.needs_calibration]
    return CompileSummary(target, recipe, seed, portable, [p.name for p in passes],
                          calibrated[0].calibration.source if calibrated else None, time.perf_counter() - start,
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _apply(model: ir.Model, recipe: str, seed: int, passes: list[TransformerPass],
           portable: bool, progress: bool = False) -> list[TransformerPass]:
    """Run ``passes`` (plus ``lower`` and ``fuse_ort`` unless ``portable``, then ``drop_nan_guard``;
    ``split_fused_linears`` and ``split_skip_norms`` first where the graph has those ORT fusions),
    record them; return what ran."""
    if "oq.recipe" in model.metadata_props:  # its online rotations would sit where new ones assume none
        raise OQError(f"the model was already compiled by oqcompile (recipe {model.metadata_props['oq.recipe']}): "
                      "compile the model it came from")
    qdq = next((node for node in model.graph if node.op_type in ("QuantizeLinear", "DequantizeLinear")), None)
    if qdq is not None:  # the passes would rotate and requantize dequantized weights without saying so
        raise OQError(f"{qdq.op_type} {qdq.name}: the model is already quantized (QDQ form); oqcompile rewrites "
                      "float weights: give it the float model")
    appended = (*(() if portable else LOWERING), DropNanGuard)
    passes = [*passes, *(step() for step in appended if not any(isinstance(p, step) for p in passes))]
    if holds_skip_norms(model):  # ORT's fused residual add + norm: the passes edit the two apart
        passes.insert(0, SplitSkipNorms())
    if holds_fused_linears(model):  # and a linear fused with the op after it
        passes.insert(0, SplitFusedLinears())
    run_passes(model, passes, progress)
    ir.passes.common.DeduplicateInitializersPass()(model)
    ir.passes.common.NameFixPass()(model)  # a second compile of an output names its new values alike
    model.metadata_props.update({
        "oq.recipe": recipe,
        "oq.seed": str(seed),
        "oq.version": __version__,
        "oq.passes": json.dumps([{"pass": p.name, "params": p.params()} for p in passes]),
    })
    calibrated = [p for p in passes if p.needs_calibration]
    if calibrated:
        calibration = calibrated[0].calibration
        model.metadata_props["oq.calibration"] = json.dumps(
            {"text": calibration.source, "tokens": calibration.tokens, "sha256": calibration.digest()})
    return passes


def run_passes(model: ir.Model, passes: list[TransformerPass], progress: bool = False) -> None:
    """Run ``passes`` on ``model`` in order (each calibrating pass holds its calibration data);
    ``progress``: a bar over the passes, naming the one running."""
    missing = [p for p in passes if p.needs_calibration and p.calibration is None]
    if missing:
        raise OQError(f"{missing[0].name} reads activation statistics: calibration data is needed")
    bar = tqdm(passes, desc="passes", unit="pass", disable=not progress)
    for p in bar:
        bar.set_postfix_str(p.name)
        logger.info("running %s %s", p.name, p.params())
        try:
            p(model)
        except ir.passes.PreconditionError as error:
            raise OQError(f"{p.name}: {error}") from error
        # Passes store new weights beside the old ones; drop the dead ones before the next
        # pass (a calibrating pass would otherwise hand ORT both).
        ir.passes.common.RemoveUnusedNodesPass()(model)
