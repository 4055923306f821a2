"""Shared by the benchmark scripts: the machine description, step measurement and RESULTS.md.

Each benchmark owns one section of ``docs/RESULTS.md``, delimited by
``<!-- begin NAME -->`` / ``<!-- end NAME -->``; re-running it replaces only that section.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pathlib
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "RESULTS.md"
MODEL = "smollm2-135m"


def export_step(path: str, exporter: str = "dynamo") -> None:
    """Export SmolLM2 (fp32, by ``exporter``) to ``path``."""
    from oqcompile.models.export import export_to_file

    export_to_file(MODEL, path, exporter=exporter)


def compile_step(source: str, recipe: str, target: str, calib_tokens: int, calib_seq: int = 1024,
                 portable: bool = False) -> None:
    """``oqcompile optimize`` (lowered unless ``portable``) of ``source`` with ``recipe``, calibrated on
    ``calib_tokens`` of Emma in windows of ``calib_seq``."""
    from oqcompile import compile_file
    from oqcompile.calibrate import calibration_data

    compile_file(source, target, recipe, calibration=calibration_data(MODEL, calib_tokens, seq=calib_seq),
                 portable=portable)


def ort_dynamic_step(source: str, target: str) -> None:
    """ONNX Runtime's own int8 dynamic quantization (``quantize_dynamic``, QInt8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, use_external_data_format=_has_external_data(source))


def ort_nbits_step(source: str, target: str, block: int, accuracy_level: int | None = None) -> None:
    """ONNX Runtime's own 4-bit weight-only quantization (``MatMulNBitsQuantizer``, symmetric RTN in
    blocks of ``block``); ``accuracy_level`` 4 runs the kernels on int8 activations."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(source), block_size=block, is_symmetric=True,
                                     accuracy_level=accuracy_level)
    quantizer.process()
    quantizer.model.save_model_to_file(target, use_external_data_format=_has_external_data(source))


def _has_external_data(path: str) -> bool:
    """Whether an exported model keeps its weights in ``<name>.data`` (ORT's quantizers must then
    write theirs the same way: a protobuf file holds at most 2 GiB)."""
    path = pathlib.Path(path)
    return path.with_name(path.name + ".data").is_file()


def file_mib(path: pathlib.Path) -> float:
    """Size of an ONNX file with its external data, in MiB."""
    from oqcompile.modelio import file_bytes

    return file_bytes(path) / 2**20


def perplexity_step(path: str, count: int | None, seq: int) -> float:
    """ORT perplexity of ``path`` on the first ``count`` tokens (``None``: all) of the evaluation book."""
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import perplexity, session

    tokens = book_tokens(EVALUATION_BOOK, MODEL)
    return perplexity(session(path), tokens if count is None else tokens[:count], seq=seq,
                      progress=False).perplexity


def logits(path, ids, optimization=None):
    """ORT CPU logits of the model at ``path`` for token ``ids`` (oq ops registered when installed);
    ``optimization``: an ORT graph optimization level (default: ORT's)."""
    import onnxruntime as ort

    from oqcompile.evaluate import feeds, session
    from oqcompile.runtime import session_options

    if optimization is None:
        onnx_session = session(path)
    else:
        options = session_options()
        options.graph_optimization_level = optimization
        onnx_session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx_session.run(None, feeds(onnx_session, ids))[0]


def relative_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|``, the logit error the tests bound (tests/conftest.py)."""
    import numpy as np

    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def machine() -> str:
    """One line naming the CPU, cores, memory, GPU and the versions that matter."""
    import onnxruntime
    import torch
    import transformers

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {gpu}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, transformers {transformers.__version__}")


def measure(step: Callable, *args, **kwargs):
    """Run ``step(*args, **kwargs)`` in a fresh process: ``(result, seconds, peak RSS in GiB)``.

    A fresh process per step makes the peak RSS that step's own, not the largest so far.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_timed, step, *args, **kwargs).result()


def _timed(step: Callable, *args, **kwargs):
    start = time.perf_counter()
    result = step(*args, **kwargs)
    seconds = time.perf_counter() - start
    return result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) section ``name`` of RESULTS.md with ``title``, the command and ``body``."""
    argv = [os.path.relpath(sys.executable), os.path.relpath(sys.argv[0]), *sys.argv[1:]]
    command = " ".join(shlex.quote(a) for a in argv)
    section = (f"<!-- begin {name} -->\n## {title}\n\nCommand: `{command}`  \nMachine: {machine()}\n\n"
               f"{body.strip()}\n<!-- end {name} -->")
    text = RESULTS.read_text() if RESULTS.is_file() else "# Results\n"
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
