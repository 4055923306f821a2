r"""Accuracy of every quantization recipe on SmolLM2-135M, next to ONNX Runtime's own tools.

Protocol (the quantization issue's reference protocol): perplexity on the first ``--tokens``
tokens of Pride and Prejudice in windows of ``--seq`` (``--full``: the whole book), the
fp32 export and every quantized file scored by the same code in the same run;
calibration on the first ``--calib-tokens`` tokens of Emma in windows of ``--calib-seq``
(never the evaluation text).
ORT's tools run on the same fp32 export: ``quantize_dynamic`` (int8), ``quantize_static``
(QDQ int8, MinMax calibration on the same Emma windows) and ``MatMulNBitsQuantizer``
(4-bit RTN, blocks of 32 and 128). Every compile runs in its own process, so its time
and peak RSS (calibration included) are its own. With ``--portable`` each recipe is also
compiled without the `lower` pass and scored. The table is printed and written to section
``--section`` of docs/RESULTS.md.

    .venv/bin/python benchmarks/accuracy.py [--recipes a,b] [--tokens 16384] [--calib-tokens 32768] [--full]

The numbers tests/test_real_quant.py bounds (its recipes, tokens and calibration):

    .venv/bin/python benchmarks/accuracy.py \
        --recipes quarot-w8a8,naive-w6a6,outliertune-w6a6,quarot-w4a4-rtn,ot-quarot-w4a4-g16 \
        --tokens 2048 --seq 512 --calib-tokens 4096 --calib-seq 512 --portable --no-ort-tools \
        --section accuracy-tests

and those tests/test_real_genai.py bounds (SmolLM2 from the ONNX Runtime GenAI builder):

    .venv/bin/python benchmarks/accuracy.py --exporter genai --recipes rotate,quarot-w8a8 \
        --tokens 2048 --seq 512 --calib-tokens 4096 --calib-seq 512 --no-ort-tools --section accuracy-genai
"""

from __future__ import annotations

import argparse
import pathlib
import re

import report
from report import MODEL, compile_step, export_step, file_mib, ort_dynamic_step, ort_nbits_step, perplexity_step


def ort_static_step(source: str, target: str, calib_tokens: int) -> None:
    """ORT's static QDQ int8 with its MinMax calibrator, on Emma in windows of 256.

    ORT's calibrator keeps every output of every node for every batch in memory until it
    computes the ranges (its ``CalibMaxIntermediateOutputs`` option discards batches instead
    of folding them in, and then fails with "No data is collected"); 2 windows of 256 tokens
    peak at about 4 GiB for SmolLM2.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    from oqcompile.calibrate import calibration_data

    windows = calibration_data(MODEL, min(calib_tokens, 2 * 256), seq=256).windows

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(windows)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"input_ids": row[None]}

    quantize_static(source, target, Reader(), quant_format=QuantFormat.QDQ,
                    calibrate_method=CalibrationMethod.MinMax)


def bits_of(recipe: str) -> str:
    match = re.search(r"w(\d+)a(\d+)(kv\d+)?", recipe)
    return match.group(0).upper() if match else "fp32"


def main() -> None:
    from oqcompile.models import EXPORTERS
    from oqcompile.recipes import RECIPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(n for n in RECIPES if "-w" in n),
                        help="comma-separated recipes (default: every quantization recipe)")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--full", action="store_true", help="the whole book instead of --tokens")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--calib-tokens", type=int, default=32 * 1024)
    parser.add_argument("--calib-seq", type=int, default=1024)
    parser.add_argument("--no-ort-tools", action="store_true", help="skip ORT's own quantizers")
    parser.add_argument("--portable", action="store_true", help="also score each recipe compiled --portable")
    parser.add_argument("--exporter", default="dynamo", choices=EXPORTERS,
                        help="how SmolLM2 is exported (genai: the ONNX Runtime GenAI model builder)")
    parser.add_argument("--section", default="accuracy", help="the section of docs/RESULTS.md to write")
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count = None if args.full else args.tokens

    source = out / f"{MODEL}.onnx" if args.exporter == "dynamo" else out / f"{MODEL}.{args.exporter}" / "model.onnx"
    if not source.is_file():
        source.parent.mkdir(exist_ok=True)
        report.measure(export_step, str(source), args.exporter)
    fp, _, _ = report.measure(perplexity_step, str(source), count, args.seq)
    rows = [[f"fp32 export ({args.exporter})", "fp32", f"{fp:.3f}", "1.000", "", "", "", f"{file_mib(source):.0f}"]]
    print(rows[0], flush=True)

    jobs = []
    for recipe in args.recipes.split(","):
        jobs.append((recipe, bits_of(recipe), compile_step, (str(source), recipe),
                     (args.calib_tokens, args.calib_seq)))
        if args.portable:
            jobs.append((f"{recipe} (portable)", bits_of(recipe), compile_step, (str(source), recipe),
                         (args.calib_tokens, args.calib_seq, True)))
    if not args.no_ort_tools:
        jobs += [("ORT quantize_dynamic", "W8A8 (int8)", ort_dynamic_step, (str(source),), ()),
                 ("ORT quantize_static QDQ, MinMax", "W8A8 (uint8 act.)", ort_static_step, (str(source),),
                  (args.calib_tokens,)),
                 ("ORT MatMulNBits RTN, block 32", "W4A16", ort_nbits_step, (str(source),), (32,)),
                 ("ORT MatMulNBits RTN, block 128", "W4A16", ort_nbits_step, (str(source),), (128,))]
    for label, bits, step, before, after in jobs:
        target = out / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".onnx")
        try:
            _, seconds, peak = report.measure(step, *before, str(target), *after)
            value, _, _ = report.measure(perplexity_step, str(target), count, args.seq)
        except Exception as error:  # a failing method is a result too: it goes into the table
            rows.append([label, bits, f"failed: {str(error).strip().splitlines()[0][:120]}"] + [""] * 5)
            print(rows[-1], flush=True)
            continue
        rows.append([label, bits, f"{value:.3f}", f"{value / fp:.4f}", f"{100 * (value / fp - 1):+.2f}",
                     f"{seconds:.0f}", f"{peak:.2f}", f"{file_mib(target):.0f}"])
        print(rows[-1], flush=True)
    table = report.markdown_table(["method", "bits", "perplexity", "×fp", "Δ% vs fp", "compile s",
                                   "compile peak RSS GiB", "file MiB"], rows)
    print(table)
    scope = "the whole book" if args.full else f"the first {args.tokens} tokens"
    ort_tools = "" if args.no_ort_tools else """ ORT `quantize_static` calibrates on
2 windows of 256 tokens of Emma (its calibrator keeps every tensor of every batch); ORT's GPTQ for
MatMulNBits needs Intel Neural Compressor, which is not installed, so only its RTN is shown."""
    portable = " A recipe marked (portable) is compiled `--portable` (standard ONNX QDQ, no oq ops)." \
        if args.portable else ""
    title = "SmolLM2-135M: quantization recipes" + ("" if args.no_ort_tools else " and ORT's tools")
    exporter = ("" if args.exporter == "dynamo"
                else f" SmolLM2 exported by `oqcompile export --exporter {args.exporter}`.")
    report.write_section(args.section, title, f"""
Perplexity on {scope} of Pride and Prejudice, windows of {args.seq}; calibration on the first
{args.calib_tokens} tokens of Emma (windows of {args.calib_seq}). Compile time and peak RSS include
calibration (ORT CPU, streaming statistics) and saving.{portable}{ort_tools}{exporter}
SmolLM2's weights already carry Q4_1 rounding (GGUF source).

{table}
""")


if __name__ == "__main__":
    main()
