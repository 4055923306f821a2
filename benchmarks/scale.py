"""Compile time and memory against model size: LLaMA-shaped fp16 models of 1B, 3B and 8B parameters.

The time and memory of a compile depend on the shapes and dtypes of the weights, not on their
values, so the models have seeded random weights (``models/shaped.py``: built on PyTorch's meta
device and exported with every weight drawn only as it is written, so the export holds no copy
of the model). For each model, every step in a fresh process: the export, then ``rotate``, a
data-free W4 recipe (``quarot-w4a4-rtn``) and a calibrated one (``quarot-w4a8``: GPTQ int4 in
groups of 32 on 2,048 tokens of Emma, tokenized by SmolLM2's tokenizer, whose ids fit the
128,256-token vocabulary), lowered (``rotate`` portable, for the logit check below): seconds,
peak RSS, peak RSS over the model's bytes, and the output's bytes.

Then ``rotate`` against the export: the logits of 8 tokens, both models run one block at a time
(:func:`oqcompile.calibrate.run_in_stages`; ORT CPU computes fp16 MatMuls through fp32 copies of
the weights, which an 8B model leaves no room for), as ``max |Δ| / max |logits|``. For models
whose fp32 twin fits in memory also: the same with both models computed in fp32 (the fp16
weights upcast exactly), which leaves only the rounding of the rotated weights to fp16, and the
export's own fp16 arithmetic against its fp32 twin, the floor of any fp16 comparison.

    python benchmarks/scale.py [--models llama-1b-shaped,...] [--recipes rotate,...] [--folder DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

import report
from report import compile_step, file_mib

MODELS = {"llama-1b-shaped": "LLaMA-3.2-1B shape", "llama-3b-shaped": "LLaMA-3.2-3B shape",
          "llama-8b-shaped": "LLaMA-3.1-8B shape"}
RECIPES = {"rotate": "rotate (portable)", "quarot-w4a4-rtn": "RTN W4 (data-free)", "quarot-w4a8": "GPTQ W4 (calibrated)"}
CALIBRATION_TOKENS, CALIBRATION_SEQ = 2048, 512
LOGIT_TOKENS = 8
FP32_TWIN_MAX_BYTES = 6 << 30  # fp32 twins of both models must fit in memory with room to spare


def staged_logits(path: str, ids: np.ndarray, upcast: bool = False) -> np.ndarray:
    """The logits of ``ids``, run one transformer block at a time (fp16 weights upcast to fp32 first
    if ``upcast``)."""
    from oqcompile import modelio
    from oqcompile.calibrate import run_in_stages
    from oqcompile.passes.base import block_outputs

    model = modelio.load(path)
    if upcast:
        _upcast_to_fp32(model)
    logits = model.graph.outputs[0]
    for arrays, _ in run_in_stages(model, [logits], [ids], block_outputs(model), progress=False):
        if logits.name in arrays:  # the last stage
            return arrays[logits.name].astype(np.float64)
    raise AssertionError("no stage computed the logits")


def _upcast_to_fp32(model) -> None:
    """Make an fp16 model compute in fp32: weights, casts, constants and value types (exact)."""
    import onnx_ir as ir

    half, single = ir.DataType.FLOAT16, ir.DataType.FLOAT
    for value in model.graph.initializers.values():
        if value.dtype == half:
            value.const_value = ir.tensor(value.const_value.numpy().astype(np.float32), name=value.name)
            value.dtype = single
    for node in model.graph:
        if node.op_type == "Cast" and node.attributes.get_int("to") == half.value:
            node.attributes["to"] = ir.AttrInt64("to", single.value)
        for name, attribute in list(node.attributes.items()):
            if attribute.type == ir.AttributeType.TENSOR and attribute.value.dtype == half:
                node.attributes[name] = ir.AttrTensor(name, ir.tensor(attribute.value.numpy().astype(np.float32)))
        for output in node.outputs:
            if output.dtype == half:
                output.dtype = single
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.dtype == half:
            value.dtype = single


def rotate_logits(source: pathlib.Path, rotated: pathlib.Path) -> list[str]:
    """The logit comparisons of the module doc, as table cells."""
    ids = np.random.default_rng(0).integers(0, 32000, (1, LOGIT_TOKENS))
    def logits(path: pathlib.Path, upcast: bool = False) -> np.ndarray:
        return report.measure(staged_logits, str(path), ids, upcast)[0]

    exported = logits(source)
    cells = [f"{report.relative_error(logits(rotated), exported):.1e}"]
    if 2 * file_mib(source) * 2**20 <= FP32_TWIN_MAX_BYTES:
        twin = logits(source, upcast=True)
        cells.append(f"{report.relative_error(logits(rotated, upcast=True), twin):.1e}")
        cells.append(f"{report.relative_error(exported, twin):.1e}")
    else:
        cells += ["(fp32 twin too large)"] * 2
    return cells


def scale(model_id: str, folder: pathlib.Path, recipes: list[str]) -> Iterator[str]:
    """Measure ``model_id``; yield its tables so far after every step (a long run records what it did)."""
    from oqcompile.models.export import export_to_file

    source = folder / f"{model_id}.onnx"
    _, seconds, peak = report.measure(export_to_file, model_id, str(source), dtype="fp16")
    model_gib = file_mib(source) / 1024
    rows = [["export (fp16)", f"{seconds:.0f}", f"{peak:.2f}", f"{peak / model_gib:.2f}", f"{model_gib:.2f}"]]
    logit_rows = []

    def tables() -> str:
        print(" | ".join(rows[-1]), flush=True)
        text = report.markdown_table(["step", "seconds", "peak RSS (GiB)", "peak RSS / model bytes", "output (GiB)"],
                                     rows)
        if logit_rows:
            text += "\n\n" + report.markdown_table(
                [f"`rotate` against the export, {LOGIT_TOKENS} tokens, max abs Δ / max abs logit", "fp16 compute",
                 "fp32 compute (weights upcast)", "export fp16 against its fp32 twin"], logit_rows)
        return text

    yield tables()
    for recipe in recipes:
        target = folder / f"{model_id}.{recipe}.onnx"
        _, seconds, peak = report.measure(compile_step, str(source), recipe, str(target), CALIBRATION_TOKENS,
                                          CALIBRATION_SEQ, portable=recipe == "rotate")
        output_gib = file_mib(target) / 1024
        rows.append([f"{RECIPES[recipe]}: `{recipe}`", f"{seconds:.0f}", f"{peak:.2f}", f"{peak / model_gib:.2f}",
                     f"{output_gib:.2f}"])
        if recipe == "rotate":
            logit_rows.append(["", *rotate_logits(source, target)])
        for path in (target, target.with_name(target.name + ".data")):
            path.unlink(missing_ok=True)
        yield tables()
    for path in (source, source.with_name(source.name + ".data")):
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)} (default: all)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"from {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--folder", default=None,
                        help="where the models are written (default: a temporary folder; the 8B model and "
                             "its rotated copy take 33 GB)")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="oq-scale-", dir=args.folder))
    intro = __doc__.split("\n\n    python")[0].split("\n", 1)[1].strip()
    try:
        for model_id in args.models.split(","):  # one section per model: runs of one model replace only it
            for tables in scale(model_id, folder, args.recipes.split(",")):
                report.write_section(f"scale-{model_id}", f"Compile time and memory at scale: {MODELS[model_id]}, "
                                     f"fp16 (benchmarks/scale.py)", f"{intro}\n\n{tables}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
