"""Peak memory of oqcompile's streaming calibration as the token count grows (SmolLM2-135M).

Every block linear input of the fp32 export is observed (min/max/absmax, per-token absmax
and, as GPTQ needs it, the Gram matrix ``XᵀX``) on the first N tokens of Emma, each N in
its own process, one transformer block at a time as the calibrating passes run it. Streaming
keeps running sums only, so peak RSS should stay flat while the time grows linearly. The table is printed and written to docs/RESULTS.md.

    .venv/bin/python benchmarks/calibration_memory.py [--tokens 2048,8192,32768]
"""

from __future__ import annotations

import argparse
import pathlib

import report
from report import MODEL


def calibrate_step(source: str, tokens: int) -> int:
    from oqcompile import modelio
    from oqcompile.calibrate import calibration_data, collect_statistics
    from oqcompile.passes.base import block_outputs
    from oqcompile.structure import analyze

    model = modelio.load(source)
    transformer = analyze(model)
    values = [lin.input for lin in transformer.linears() if lin is not transformer.lm_head]
    stats = collect_statistics(model, values, calibration_data(MODEL, tokens), block_outputs(model), gram=True,
                               progress=False)
    return len(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="2048,8192,32768", help="comma-separated token counts")
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args()
    source = pathlib.Path(args.out) / f"{MODEL}.onnx"
    if not source.is_file():
        raise SystemExit(f"{source}: run benchmarks/foundation.py or accuracy.py first (they export it)")
    rows = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        values, seconds, peak = report.measure(calibrate_step, str(source), tokens)
        rows.append([tokens, values, f"{seconds:.0f}", f"{peak:.2f}"])
        print(rows[-1], flush=True)
    table = report.markdown_table(["calibration tokens", "observed values", "seconds", "peak RSS GiB"], rows)
    print(table)
    report.write_section("calibration-memory", "Streaming calibration: peak memory against token count", f"""
All block linear inputs of SmolLM2-135M observed through ORT CPU on Emma in windows of 1024,
one block at a time, with Gram matrices (all of them kept, where GPTQ frees each block's);
model load included.

{table}
""")


if __name__ == "__main__":
    main()
