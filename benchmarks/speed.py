"""CPU speed and memory of the oq op library, per op and end to end on SmolLM2 and a 1B-shaped LLaMA.

Per op (one ORT session per case, the session's default threads, median of repeated runs),
section ``speed-per-op``:

- linear layers at SmolLM2, LLaMA-3.2-1B and LLaMA-7B shapes, from float input to float
  output, for M tokens: ORT fp32 ``MatMul``; ORT ``quantize_dynamic`` of that MatMul (int8
  weights, dynamic int8 activations: ORT fuses it into ``DynamicQuantizeMatMul``); ORT
  ``MatMulNBits`` (4-bit weights in blocks of 32, ``accuracy_level`` 4: int8 activations);
  and oq ``QuantizePerToken`` + ``QMatMul`` as W8A8, W6A6, W4A8, W4A4 (per-channel weight
  scales), W4A8 with weight groups of 32 (as ``quarot-w4a8`` makes them) and W4A4 with weight
  and token scales in groups of 32 (``insert_qdq``'s ``group``), once per CPU
  instruction set the op library can use here (``OQ_CPU_ISA``). At M = 1 (decode) a buffer
  twice the last-level cache is written before each timed call, so the weights come from
  memory as they do when a model decodes (its layers' weights do not stay in cache);
- the resident memory each format adds per weight (RSS of a fresh process after creating the
  session and running one token, less before, over K x N);
- ``oq.Hadamard`` per instruction set against a dense ``MatMul`` by ``H_n`` and a NumPy copy, and
  the online DuQuant transform of the same size (standard ONNX, as the ``duquant`` pass emits it).

End to end (section ``speed``), SmolLM2 and ``llama-1b-shaped`` (LLaMA-3.2-1B's shape with
seeded random weights, :mod:`oqcompile.models.shaped`) exported with a KV cache, each model in
its own process: prefill of 512 and 2048 tokens, per-token decode after a 512-token prefill,
weight file size, the process's resident memory after creating the session and its peak RSS,
and for SmolLM2 the perplexity on the first 2,048 tokens of the evaluation book (windows of
512, as the accuracy-tests section of docs/RESULTS.md). Contenders: fp32, ORT
``quantize_dynamic``, ORT ``MatMulNBits`` (its ``MatMulNBitsQuantizer``, 4-bit blocks of 32,
``accuracy_level`` 4) and the lowered (and ``fuse_ort``-fused) ``quarot-w8a8``,
``quarot-w4a8``, ``ot-quarot-w6a6`` and ``ot-quarot-w4a4`` on SmolLM2; on the 1B shape, whose
random weights leave nothing to calibrate on, the data-free ``quarot-w8a8`` and
``quarot-w4a4-rtn`` and ``quarot-w4a8``'s graph with RTN weights. Then where each model's
prefill and decode time goes per op type (ORT's node profile, in a separate process). Ratios
are within one run (shared, noisy machines: compare within a run, not across runs).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import time

import numpy as np

import report
from report import MODEL, compile_step, file_mib, ort_dynamic_step

LINEAR_SHAPES = {"SmolLM2 q_proj": (576, 576), "SmolLM2 up_proj": (576, 1536), "SmolLM2 down_proj": (1536, 576),
                 "LLaMA-3.2-1B up_proj": (2048, 8192), "LLaMA-3.2-1B down_proj": (8192, 2048),
                 "LLaMA-7B up_proj": (4096, 11008), "LLaMA-7B down_proj": (11008, 4096)}
HADAMARD_SIZES = (576, 1536, 2048, 4096, 8192, 14336)
# (weight bits, activation bits, weight group: None is per channel, activation group: None is per token)
OQ_FORMATS = {"W8A8": (8, 8, None, None), "W6A6": (6, 6, None, None), "W4A8": (4, 8, None, None),
              "W4A8 g32": (4, 8, 32, None), "W4A4": (4, 4, None, None), "W4A4 g32 a32": (4, 4, 32, 32),
              "W4A4 g16 a16": (4, 4, 16, 16)}
FP32, DYNAMIC, NBITS = "ORT fp32 MatMul", "ORT DynamicQuantizeMatMul (int8)", "ORT MatMulNBits (int4, acc. level 4)"
PERPLEXITY_TOKENS = 2048  # end to end: perplexity in windows of 512, as the accuracy-tests section
SCALAR_MACS = 2e9  # the scalar kernels are timed only below this many multiply-adds per call
ORT_CONTENDERS = {"fp32": None, "ORT quantize_dynamic (W8A8)": "ort-dynamic",
                  "ORT MatMulNBits (W4, block 32, acc. level 4)": "ort-nbits"}
# The 1B-shaped model has random weights: recipes that calibrate would fit noise, so it gets the
# data-free ones, and quarot-w4a8's formats with RTN weights in place of GPTQ (the same graph).
RTN_W4A8 = "quarot-w4a8-rtn-weights"
END_TO_END = {  # model id: (title, contenders: label -> recipe)
    "smollm2-135m": ("SmolLM2-135M", {**ORT_CONTENDERS, "quarot-w8a8": "quarot-w8a8", "quarot-w4a8": "quarot-w4a8",
                                      "ot-quarot-w6a6": "ot-quarot-w6a6", "ot-quarot-w4a4": "ot-quarot-w4a4"}),
    "llama-1b-shaped": ("LLaMA-3.2-1B-shaped (seeded random weights: speed and size only)",
                        {**ORT_CONTENDERS, "quarot-w8a8": "quarot-w8a8", "quarot-w4a8 (RTN weights)": RTN_W4A8,
                         "quarot-w4a4-rtn": "quarot-w4a4-rtn"}),
}


def median_seconds(run, budget: float = 1.0, least: int = 3, before=None) -> float:
    """Median wall time of ``run()`` over at least ``least`` calls and about ``budget`` seconds;
    ``before()``, if given, runs untimed before each call (its time counts against the budget)."""
    run()  # warm-up
    times, begin = [], time.perf_counter()
    while len(times) < least or time.perf_counter() - begin < budget:
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cache_evictor():
    """A function that writes a buffer twice the last-level cache (taken as 32 MiB where Linux does
    not say), so that what a call reads next comes from memory."""
    size_file = pathlib.Path("/sys/devices/system/cpu/cpu0/cache/index3/size")  # e.g. "32768K"
    size = int(size_file.read_text().strip().rstrip("K")) << 10 if size_file.exists() else 32 << 20
    buffer = np.zeros(2 * size, np.uint8)
    return lambda: buffer.__iadd__(1)


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
    """The contenders for one ``[M, k] x [k, n]`` linear layer, as ONNX models (oq ones by format)."""
    import onnx
    from onnx import numpy_helper

    from oqcompile.quant import pack_codes, pack_matmulnbits, rtn

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    models = {FP32: _model([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], ["x"],
                           [numpy_helper.from_array(weight, "w")])}
    fp32_path, dynamic_path = folder / "matmul.onnx", folder / "matmul.dynamic.onnx"
    onnx.save(models[FP32], fp32_path)
    ort_dynamic_step(str(fp32_path), str(dynamic_path))
    models[DYNAMIC] = onnx.load(dynamic_path)
    packed, scales = pack_matmulnbits(rtn(weight, 4, group=32))
    nbits = onnx.helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                                  block_size=32, accuracy_level=4)
    models[NBITS] = _model([nbits], ["x"], [numpy_helper.from_array(packed, "b"),
                                            numpy_helper.from_array(scales.astype(np.float32), "s")])
    for name, (weight_bits, activation_bits, group, activation_group) in OQ_FORMATS.items():
        quantized = rtn(weight, weight_bits, group)
        nodes = [onnx.helper.make_node("QuantizePerToken", ["x"], ["codes", "scales"], domain="oq",
                                       bits=activation_bits, group=activation_group or 0),
                 onnx.helper.make_node("QMatMul", ["codes", "scales", "w", "w_scales"], ["y"], domain="oq",
                                       bits=weight_bits, in_features=k)]
        initializers = [numpy_helper.from_array(pack_codes(quantized.codes, weight_bits), "w"),
                        numpy_helper.from_array(quantized.scales.T.astype(np.float32).copy(), "w_scales")]
        models[f"oq {name}"] = _model(nodes, ["x"], initializers)
    return models


def _sessions_per_isa(models: dict, isas: list[str]) -> dict:
    """``{(name, isa): session}``: ORT's own models once (isa ``-``), each oq model once per ISA."""
    sessions = {}
    for name, model in models.items():
        for isa in (isas if name.startswith("oq ") else ["-"]):
            os.environ["OQ_CPU_ISA"] = "" if isa == "-" else isa  # read when the kernel is created
            sessions[name, isa] = _session(model)
    os.environ.pop("OQ_CPU_ISA")
    return sessions


def per_op_linear(tokens: list[int], isas: list[str], folder: pathlib.Path) -> str:
    """One row per (shape, M, contender, ISA): ms, speed against fp32 and against ORT's faster
    quantized kernel (DynamicQuantizeMatMul or MatMulNBits) at that shape and M."""
    rows, evict = [], cache_evictor()
    for shape_name, (k, n) in LINEAR_SHAPES.items():
        sessions = _sessions_per_isa(linear_models(k, n, folder), isas)
        for m in tokens:
            x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
            times = {key: median_seconds(lambda s=s: s.run(None, {"x": x}), before=evict if m == 1 else None)
                     for key, s in sessions.items() if key[1] != "scalar" or m * k * n <= SCALAR_MACS}
            base, best_ort = times[FP32, "-"], min(times[DYNAMIC, "-"], times[NBITS, "-"])
            for (name, isa), seconds in times.items():
                rows.append([shape_name, f"{k}x{n}", m, name, isa, f"{seconds * 1e3:.3f}", f"{base / seconds:.2f}x",
                             f"{best_ort / seconds:.2f}x"])
            print(f"{shape_name} M={m}: " + ", ".join(f"{name} [{isa}] {t * 1e3:.2f} ms"
                                                      for (name, isa), t in times.items()), flush=True)
    return report.markdown_table(["layer", "K x N", "tokens M", "implementation", "oq ISA", "ms", "speed vs fp32",
                                  "speed vs ORT's faster int kernel"], rows)


def resident_step(path: str, k: int) -> int:
    """Bytes of RSS that creating a session for ``path`` and running one token add (run in a fresh process)."""
    import onnxruntime as ort

    from oqcompile.runtime import session_options

    options = session_options()
    before = rss_bytes()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros((1, k), np.float32)})
    return rss_bytes() - before


def rss_bytes() -> int:
    """This process's resident set now."""
    return int(pathlib.Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def resident_bytes(small: str, large: str, folder: pathlib.Path) -> str:
    """Resident bytes per weight of each format: the RSS a session adds (each in a fresh process)
    at the ``large`` layer shape less that at the ``small`` one, over the difference in weights
    (the session's fixed cost cancels)."""
    import onnx

    added = {}
    for shape_name in (small, large):
        k, n = LINEAR_SHAPES[shape_name]
        for name, model in linear_models(k, n, folder).items():
            path = folder / "resident.onnx"
            onnx.save(model, path)
            added[name, shape_name], _, _ = report.measure(resident_step, str(path), k)
    weights = np.prod(LINEAR_SHAPES[large]) - np.prod(LINEAR_SHAPES[small])
    rows = []
    for name in dict.fromkeys(name for name, _ in added):
        per_weight = (added[name, large] - added[name, small]) / weights
        rows.append([name, f"{added[name, large] / 2**20:.1f}", f"{per_weight:.2f}"])
        print(f"resident {name}: {per_weight:.2f} bytes per weight", flush=True)
    return report.markdown_table(["implementation", f"resident MiB at {large}",
                                  f"bytes per weight ({large} less {small})"], rows)


def duquant_model(size: int):
    """x -> x T for a DuQuant transform of ``size`` channels as ``duquant`` emits it (blocks of up
    to 128; its time does not depend on the fitted values, so T is fitted with no greedy steps)."""
    import onnx_ir as ir

    from oqcompile.block_rotation import block_size, fit_block_rotation
    from oqcompile.rotation import insert_block_rotation

    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["tokens", size]))
    identity = ir.node("Identity", [x])
    graph = ir.Graph([x], [], nodes=[identity], opset_imports={"": 21}, name="bench")
    sample = np.random.default_rng(3).standard_normal((16, size))
    graph.outputs.append(insert_block_rotation(identity.outputs[0], fit_block_rotation(
        sample, block_size(size, 128), 0, seed=0), "duquant"))
    return ir.serde.serialize_model(ir.Model(graph, ir_version=10))


def per_op_hadamard(rows_count: int, isas: list[str]) -> str:
    import onnx
    from onnx import numpy_helper

    from oqcompile.block_rotation import block_size
    from oqcompile.hadamard import dense_factor, hadamard

    rows = []
    for size in HADAMARD_SIZES:
        h_k = dense_factor(size)
        k = 1 if h_k is None else len(h_k)
        dense = _model([onnx.helper.make_node("MatMul", ["x", "h"], ["y"])], ["x"],
                       [numpy_helper.from_array(hadamard(size).astype(np.float32), "h")])
        inputs, initializers = ["x"], []
        if h_k is not None:
            inputs.append("f")
            initializers.append(numpy_helper.from_array(h_k.astype(np.float32), "f"))
        fast = _model([onnx.helper.make_node("Hadamard", inputs, ["y"], domain="oq")], ["x"], initializers)
        x = np.random.default_rng(2).standard_normal((rows_count, size)).astype(np.float32)
        dense_s = median_seconds(lambda s=_session(dense): s.run(None, {"x": x}))
        duquant_s = median_seconds(lambda s=_session(duquant_model(size)): s.run(None, {"x": x}))
        copy_s = median_seconds(lambda: x.copy())
        for isa in isas:
            os.environ["OQ_CPU_ISA"] = isa
            fast_s = median_seconds(lambda s=_session(fast): s.run(None, {"x": x}))
            rows.append([size, f"{k}x{size // k}", isa, f"{dense_s * 1e3:.3f}", f"{fast_s * 1e3:.3f}",
                         f"{dense_s / fast_s:.1f}x", f"{fast_s / copy_s:.1f}x",
                         f"{duquant_s * 1e3:.3f} ({block_size(size, 128)})"])
            print(f"Hadamard {size} [{isa}]: dense {dense_s * 1e3:.2f} ms, oq {fast_s * 1e3:.2f} ms, "
                  f"copy {copy_s * 1e3:.2f} ms, DuQuant T {duquant_s * 1e3:.2f} ms", flush=True)
        os.environ.pop("OQ_CPU_ISA")
    return report.markdown_table(["n", "H_K x H_m", "oq ISA", "dense MatMul ms", "oq.Hadamard ms", "oq speed-up",
                                  "oq time / NumPy copy time", "DuQuant T ms (block)"], rows)


# --- end to end --------------------------------------------------------------------------

def decode_steps_after(model, tokens: np.ndarray, prefill: int, steps: int):
    """Prefill ``prefill`` tokens, then yield once per decode step, after running it."""
    from oqcompile.evaluate import feeds

    past_names = [i.name for i in model.get_inputs()][2:]
    outputs = model.run(None, feeds(model, tokens[None, :prefill].astype(np.int64)))
    for step in range(steps):
        length = prefill + step + 1
        inputs = {"input_ids": tokens[None, length - 1:length].astype(np.int64),
                  "attention_mask": np.ones((1, length), np.int64), **dict(zip(past_names, outputs[1:]))}
        start = time.perf_counter()
        outputs = model.run(None, inputs)
        yield time.perf_counter() - start


def end_to_end_step(path: str, prefill_lengths: tuple[int, ...], decode_steps: int, with_perplexity: bool) -> dict:
    """One model in this (fresh) process: its RSS right after creating the session (Python and ORT
    included), the latencies of prefills and per-token decode, and (``with_perplexity``) its
    perplexity on the first ``PERPLEXITY_TOKENS`` of the evaluation book."""
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import feeds, perplexity, session

    tokens = book_tokens(EVALUATION_BOOK, MODEL)  # SmolLM2's ids: valid in the 1B shape's larger vocabulary too
    model = session(path)
    result = {"resident after load": rss_bytes()}
    for length in prefill_lengths:
        ids = tokens[None, :length].astype(np.int64)
        result[f"prefill {length}"] = median_seconds(lambda: model.run(None, feeds(model, ids)), budget=3.0)
    result["decode"] = statistics.median(decode_steps_after(model, tokens, 512, decode_steps))
    if with_perplexity:
        result["perplexity"] = perplexity(model, tokens[:PERPLEXITY_TOKENS], seq=512, progress=False).perplexity
    return result


def op_profile_step(path: str, length: int, decode_steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds per op type of one ``length``-token prefill (after a warm-up) and of one
    decode step after it (mean of ``decode_steps``), from ORT's node profile."""
    import collections
    import json

    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import feeds, session

    tokens = book_tokens(EVALUATION_BOOK, MODEL)
    ids = tokens[None, :length].astype(np.int64)
    with tempfile.TemporaryDirectory() as scratch:
        model = session(path, profile_prefix=str(pathlib.Path(scratch) / "profile"))
        model.run(None, feeds(model, ids))
        model.run(None, feeds(model, ids))
        for _ in decode_steps_after(model, tokens, length, decode_steps):
            pass
        events = json.loads(pathlib.Path(model.end_profiling()).read_text())
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")
    # runs: a warm-up, two profiled prefills, the decode's own prefill, then the decode steps
    prefill, decode = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            if runs[1][0] <= event["ts"] < runs[3][0]:
                prefill[event["args"]["op_name"]] += event["dur"] / 2e3  # µs over two runs -> ms per run
            elif event["ts"] >= runs[4][0]:
                decode[event["args"]["op_name"]] += event["dur"] / 1e3 / decode_steps
    return dict(prefill), dict(decode)


def profile_table(profiles: dict[str, dict[str, float]], what: str, shown: int = 8) -> str:
    """Op types (the ``shown`` costliest of each model) x models, ms per ``what``."""
    ops = []
    for per_op in profiles.values():
        ops += [op for op, _ in sorted(per_op.items(), key=lambda item: -item[1])[:shown] if op not in ops]
    rows = [[op] + [f"{per_op.get(op, 0.0):.1f}" for per_op in profiles.values()] for op in ops]
    rows.append(["all nodes"] + [f"{sum(per_op.values()):.1f}" for per_op in profiles.values()])
    return report.markdown_table([f"op type (ms per {what}, profiled)"] + list(profiles), rows)


def rtn_w4a8_recipe(folder: pathlib.Path) -> str:
    """A TOML file of ``quarot-w4a8`` with RTN weights in place of GPTQ (see ``RTN_W4A8``)."""
    from oqcompile.passes.quantize_weights import QuantizeWeights
    from oqcompile.recipes import RECIPES, recipe_toml

    steps = [(cls.name, {**params, "method": "rtn"} if cls is QuantizeWeights else params)
             for cls, params in RECIPES["quarot-w4a8"][1]]
    path = folder / f"{RTN_W4A8}.toml"
    path.write_text(recipe_toml(steps))
    return str(path)


def end_to_end(folder: pathlib.Path, model_id: str, calib_tokens: int, prefill_lengths: tuple[int, ...],
               decode_steps: int) -> str:
    from oqcompile.models.export import export_to_file

    _, contenders = END_TO_END[model_id]
    with_perplexity = model_id == MODEL  # the other models have random weights
    source = folder / f"{model_id}.kv.onnx"
    report.measure(export_to_file, model_id, str(source), kv_cache=True)
    rows, base, prefill_profiles, decode_profiles = [], None, {}, {}
    for label, recipe in contenders.items():
        path = source
        if recipe == "ort-dynamic":
            path = folder / f"{model_id}.ort-dynamic.onnx"
            report.measure(ort_dynamic_step, str(source), str(path))
        elif recipe == "ort-nbits":
            path = folder / f"{model_id}.ort-nbits.onnx"
            report.measure(report.ort_nbits_step, str(source), str(path), 32, 4)
        elif recipe is not None:
            path = folder / f"{model_id}.{recipe}.onnx"
            recipe = rtn_w4a8_recipe(folder) if recipe == RTN_W4A8 else recipe
            report.measure(compile_step, str(source), recipe, str(path), calib_tokens)
        times, _, peak = report.measure(end_to_end_step, str(path), prefill_lengths, decode_steps, with_perplexity)
        (prefill_profiles[label], decode_profiles[label]), _, _ = report.measure(
            op_profile_step, str(path), prefill_lengths[0], decode_steps)
        base = base or times
        size = file_mib(path)
        base_size = file_mib(source)
        cells = [label]
        for key in [f"prefill {n}" for n in prefill_lengths] + ["decode"]:
            cells.append(f"{times[key] * 1e3:.0f} ms ({base[key] / times[key]:.2f}x)")
        resident = times["resident after load"] / 2**30
        if with_perplexity:
            cells.append(f"{times['perplexity'] / base['perplexity']:.4f}")
        cells += [f"{size:.0f} MiB ({size / base_size:.2f}x)",
                  f"{resident:.2f} GiB ({resident / (base['resident after load'] / 2**30):.2f}x)", f"{peak:.2f} GiB"]
        rows.append(cells)
        print(" | ".join(cells), flush=True)
    header = (["model"] + [f"prefill {n} tokens" for n in prefill_lengths] + ["decode / token (after 512)"]
              + ([f"perplexity x P ({PERPLEXITY_TOKENS} tokens)"] if with_perplexity else [])
              + ["file size", "resident after load", "peak RSS"])
    return (report.markdown_table(header, rows) + "\n\nWhere the time goes (ORT's node profile):\n\n"
            + profile_table(prefill_profiles, f"{prefill_lengths[0]}-token prefill") + "\n\n"
            + profile_table(decode_profiles, "decode step after it"))


def main() -> None:
    from oqcompile.runtime import cpu_isas

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("per-op", "end-to-end", "all"), default="all")
    parser.add_argument("--tokens", default="1,16,512,2048", help="token counts M of the per-op linear layers")
    parser.add_argument("--isas", default=",".join(cpu_isas()),
                        help="oq CPU instruction sets to time (default: every one this CPU has)")
    parser.add_argument("--calib-tokens", type=int, default=4096,
                        help="calibration tokens for the compiled models (speed does not depend on them)")
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--models", default=",".join(END_TO_END),
                        help=f"end-to-end models, from {', '.join(END_TO_END)} (default: all)")
    args = parser.parse_args()
    isas = args.isas.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        folder = pathlib.Path(scratch)
        if args.part in ("per-op", "all"):
            body = (f"oq instruction sets timed: {', '.join(isas)} (this CPU has {', '.join(cpu_isas())}); "
                    f"scalar only below {SCALAR_MACS:.0e} multiply-adds per call.\n\n"
                    "### Linear layers (float in, float out), per call\n\n"
                    + per_op_linear([int(m) for m in args.tokens.split(",")], isas, folder)
                    + "\n\n### Resident memory per weight (a fresh process: session created, one token run)\n\n"
                    + resident_bytes("SmolLM2 q_proj", "LLaMA-7B up_proj", folder)
                    + "\n\n### oq.Hadamard against a dense MatMul and a NumPy copy (and the DuQuant transform), "
                    "512 rows\n\n"
                    + per_op_hadamard(512, isas))
            report.write_section("speed-per-op", "CPU speed per op (benchmarks/speed.py --part per-op)", body)
        if args.part in ("end-to-end", "all"):
            body = "\n\n".join(
                f"### End to end, {END_TO_END[model_id][0]}, with KV cache (batch 1)\n\n"
                + end_to_end(folder, model_id, args.calib_tokens, (512, 2048), args.decode_steps)
                for model_id in args.models.split(","))
            report.write_section("speed", "CPU speed end to end (benchmarks/speed.py --part end-to-end)", body)


if __name__ == "__main__":
    main()
