"""``oqcompile report ORIG OPT -o report.html``: one self-contained page on what a compile did.

- The files: size, perplexity on the first tokens of the evaluation book (Pride and Prejudice)
  through ONNX Runtime, perplexity over the original's.
- The recipe, its seed, calibration text and passes with their parameters, from ``OPT``'s metadata.
- Outliers: the per-channel absolute maximum of the input of chosen linears on the same text,
  in the original model and after the recipe's float part (rotations, scale folding): a
  rotation spreads a few large channels over all of them, which is what lets 4- and 8-bit
  codes cover them.
- Per-layer error of the quantized layers (:mod:`oqcompile.layer_errors`): the recipe is
  compiled again from ``ORIG`` with ``OPT``'s seed and calibration, so the report needs the
  calibration text ``OPT`` was made with (the book's by default, else ``calibration_text``).

Plots are PNG (matplotlib, Agg) inlined as base64, so the page is one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import pathlib

import numpy as np

from oqcompile import evaluate, modelio
from oqcompile.calibrate import CalibrationData, calibration_data, text_calibration
from oqcompile.data import CALIBRATION_BOOK, EVALUATION_BOOK, book_tokens
from oqcompile.errors import OQError
from oqcompile.layer_errors import measure

__all__ = ["write_report"]


def write_report(original: str | os.PathLike, optimized: str | os.PathLike, output: str | os.PathLike, *,
                 tokens: int = 4096, tokenizer: str | None = None, calibration_text: str | os.PathLike | None = None,
                 progress: bool = False) -> pathlib.Path:
    """Write the page of the module doc for ``original`` and its compiled ``optimized``; return its path."""
    original, optimized, output = pathlib.Path(original), pathlib.Path(optimized), pathlib.Path(output)
    parent = modelio.check_writable(output)
    metadata = modelio.metadata(optimized)
    if "oq.recipe" not in metadata:
        raise OQError(f"{optimized}: not written by oqcompile (no oq.recipe in its metadata)")
    recipe, seed = metadata["oq.recipe"], int(metadata.get("oq.seed", 0))
    tokenizer = tokenizer or metadata.get("oq.source_model") or modelio.metadata(original).get("oq.source_model")
    if tokenizer is None:
        raise OQError("neither file names the model it was exported from: give --tokenizer")
    text = book_tokens(EVALUATION_BOOK, tokenizer)[:tokens]
    seq = min(1024, tokens)
    files = [_file_row(path, text, seq, progress) for path in (original, optimized)]
    measured = CalibrationData(text[: len(text) // seq * seq].reshape(-1, seq), f"{EVALUATION_BOOK}[:{tokens}]")
    layers = measure(original, recipe, seed, _calibration(metadata, tokenizer, calibration_text), measured,
                     sample_tokens=min(1024, tokens), progress=progress)
    page = _page(original, optimized, recipe, seed, metadata, files, layers, tokens)
    staged = parent / f".{output.name}.{os.getpid()}.partial"
    try:
        staged.write_text(page, encoding="utf-8")
        os.replace(staged, output)
    finally:
        staged.unlink(missing_ok=True)
    return output


def _calibration(metadata: dict[str, str], tokenizer: str, text: str | os.PathLike | None) -> CalibrationData | None:
    """The calibration ``OPT`` was made with, read again (``None`` if its recipe used none)."""
    if "oq.calibration" not in metadata:
        return None
    recorded = json.loads(metadata["oq.calibration"])
    name, _, count = recorded["text"].rpartition("[:")
    tokens = int(count.rstrip("]"))
    seq = min(1024, tokens)
    if text is not None:
        path = pathlib.Path(text)
        data = text_calibration(path.read_text(encoding="utf-8"), path.name, tokenizer, tokens, seq)
    elif name == CALIBRATION_BOOK:
        data = calibration_data(tokenizer, tokens, seq=seq)
    else:
        raise OQError(f"the optimized model was calibrated on {recorded['text']}: give that text (--calib-text)")
    if data.digest() != recorded["sha256"]:
        raise OQError(f"the calibration tokens differ from those the optimized model was made with "
                      f"({recorded['text']}): give the same text and tokenizer")
    return data


def _file_row(path: pathlib.Path, text: np.ndarray, seq: int, progress: bool) -> dict:
    result = evaluate.perplexity(evaluate.session(path), text, seq=seq, progress=progress)
    return {"file": path.name, "mib": modelio.file_bytes(path) / (1 << 20), "perplexity": result.perplexity}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _outlier_plot(layers, names: list[str]) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), squeeze=False)
    for axis, name in zip(axes[:, 0], names):
        before, after = layers.absmax_before[name], layers.absmax_after[name]
        channels = np.arange(len(before))
        for values, color, label in ((before, "#c0392b", "original"), (after, "#2471a3", "after the float part")):
            peak = values.max() / np.median(values)
            axis.plot(channels, values, lw=0.8, color=color, label=f"{label}: max {values.max():.3g}, {peak:.1f}x the median")
        axis.set_title(f"input of {name}: per-channel absolute maximum", fontsize=10)
        axis.set_xlabel("channel")
        axis.set_yscale("log")
        axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    page = _png(figure)
    plt.close(figure)
    return page


def _error_plot(layers) -> str:
    import matplotlib.ticker

    plt = _pyplot()
    roles: dict[str, list[tuple[int, float]]] = {}
    for row in layers.errors:
        _, block, role = row["layer"].split(".", 2)
        roles.setdefault(role, []).append((int(block), row["total"]))
    figure, axis = plt.subplots(figsize=(10, 3.6))
    for role, points in roles.items():
        blocks, totals = zip(*points)
        axis.plot(blocks, totals, marker="o", ms=3, lw=1, label=role)
    axis.set_xlabel("block")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_ylabel("‖Q(X) Ŵ − X W‖ / ‖X W‖")
    axis.set_title("per-layer output error of the quantized linears", fontsize=10)
    axis.legend(fontsize=8, ncol=4)
    figure.tight_layout()
    page = _png(figure)
    plt.close(figure)
    return page


def _table(header: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _page(original, optimized, recipe, seed, metadata, files, layers, tokens) -> str:
    names = list(layers.absmax_before)
    blocks = sorted({int(name.split(".")[1]) for name in names if name.startswith("layers.")})
    chosen = [f"layers.{blocks[0]}.self_attn.q_proj", f"layers.{blocks[len(blocks) // 2]}.mlp.down_proj",
              f"layers.{blocks[-1]}.mlp.down_proj"]
    chosen = [name for name in dict.fromkeys(chosen) if name in layers.absmax_before]
    reference = files[0]["perplexity"]
    file_rows = [[row["file"], f"{row['mib']:.1f}", f"{row['perplexity']:.4f}", f"{row['perplexity'] / reference:.4f}"]
                 for row in files]
    passes = json.loads(metadata.get("oq.passes", "[]"))
    pass_rows = [[step["pass"], ", ".join(f"{key}={value}" for key, value in step["params"].items())] for step in passes]
    worst = sorted(layers.errors, key=lambda row: -row["total"])[:10]
    error_rows = [[row["layer"], f"{row['weight']:.4f}", f"{row['activation']:.4f}", f"{row['total']:.4f}"]
                  for row in worst]
    calibration = json.loads(metadata["oq.calibration"])["text"] if "oq.calibration" in metadata else "none"
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;"
             "font-size:13px;text-align:left}th{background:#eee}img{max-width:100%}")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>oqcompile report: {html.escape(optimized.name)}</title>
<style>{style}</style></head><body>
<h1>{html.escape(optimized.name)}</h1>
<p>Compiled from {html.escape(original.name)} by oqcompile {html.escape(metadata.get("oq.version", "?"))}:
recipe <b>{html.escape(recipe)}</b>, seed {seed}, calibration text {html.escape(calibration)}.</p>
<h2>Size and perplexity</h2>
<p>Perplexity on the first {tokens} tokens of {EVALUATION_BOOK} through ONNX Runtime (CPU).</p>
{_table(["file", "MiB", "perplexity", "× original"], file_rows)}
<h2>Outlier channels</h2>
<p>The per-channel absolute maximum of a linear's input on the same text (log scale), in the
original model and after the recipe's float part: rotations spread the few large channels
over all of them, which is what lets the quantizer's codes cover every channel. The float part
also folds the norms' gains into the next linears, so the levels move; what the quantizer feels
is how far the largest channel stands above the rest (× the median).</p>
{_outlier_plot(layers, chosen) if chosen else "<p>(no block linears mapped)</p>"}
<h2>Per-layer error</h2>
<p>Relative output error of each quantized block linear on {min(1024, tokens)} sampled tokens,
the recipe compiled again from the original with the same seed and calibration.</p>
{_error_plot(layers) if layers.errors else "<p>(the recipe quantizes nothing)</p>"}
{_table(["layer (worst 10)", "weight error", "activation error", "total error"], error_rows) if error_rows else ""}
<h2>Passes</h2>
{_table(["pass", "parameters"], pass_rows)}
</body></html>
"""
