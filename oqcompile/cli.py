"""The ``oqcompile`` command line: export, inspect, optimize, eval, report, recipes.

Exit status: 0 done; 2 an expected failure (bad input, missing packages, unwritable output),
which prints one line ``oqcompile: error: ...`` and leaves nothing half-written behind; 130
interrupted; 141 standard output closed by its reader. Long steps show progress bars on a
terminal's standard error unless ``--quiet``, which also drops the closing summary lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time
import warnings

from oqcompile.errors import OQError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return status
    except OQError as error:
        print(f"oqcompile: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oqcompile: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `oqcompile inspect FILE | head`): end quietly, and
        # keep Python from failing again when it flushes stdout on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE


def _parser() -> argparse.ArgumentParser:
    from oqcompile.models import DEFAULT_MODEL, EXPORTERS, MODEL_IDS

    parser = argparse.ArgumentParser(
        prog="oqcompile",
        description="Rotate and quantize the transformer inside an ONNX language model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each pass")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars and no summary lines (errors and results still print)")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a model to ONNX (input_ids -> logits)")
    export.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help=f"one of {', '.join(MODEL_IDS)} or a local HF model directory "
                             f"(default {DEFAULT_MODEL})")
    export.add_argument("-o", "--output", required=True, help="output .onnx file")
    export.add_argument("--dtype", choices=("fp32", "fp16", "int4"), default="fp32",
                        help="weights (int4: the genai exporter's MatMulNBits only)")
    export.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="torch.onnx.export flavour (default: dynamo with its optimizer); genai: the ONNX "
                             "Runtime GenAI model builder (a KV-cache model with genai_config.json and the "
                             "tokenizer beside it); optimum: Hugging Face Optimum's exporter (installed into "
                             "the cache on first use)")
    export.add_argument("--opset", type=int, default=20,
                        help="ONNX opset of the torch exporters (at 23, dynamo writes the ONNX Attention, "
                             "RotaryEmbedding and RMSNormalization ops)")
    export.add_argument("--kv-cache", action="store_true",
                        help="decoder signature with attention_mask and past_key_values.* inputs "
                             "and present.* outputs (dynamo exporters and optimum)")
    export.set_defaults(handler=_export)

    inspect = commands.add_parser("inspect", help="what an ONNX file holds and what oqcompile did to it: recipe, "
                                  "passes, weight and activation formats per linear, inserted rotations, custom "
                                  "ops, bytes by type, the transformer map")
    inspect.add_argument("file")
    inspect.add_argument("--layers", action="store_true", help="one line per linear layer")
    inspect.add_argument("--json", action="store_true", help="everything, as JSON")
    inspect.set_defaults(handler=_inspect)

    optimize = commands.add_parser("optimize", help="apply a recipe and write a new ONNX file")
    optimize.add_argument("file")
    optimize.add_argument("-o", "--output", required=True, help="output .onnx file")
    optimize.add_argument("--recipe", default="rotate",
                          help="recipe name (see `oqcompile recipes`) or a recipe .toml file")
    optimize.add_argument("--seed", type=int, default=0, help="seed of the random rotations")
    optimize.add_argument("--calib-tokens", type=int,
                          help="calibration tokens, in windows of 1024 (default: 131072 of Emma, all of --calib-text)")
    optimize.add_argument("--calib-text", metavar="FILE",
                          help="a UTF-8 text of your own to calibrate on (default: Jane Austen's Emma)")
    _add_tokenizer_option(optimize, "for calibration")
    optimize.add_argument("--portable", action="store_true",
                          help="stop before the `lower` and `fuse_ort` passes: standard ONNX only (QDQ, MatMul "
                               "Hadamards) that runs in any ONNX Runtime without the oq op library")
    optimize.set_defaults(handler=_optimize)

    evaluate = commands.add_parser("eval", help="perplexity on Pride and Prejudice through ORT")
    evaluate.add_argument("file")
    evaluate.add_argument("--tokens", type=int, default=16384, help="tokens of the book to use")
    evaluate.add_argument("--seq", type=int, default=1024, help="window length")
    evaluate.add_argument("--batch", type=int, default=1, help="windows per ORT run")
    _add_tokenizer_option(evaluate, "of the text")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_eval)

    report = commands.add_parser("report", help="one HTML page on what a compile did: size and perplexity, outlier "
                                 "channels before and after, per-layer error, the recipe")
    report.add_argument("original", help="the model before oqcompile")
    report.add_argument("optimized", help="what `oqcompile optimize` made of it")
    report.add_argument("-o", "--output", required=True, help="output .html file")
    report.add_argument("--tokens", type=int, default=4096, help="tokens of Pride and Prejudice to measure on")
    report.add_argument("--calib-text", metavar="FILE",
                        help="the text the optimized model was calibrated on, if not the default book")
    _add_tokenizer_option(report, "of the texts")
    report.set_defaults(handler=_report)

    recipes = commands.add_parser("recipes", help="list the recipes")
    recipes.set_defaults(handler=_recipes)
    return parser


def _add_tokenizer_option(command: argparse.ArgumentParser, purpose: str) -> None:
    from oqcompile.models import DEFAULT_MODEL

    command.add_argument("--tokenizer", default=None,
                         help=f"model id or HF directory of the tokenizer {purpose} (default: the one the file "
                              f"was exported from, else {DEFAULT_MODEL})")


def _export(args) -> int:
    from oqcompile.models.export import export_to_file

    start = time.perf_counter()
    export_to_file(args.model, args.output, exporter=args.exporter, dtype=args.dtype, kv_cache=args.kv_cache,
                   opset=args.opset, progress=_progress(args))
    cache = ", KV cache" if args.kv_cache else ""
    _summary(args, f"exported {args.model} ({args.dtype}, {args.exporter}{cache}) to {args.output} "
                   f"in {time.perf_counter() - start:.1f} s")
    return 0


def _progress(args) -> bool:
    """Progress bars: on a terminal, unless --quiet."""
    return sys.stderr.isatty() and not args.quiet


def _summary(args, line: str) -> None:
    if not args.quiet:
        print(line)


def _inspect(args) -> int:
    from oqcompile.inspection import describe, format_text

    description = describe(args.file)
    print(json.dumps(description, indent=2) if args.json else format_text(description, layers=args.layers))
    return 0


def _optimize(args) -> int:
    from oqcompile.calibrate import DEFAULT_CALIBRATION_TOKENS, calibration_data, text_calibration
    from oqcompile.compiler import compile_file

    # The tokenizer and the text are read only if a pass of the recipe reads activation statistics.
    def tokenizer() -> str:
        return _tokenizer_id(args)

    seq = 1024 if args.calib_tokens is None else min(1024, args.calib_tokens)
    if args.calib_text is None:
        tokens = DEFAULT_CALIBRATION_TOKENS if args.calib_tokens is None else args.calib_tokens
        calibration = calibration_data(tokenizer, tokens, seq=seq)
    else:
        text = pathlib.Path(args.calib_text)
        if not text.is_file():
            raise OQError(f"{text}: no such file")
        calibration = text_calibration(lambda: _read_text(text), text.name, tokenizer, args.calib_tokens, seq=seq)
    summary = compile_file(args.file, args.output, args.recipe, seed=args.seed, calibration=calibration,
                           portable=args.portable, progress=_progress(args))
    _summary(args, f"wrote {summary.target} (recipe {summary.recipe}{', portable' if summary.portable else ''}, "
                   f"seed {summary.seed}) in {summary.seconds:.1f} s, peak RSS {summary.peak_rss_mib:.0f} MiB")
    return 0


def _eval(args) -> int:
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import perplexity, session

    if not pathlib.Path(args.file).is_file():
        raise OQError(f"{args.file}: no such file")
    tokenizer_id = _tokenizer_id(args)
    tokens = book_tokens(EVALUATION_BOOK, tokenizer_id)
    result = perplexity(session(args.file), tokens[: args.tokens], seq=args.seq, batch=args.batch,
                        progress=_progress(args))
    if args.json:
        print(json.dumps({"file": args.file, "book": EVALUATION_BOOK, "perplexity": result.perplexity,
                          "tokens": result.tokens, "predictions": result.predictions,
                          "seq": result.seq, "windows": result.windows}))
    else:
        print(f"{args.file}: perplexity {result.perplexity:.4f} on {result.tokens} tokens of "
              f"{EVALUATION_BOOK} ({result.windows} windows of {result.seq})")
    return 0


def _report(args) -> int:
    from oqcompile.html_report import write_report

    for path in (args.original, args.optimized, *([args.calib_text] if args.calib_text else [])):
        if not pathlib.Path(path).is_file():
            raise OQError(f"{path}: no such file")
    written = write_report(args.original, args.optimized, args.output, tokens=args.tokens, tokenizer=args.tokenizer,
                           calibration_text=args.calib_text, progress=_progress(args))
    _summary(args, f"wrote {written}")
    return 0


def _recipes(args) -> int:
    from oqcompile.recipes import RECIPES

    for name, (description, _) in RECIPES.items():
        print(f"{name:>16}  {description}")
    return 0


def _read_text(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise OQError(f"{path}: not a readable UTF-8 text ({error})") from error


def _tokenizer_id(args) -> str:
    """``--tokenizer``, else the model the file was exported from, else the default model."""
    from oqcompile import modelio
    from oqcompile.models import DEFAULT_MODEL

    if args.tokenizer:
        return args.tokenizer
    if not pathlib.Path(args.file).is_file():
        raise OQError(f"{args.file}: no such file")
    return modelio.metadata(args.file).get("oq.source_model", DEFAULT_MODEL)


if __name__ == "__main__":
    sys.exit(main())
