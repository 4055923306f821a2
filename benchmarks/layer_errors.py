"""Per-layer output error of a quantization recipe on SmolLM2-135M: which linears hurt.

The weight, activation and total error of every block linear (:mod:`oqcompile.layer_errors`)
on sampled token rows of Pride and Prejudice; the worst layers and the mean per role are
printed and written to docs/RESULTS.md.

    .venv/bin/python benchmarks/layer_errors.py [--recipe quarot-w4a4-gptq] [--calib-tokens 32768]
"""

from __future__ import annotations

import argparse
import collections
import pathlib

import numpy as np

import report
from report import MODEL


def measure_layers(source: str, recipe: str, calib_tokens: int, sample_tokens: int) -> list[dict]:
    from oqcompile.calibrate import CalibrationData, calibration_data
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.layer_errors import measure

    windows = book_tokens(EVALUATION_BOOK, MODEL)[: 8 * 1024].reshape(8, 1024)
    measured = CalibrationData(windows, f"{EVALUATION_BOOK}[:8192]")
    return measure(source, recipe, 0, calibration_data(MODEL, calib_tokens), measured, sample_tokens).errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quarot-w4a4-gptq")
    parser.add_argument("--calib-tokens", type=int, default=32 * 1024)
    parser.add_argument("--sample-tokens", type=int, default=2048)
    parser.add_argument("--worst", type=int, default=12, help="how many of the worst layers to list")
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args()
    source = pathlib.Path(args.out) / f"{MODEL}.onnx"
    if not source.is_file():
        raise SystemExit(f"{source}: run benchmarks/foundation.py or accuracy.py first (they export it)")
    rows, seconds, _ = report.measure(measure_layers, str(source), args.recipe, args.calib_tokens,
                                      args.sample_tokens)
    worst = sorted(rows, key=lambda r: -r["total"])[: args.worst]
    table = report.markdown_table(
        ["layer", "weight error", "activation error", "total error"],
        [[r["layer"], f"{r['weight']:.4f}", f"{r['activation']:.4f}", f"{r['total']:.4f}"] for r in worst])
    by_role = collections.defaultdict(list)
    for r in rows:
        by_role[r["layer"].split(".", 2)[2]].append(r)
    roles = report.markdown_table(
        ["role", "mean weight error", "mean activation error", "mean total error", "worst layer"],
        [[role, *(f"{np.mean([r[k] for r in rs]):.4f}" for k in ("weight", "activation", "total")),
          max(rs, key=lambda r: r["total"])["layer"]] for role, rs in sorted(by_role.items())])
    print(table, roles, sep="\n\n")
    report.write_section(f"layer-errors-{args.recipe}", f"Per-layer output error of `{args.recipe}` on SmolLM2",
                         f"""
Relative output error of each block linear on {args.sample_tokens} sampled token rows of the
first 8192 tokens of Pride and Prejudice (inputs from the recipe's float part: rotations and
scale folding); the recipe calibrated on {args.calib_tokens} tokens of Emma. Run time {seconds:.0f} s.

Worst {args.worst} layers:

{table}

Mean per role:

{roles}
""")


if __name__ == "__main__":
    main()
