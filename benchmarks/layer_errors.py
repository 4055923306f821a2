"""Per-layer output error of a quantization recipe on SmolLM2-135M: which linears hurt.

For every block linear, with ``X`` its float input (sampled token rows of Pride and
Prejudice, run through the recipe's float part: rotations and scale folding, no
quantization), ``W`` its float weight and ``Ŵ``, ``Q(X)`` what the compiled recipe uses:

    weight error      ‖X (Ŵ - W)‖ / ‖X W‖
    activation error  ‖(Q(X) - X) W‖ / ‖X W‖
    total error       ‖Q(X) Ŵ - X W‖ / ‖X W‖

``Q`` is read from the compiled graph's QDQ metadata (bits, granularity, clip ratio). The
worst layers and the mean per role are printed and written to docs/RESULTS.md.

    .venv/bin/python benchmarks/layer_errors.py [--recipe quarot-w4a4-gptq] [--calib-tokens 32768]
"""

from __future__ import annotations

import argparse
import collections
import pathlib

import numpy as np

import report
from report import MODEL


def float_part(recipe: str, calibration):
    """The recipe's passes up to its first quantizing pass (everything exact in float)."""
    from oqcompile.recipes import build_recipe

    passes = build_recipe(recipe, calibration=calibration)
    cut = next(i for i, p in enumerate(passes) if p.name in ("quantize_weights", "insert_qdq", "quantize_kv"))
    return passes[:cut]


def quantizer_of(linear):
    """``x -> Q(x)`` as the compiled graph's activation QDQ in front of ``linear`` does it."""
    from oqcompile import quant
    from oqcompile.qdq import QDQTag

    producer = linear.input.producer()
    tag = QDQTag.read(producer) if producer is not None and producer.op_type == "DequantizeLinear" else None
    if tag is None:
        return lambda x: x
    bits, granularity, clip = tag.bits, tag.granularity, tag.clip
    if granularity == "prescaled":
        return lambda x: np.clip(np.rint(x), *quant.qrange(bits))
    if granularity == "per_token":
        return lambda x: quant.fake_quantize_per_token(x, bits, clip)
    raise ValueError(f"no NumPy model of {granularity} QDQ")


def measure_layers(source: str, recipe: str, calib_tokens: int, sample_tokens: int) -> list[dict]:
    from oqcompile import modelio
    from oqcompile.calibrate import CalibrationData, calibration_data, collect_statistics
    from oqcompile.compiler import optimize, run_passes
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.structure import analyze

    calibration = calibration_data(MODEL, calib_tokens)
    quantized = modelio.load(source)
    optimize(quantized, recipe, calibration=calibration, portable=True)
    reference = modelio.load(source)
    run_passes(reference, float_part(recipe, calibration))
    float_linears = {lin.name: lin for lin in analyze(reference).linears()}
    windows = book_tokens(EVALUATION_BOOK, MODEL)[: 8 * 1024].reshape(8, 1024)
    measured = CalibrationData(windows, f"{EVALUATION_BOOK}[:8192]")
    stats = collect_statistics(reference, [lin.input for lin in float_linears.values()], measured,
                               sample_tokens=sample_tokens, progress=False)
    rows = []
    for linear in analyze(quantized).linears():
        if linear.name == "lm_head":
            continue
        exact = float_linears[linear.name]
        x = stats[exact.input.name].sample.astype(np.float64)
        w, w_hat = exact.weight().astype(np.float64), linear.weight().astype(np.float64)
        y = x @ w
        x_hat = quantizer_of(linear)(x)
        norm = np.linalg.norm(y)
        rows.append({"layer": linear.name,
                     "weight": float(np.linalg.norm(x @ (w_hat - w)) / norm),
                     "activation": float(np.linalg.norm((x_hat - x) @ w) / norm),
                     "total": float(np.linalg.norm(x_hat @ w_hat - y) / norm)})
    return rows


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
