"""CPU speed and memory of the oq op library, per op and end to end on SmolLM2.

Per op (one ORT session per case, the session's default threads, median of repeated runs):

- linear layers at SmolLM2 and LLaMA-7B shapes, from float input to float output: ORT fp32
  ``MatMul``; ORT ``quantize_dynamic`` of that MatMul (int8 weights, dynamic int8
  activations: ORT fuses it into ``DynamicQuantizeMatMul``); and oq
  ``QuantizePerToken`` + ``QMatMul`` with int8, int6 and int4 weights;
- ``oq.Hadamard`` against a dense ``MatMul`` by ``H_n``.

End to end, SmolLM2 exported with a KV cache, each model in its own process: prefill of 512
and 2048 tokens, per-token decode after a 512-token prefill, weight file size and the
process's peak RSS, for fp32, ORT ``quantize_dynamic`` and the lowered ``quarot-w8a8``,
``ot-quarot-w6a6`` and ``ot-quarot-w4a4``; then where each model's prefill time goes per op
type (ORT's node profile, in a separate process). Ratios are to fp32 in the same run
(shared, noisy machines: compare within a run, not across runs).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import numpy as np

import report
from report import MODEL, compile_step, file_mib, ort_dynamic_step

LINEAR_SHAPES = {"SmolLM2 q_proj": (576, 576), "SmolLM2 up_proj": (576, 1536), "SmolLM2 down_proj": (1536, 576),
                 "LLaMA-7B up_proj": (4096, 11008), "LLaMA-7B down_proj": (11008, 4096)}
HADAMARD_SIZES = (576, 1536, 4096, 14336)
END_TO_END = {"fp32": None, "ORT quantize_dynamic (W8A8)": "ort-dynamic", "quarot-w8a8": "quarot-w8a8",
              "ot-quarot-w6a6": "ot-quarot-w6a6", "ot-quarot-w4a4": "ot-quarot-w4a4"}


def median_seconds(run, budget: float = 1.0, least: int = 3) -> float:
    """Median wall time of ``run()`` over at least ``least`` calls and about ``budget`` seconds."""
    run()  # warm-up
    times = []
    while len(times) < least or sum(times) < budget:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- per op ------------------------------------------------------------------------------

def _session(model):
    import onnxruntime as ort

    from oqcompile.runtime import session_options

    options = session_options()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, initializers):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                               for n in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("oq", 1)],
                             ir_version=10)


def linear_models(k: int, n: int, folder: pathlib.Path) -> dict:
    """The contenders for one ``[M, k] x [k, n]`` linear layer, as ONNX models."""
    import onnx
    from onnx import numpy_helper

    from oqcompile.quant import pack_codes, rtn

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    models = {"ORT fp32 MatMul": _model([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], ["x"],
                                        [numpy_helper.from_array(weight, "w")])}
    fp32_path, dynamic_path = folder / "matmul.onnx", folder / "matmul.dynamic.onnx"
    onnx.save(models["ORT fp32 MatMul"], fp32_path)
    ort_dynamic_step(str(fp32_path), str(dynamic_path))
    models["ORT DynamicQuantizeMatMul (int8)"] = onnx.load(dynamic_path)
    for bits in (8, 6, 4):
        quantized = rtn(weight, bits, clip_search=False)
        nodes = [onnx.helper.make_node("QuantizePerToken", ["x"], ["codes", "scales"], domain="oq", bits=bits),
                 onnx.helper.make_node("QMatMul", ["codes", "scales", "w", "w_scales"], ["y"], domain="oq",
                                       bits=bits, in_features=k)]
        initializers = [numpy_helper.from_array(pack_codes(quantized.codes, bits), "w"),
                        numpy_helper.from_array(quantized.scales.T.astype(np.float32).copy(), "w_scales")]
        models[f"oq QMatMul W{bits}A{bits}"] = _model(nodes, ["x"], initializers)
    return models


def per_op_linear(tokens: list[int], folder: pathlib.Path) -> str:
    rows = []
    for shape_name, (k, n) in LINEAR_SHAPES.items():
        sessions = {name: _session(model) for name, model in linear_models(k, n, folder).items()}
        for m in tokens:
            x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
            times = {name: median_seconds(lambda s=s: s.run(None, {"x": x})) for name, s in sessions.items()}
            base = times["ORT fp32 MatMul"]
            for name, seconds in times.items():
                rows.append([shape_name, f"{k}x{n}", m, name, f"{seconds * 1e3:.3f}", f"{base / seconds:.2f}x"])
            print(f"{shape_name} M={m}: " + ", ".join(f"{name} {t * 1e3:.2f} ms" for name, t in times.items()),
                  flush=True)
    return report.markdown_table(["layer", "K x N", "tokens M", "implementation", "ms", "speed vs fp32"], rows)


def per_op_hadamard(rows_count: int) -> str:
    import onnx
    from onnx import numpy_helper

    from oqcompile.hadamard import hadamard, kronecker_factors, kronecker_pair

    rows = []
    for size in HADAMARD_SIZES:
        a, _ = kronecker_factors(size)
        dense = _model([onnx.helper.make_node("MatMul", ["x", "h"], ["y"])], ["x"],
                       [numpy_helper.from_array(hadamard(size).astype(np.float32), "h")])
        inputs, initializers = ["x"], []
        if a & (a - 1):
            inputs.append("f")
            initializers.append(numpy_helper.from_array(kronecker_pair(size)[0].astype(np.float32), "f"))
        fast = _model([onnx.helper.make_node("Hadamard", inputs, ["y"], domain="oq")], ["x"], initializers)
        x = np.random.default_rng(2).standard_normal((rows_count, size)).astype(np.float32)
        dense_s, fast_s = (median_seconds(lambda s=_session(m): s.run(None, {"x": x})) for m in (dense, fast))
        copy_s = median_seconds(lambda: x.copy())
        rows.append([size, f"{a}x{size // a}", f"{dense_s * 1e3:.3f}", f"{fast_s * 1e3:.3f}", f"{dense_s / fast_s:.1f}x",
                     f"{fast_s / copy_s:.1f}x"])
        print(f"Hadamard {size}: dense {dense_s * 1e3:.2f} ms, oq {fast_s * 1e3:.2f} ms", flush=True)
    return report.markdown_table(["n", "H_K x H_m", "dense MatMul ms", "oq.Hadamard ms", "oq speed-up",
                                  "oq time / NumPy copy time"], rows)


# --- end to end --------------------------------------------------------------------------

def end_to_end_step(path: str, prefill_lengths: tuple[int, ...], decode_steps: int) -> dict:
    """Latencies of one model in this (fresh) process: prefills and per-token decode."""
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import feeds, session

    tokens = book_tokens(EVALUATION_BOOK, MODEL)
    model = session(path)
    result = {}
    for length in prefill_lengths:
        ids = tokens[None, :length].astype(np.int64)
        result[f"prefill {length}"] = median_seconds(lambda: model.run(None, feeds(model, ids)), budget=3.0)
    ids = tokens[None, :512].astype(np.int64)
    past_names = [i.name for i in model.get_inputs()][2:]
    outputs = model.run(None, feeds(model, ids))
    times = []
    for step in range(decode_steps):
        length = 512 + step + 1
        inputs = {"input_ids": tokens[None, length - 1:length].astype(np.int64),
                  "attention_mask": np.ones((1, length), np.int64), **dict(zip(past_names, outputs[1:]))}
        start = time.perf_counter()
        outputs = model.run(None, inputs)
        times.append(time.perf_counter() - start)
    result["decode"] = statistics.median(times)
    return result


def op_profile_step(path: str, length: int) -> dict[str, float]:
    """Milliseconds per op type of one ``length``-token prefill, from ORT's node profile (after a warm-up)."""
    import collections
    import json

    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import feeds, session

    ids = book_tokens(EVALUATION_BOOK, MODEL)[None, :length].astype(np.int64)
    with tempfile.TemporaryDirectory() as scratch:
        model = session(path, profile_prefix=str(pathlib.Path(scratch) / "profile"))
        model.run(None, feeds(model, ids))
        model.run(None, feeds(model, ids))
        events = json.loads(pathlib.Path(model.end_profiling()).read_text())
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 2e3  # µs over two runs -> ms per run
    return dict(per_op)


def profile_table(profiles: dict[str, dict[str, float]], length: int, shown: int = 8) -> str:
    """Op types (the ``shown`` costliest of each model) x models, ms per ``length``-token prefill."""
    ops = []
    for per_op in profiles.values():
        ops += [op for op, _ in sorted(per_op.items(), key=lambda item: -item[1])[:shown] if op not in ops]
    rows = [[op] + [f"{per_op.get(op, 0.0):.0f}" for per_op in profiles.values()] for op in ops]
    rows.append(["all nodes"] + [f"{sum(per_op.values()):.0f}" for per_op in profiles.values()])
    return report.markdown_table([f"op type (ms per {length}-token prefill, profiled)"] + list(profiles), rows)


def end_to_end(folder: pathlib.Path, calib_tokens: int, prefill_lengths: tuple[int, ...], decode_steps: int) -> str:
    from oqcompile.models.export import export_to_file

    source = folder / "smollm2.kv.onnx"
    report.measure(export_to_file, MODEL, str(source), kv_cache=True)
    rows, base, profiles = [], None, {}
    for label, recipe in END_TO_END.items():
        path = source
        if recipe == "ort-dynamic":
            path = folder / "ort-dynamic.onnx"
            report.measure(ort_dynamic_step, str(source), str(path))
        elif recipe is not None:
            path = folder / f"{recipe}.onnx"
            report.measure(compile_step, str(source), recipe, str(path), calib_tokens)
        times, _, peak = report.measure(end_to_end_step, str(path), prefill_lengths, decode_steps)
        profiles[label], _, _ = report.measure(op_profile_step, str(path), prefill_lengths[0])
        base = base or times
        size = file_mib(path)
        base_size = file_mib(source)
        cells = [label]
        for key in [f"prefill {n}" for n in prefill_lengths] + ["decode"]:
            cells.append(f"{times[key] * 1e3:.0f} ms ({base[key] / times[key]:.2f}x)")
        cells += [f"{size:.0f} MiB ({size / base_size:.2f}x)", f"{peak:.2f} GiB"]
        rows.append(cells)
        print(" | ".join(cells), flush=True)
    header = (["model"] + [f"prefill {n} tokens" for n in prefill_lengths]
              + ["decode / token (after 512)", "file size", "peak RSS"])
    return (report.markdown_table(header, rows) + "\n\nWhere the prefill time goes (ORT's node profile):\n\n"
            + profile_table(profiles, prefill_lengths[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-tokens", type=int, default=4096,
                        help="calibration tokens for the compiled models (speed does not depend on them)")
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = pathlib.Path(scratch)
        linear = per_op_linear([1, 512], folder)
        hadamard_table = per_op_hadamard(512)
        body = ("### Linear layers (float in, float out), per call\n\n" + linear
                + "\n\n### oq.Hadamard against a dense MatMul, 512 rows\n\n" + hadamard_table)
        if not args.skip_end_to_end:
            body += ("\n\n### End to end, SmolLM2-135M with KV cache (batch 1)\n\n"
                     + end_to_end(folder, args.calib_tokens, (512, 2048), args.decode_steps))
    report.write_section("speed", "CPU speed and memory (benchmarks/speed.py)", body)


if __name__ == "__main__":
    main()
