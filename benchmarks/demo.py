"""The main job on the default model, for ``make demo``: SmolLM2-135M exported with a KV cache,
compiled by one quantized recipe, lowered to the oq ops and as its portable twin (standard ONNX),
then one table against the fp32 export, every model in a fresh process: perplexity over the
export's (Pride and Prejudice), file size, prefill of 512 tokens and decode per token (after
512) through ONNX Runtime on this CPU. Then the HTML report of the lowered file and the
command that opens it in Netron.

    .venv/bin/python benchmarks/demo.py [--recipe quarot-w8a8] [--out out]

The default recipe is data-free (no calibration), so the demo stays within a few minutes on
2 cores once the export is cached in ``--out``; a calibrated one (``quarot-w4a8``) calibrates on
``--calib-tokens`` of Emma.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import report
import speed
from report import MODEL, compile_step, file_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quarot-w8a8")
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    from oqcompile.models.export import export_to_file

    folder = pathlib.Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{MODEL}.kv.onnx"
    if not source.is_file():
        print(f"exporting {MODEL} with a KV cache to {source}", flush=True)
        report.measure(export_to_file, MODEL, str(source), kv_cache=True)
    models = {"fp32 export": source}
    for portable in (False, True):
        target = folder / f"{MODEL}.{args.recipe}{'.portable' if portable else ''}.onnx"
        print(f"compiling {target}", flush=True)
        report.measure(compile_step, str(source), args.recipe, str(target), args.calib_tokens, portable=portable)
        models[f"{args.recipe}{' portable' if portable else ''}"] = target
    rows, base = [], None
    for label, path in models.items():
        print(f"running {path}", flush=True)
        times, _, _ = report.measure(speed.end_to_end_step, str(path), (512,), 16, True)
        base = base or {**times, "size": file_mib(source)}
        size = file_mib(path)
        rows.append([label, f"{times['perplexity'] / base['perplexity']:.4f}",
                     f"{size:.0f} MiB ({size / base['size']:.2f}x)",
                     f"{times['prefill 512'] * 1e3:.0f} ms ({base['prefill 512'] / times['prefill 512']:.2f}x)",
                     f"{times['decode'] * 1e3:.1f} ms ({base['decode'] / times['decode']:.2f}x)"])
    lowered = models[args.recipe]
    page = folder / f"{MODEL}.{args.recipe}.report.html"
    print(f"writing {page}", flush=True)
    subprocess.run([sys.executable, "-m", "oqcompile.cli", "-q", "report", str(source), str(lowered), "-o", str(page),
                    "--tokens", "2048"], check=True)
    print()
    print(f"{MODEL}, recipe {args.recipe}, on {report.machine()}")
    print(f"perplexity on the first {speed.PERPLEXITY_TOKENS} tokens of Pride and Prejudice (windows of 512) "
          f"over the export's {base['perplexity']:.3f}; speed x: over the fp32 export\n")
    print(report.markdown_table(["model", "perplexity x P", "file", "prefill 512 tokens", "decode / token"], rows))
    print(f"\nreport: {page}")
    print(f"look inside: .venv/bin/oqcompile inspect {lowered}   |   .venv/bin/netron {lowered}")


if __name__ == "__main__":
    main()
