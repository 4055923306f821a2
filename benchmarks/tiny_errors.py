"""The numbers the tiny-model tests bound: the logit error of every quantization recipe, lowered
against portable, the 4-bit KV cache, MatMulNBits against DequantizeLinear, the checks that
must hold to float rounding, the exports against PyTorch, the GenAI builder's graphs, and
oqcompile.quant on synthetic data.

The exports, calibration (32 rows of 32 random tokens, seed 5) and input ids (2 x 24 random
tokens, seed 0) are those of tests/test_quantize.py, so every number is the one the test
computes; all are deterministic (seeded). The error of logits ``y`` against ``x`` is
``max|y - x| / max|x|`` (``report.relative_error``). Tables are printed and written to
docs/RESULTS.md.

    .venv/bin/python benchmarks/tiny_errors.py
"""

from __future__ import annotations

import itertools
import pathlib
import tempfile

import numpy as np

import report
from oqcompile.models import TORCH_EXPORTERS
from report import relative_error

MODELS = ("tiny-llama", "tiny-opt")
FAMILIES = ("tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-opt", "tiny-phi3")
GENAI_FAMILIES = ("tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-phi3", "tiny-gemma2")  # the builder has no OPT
EVERY_FAMILY = (*FAMILIES, "tiny-gemma2")
FILE_EXPORTERS = (*TORCH_EXPORTERS, "optimum")  # the exporters that write one ONNX file
IDS = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)


def logits(path: pathlib.Path, ids: np.ndarray = IDS, optimization=None) -> np.ndarray:
    """ORT logits of ``path`` (by default on the tests' ids)."""
    return report.logits(path, ids, optimization)


class Workspace:
    """Exports and compiled files in one temporary folder."""

    def __init__(self, folder: pathlib.Path):
        from oqcompile.calibrate import CalibrationData

        self.folder = folder
        self.calibration = CalibrationData(np.random.default_rng(5).integers(0, 256, (32, 32)), "random tokens")
        self.exports: dict[tuple, pathlib.Path] = {}
        self.count = 0

    def export(self, model_id: str, exporter: str = "dynamo", **options) -> pathlib.Path:
        from oqcompile.models.export import export_to_file

        key = (model_id, exporter, *sorted(options.items()))
        if key not in self.exports:
            path = self.path("export")
            if exporter == "genai":  # a GenAI folder of its own (genai_config.json names the file)
                path.with_suffix("").mkdir()
                path = path.with_suffix("") / "model.onnx"
            self.exports[key] = export_to_file(model_id, path, exporter=exporter, **options)
        return self.exports[key]

    def compile(self, source: pathlib.Path, recipe, portable: bool = False, seed: int = 0) -> pathlib.Path:
        """``recipe``: a recipe name or a list of ``(pass name, parameters)``."""
        from oqcompile import compile_file
        from oqcompile.recipes import recipe_toml

        if not isinstance(recipe, str):
            toml = self.path("recipe", ".toml")
            toml.write_text(recipe_toml(recipe))
            recipe = str(toml)
        return compile_file(source, self.path("compiled"), recipe, seed=seed, calibration=self.calibration,
                            portable=portable).target

    def ort_optimized(self, source: pathlib.Path) -> pathlib.Path:
        """``source`` as ORT's session optimizer saves it (ORT_ENABLE_EXTENDED)."""
        import onnxruntime as ort

        if ("ort-optimized", source) not in self.exports:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(self.path("ort-optimized"))
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            self.exports["ort-optimized", source] = pathlib.Path(options.optimized_model_filepath)
        return self.exports["ort-optimized", source]

    def path(self, stem: str, suffix: str = ".onnx") -> pathlib.Path:
        self.count += 1
        return self.folder / f"{stem}-{self.count}{suffix}"


def w4a16_as_dequantize_linear() -> list[tuple[str, dict]]:
    """``quarot-w4a16-gptq`` with its int4 weights written as DequantizeLinear, not MatMulNBits."""
    from oqcompile.passes.quantize_weights import QuantizeWeights
    from oqcompile.recipes import RECIPES

    return [(cls.name, {**params, "format": "qdq"} if cls is QuantizeWeights else params)
            for cls, params in RECIPES["quarot-w4a16-gptq"][1]]


def recipe_errors(work: Workspace) -> list[list]:
    """Per model and quantization recipe: portable against fp, lowered against portable."""
    from oqcompile.recipes import RECIPES

    rows = []
    for model_id, recipe in itertools.product(MODELS, [name for name in RECIPES if "-w" in name]):
        source = work.export(model_id)
        portable = logits(work.compile(source, recipe, portable=True))
        lowered = logits(work.compile(source, recipe))
        moved = np.abs(lowered - portable) / np.abs(portable).max()
        rows.append([model_id, recipe, f"{relative_error(portable, logits(source)):.4f}",
                     f"{np.median(moved):.1e}", f"{moved.max():.1e}"])
        print(*rows[-1], flush=True)
    return rows


LM_HEAD_INT8 = [("quantize_weights", {"bits": 8, "lm_head_bits": 8}), ("insert_qdq", {"bits": 8, "lm_head_bits": 8})]


def single_errors(work: Workspace) -> list[list]:
    """The other quantized checks of tests/test_quantize.py, one number each."""
    import onnxruntime as ort

    llama = work.export("tiny-llama")
    kv_source = work.export("tiny-llama", kv_cache=True)
    prefill = IDS[:, :-1]
    kv4 = relative_error(logits(work.compile(kv_source, "quarot-w4a4kv4-gptq"), prefill), logits(kv_source, prefill))
    nbits = logits(work.compile(llama, "quarot-w4a16-gptq"))
    dequantize_linear = work.compile(llama, w4a16_as_dequantize_linear())
    unfused = logits(dequantize_linear, optimization=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    per_tensor = work.compile(llama, [("insert_qdq", {"bits": 8, "granularity": "per_tensor"})])
    a4_groups = work.compile(llama, [("quantize_weights", {"bits": 4}), ("insert_qdq", {"bits": 4, "group": 16})],
                             portable=True)
    tied = work.export("tiny-mistral")
    lm_head8 = work.compile(tied, LM_HEAD_INT8)
    embedding8 = work.compile(llama, [("quantize_embedding", {"group": 32})])
    return [
        ["`test_kv4_quantizes_the_cache`", "tiny-llama (KV cache), quarot-w4a4kv4-gptq, prefill against fp",
         f"{kv4:.4f}"],
        ["`test_static_per_tensor_activations`", "tiny-llama, static per-tensor int8 activations against fp",
         f"{relative_error(logits(per_tensor), logits(llama)):.4f}"],
        ["`test_activation_groups_cut_the_int4_activation_error`", "tiny-llama, naive-w4a4 with token scales per "
         "16 channels (portable) against fp", f"{relative_error(logits(a4_groups), logits(llama)):.4f}"],
        ["`test_lm_head_bits_quantize_a_tied_lm_head`", "tiny-mistral (tied lm_head), W8A8 with an int8 lm_head "
         "(lowered) against fp", f"{relative_error(logits(lm_head8), logits(tied)):.4f}"],
        ["`test_quantize_embedding_stores_int8_rows`", "tiny-llama, int8 token embedding (blocks of 32) against fp",
         f"{relative_error(logits(embedding8), logits(llama)):.4f}"],
        ["`test_w4a16_uses_native_matmulnbits`", "tiny-llama, quarot-w4a16-gptq (MatMulNBits) against the same "
         "recipe written as DequantizeLinear, run with ORT graph optimizations off", f"{relative_error(nbits, unfused):.1e}"],
        ["", "the same, DequantizeLinear run with ORT's default optimizations (ORT fuses DequantizeLinear + MatMul "
         "into MatMulNBits with int8 activations)", f"{relative_error(nbits, logits(dequantize_linear)):.1e}"],
    ]


def float_rounding_errors(work: Workspace) -> list[list]:
    """Checks that must hold to float rounding: the worst error over each test's cases."""
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    rotations = ("fuse_norms", "rotate_residual", "rotate_heads", "rotate_qk", "online_hadamard", "rotate")
    passes = max(relative_error(logits(work.compile(work.export(m), r, seed=7)), logits(work.export(m)))
                 for m, r in itertools.product(FAMILIES, rotations))
    folding = max(relative_error(logits(work.compile(work.export(m), [(p, {})])), logits(work.export(m)))
                  for m, p in itertools.product(("tiny-llama", "tiny-opt", "tiny-qwen2"), ("outliertune", "smoothquant")))
    after_rotation = [("fuse_norms", {}), ("rotate_residual", {}), ("online_hadamard", {}), ("outliertune", {"bits": 4})]
    outliertune = max(relative_error(logits(work.compile(work.export(m), r)), logits(work.export(m))) for m, r in (
        ("tiny-mistral", after_rotation), ("tiny-qwen2", [("outliertune", {"bits": 4, "prescale": False})])))
    rotated = [("fuse_norms", {}), ("rotate_residual", {}), ("rotate_heads", {}), ("online_hadamard", {})]
    duquant = max(relative_error(logits(work.compile(work.export(m), [*(rotated if r else []), ("duquant", {"block": 16})],
                                                     portable=p)), logits(work.export(m)))
                  for m, r, p in itertools.product(("tiny-llama", "tiny-qwen2", "tiny-phi3", "tiny-opt"), (False, True),
                                                   (True, False)))
    grouped_int4 = [("quantize_weights", {"bits": 4, "group": 32}), ("insert_qdq", {"bits": 8})]
    optimizations = 0.0
    for recipe, portable in itertools.product(("quarot-w4a4-gptq", "outliertune-w6a6", "naive-w8a8", grouped_int4),
                                              (True, False)):
        path = work.compile(work.export("tiny-llama"), recipe, portable=portable)
        optimizations = max(optimizations, relative_error(logits(path, optimization=level.ORT_ENABLE_ALL),
                                                          logits(path, optimization=level.ORT_DISABLE_ALL)))
    padded = padded_kv_error(work)
    post_norm = max(relative_error(logits(work.compile(work.export("tiny-gemma2"), "rotate", portable=p)),
                                   logits(work.export("tiny-gemma2"))) for p in (True, False))
    return [
        ["`test_recipe_keeps_logits`", "rotation recipes on every family against fp (lowered: `fuse_ort` "
         "included)", f"{passes:.1e}"],
        ["`test_post_norm_blocks_decline_r1_and_keep_logits`", "tiny-gemma2, rotate (R1 declined; R2-R4) against "
         "fp, portable and lowered", f"{post_norm:.1e}"],
        ["`test_fused_kv_cache_model_keeps_left_padded_batches`",
         "rotate + fuse_ort, KV cache, left-padded batch: prefill and decode at real tokens", f"{padded:.1e}"],
        ["`test_scale_folding_alone_keeps_logits`", "OutlierTune / SmoothQuant without quantization",
         f"{folding:.1e}"],
        ["`test_outliertune_after_rotation_keeps_logits`, `test_symmetrization_alone_keeps_logits_and_per_token_inputs`",
         "OutlierTune (bits 4) after rotation, symmetrization alone", f"{outliertune:.1e}"],
        ["`test_duquant_keeps_the_float_function`", "duquant (blocks of 16) alone and after R1, R2, R4 on "
         "tiny-llama, -qwen2, -phi3, -opt, portable and lowered", f"{duquant:.1e}"],
        ["`test_numerics_survive_ort_graph_optimizations`", "ORT_ENABLE_ALL against ORT_DISABLE_ALL",
         f"{optimizations:.1e}"],
    ]


def genai_errors(work: Workspace) -> list[list]:
    """tests/test_genai_inputs.py: graphs of the ONNX Runtime GenAI model builder."""
    from oqcompile import modelio
    from oqcompile.passes.split_skip_norms import SplitSkipNorms

    qwen2 = work.export("tiny-qwen2", "genai")
    model = modelio.load(qwen2)
    SplitSkipNorms()(model)
    split = relative_error(logits(modelio.save(model, work.path("split"))), logits(qwen2))
    rotate = max(relative_error(logits(work.compile(work.export(m, "genai"), "rotate", portable=p)),
                                logits(work.export(m, "genai")))
                 for m, p in itertools.product(GENAI_FAMILIES, (True, False)))
    rows = [["`test_split_skip_norms_alone_keeps_logits`", "tiny-qwen2, skip norms split into Add + norm",
             f"{split:.1e}"],
            ["`test_rotate_keeps_genai_logits`", "rotate on every family the builder writes, portable and "
             "lowered, against the export", f"{rotate:.1e}"]]
    for model_id in GENAI_FAMILIES:
        source = work.export(model_id, "genai")
        worst = max(relative_error(logits(work.compile(source, "quarot-w8a8", portable=p)), logits(source))
                    for p in (True, False))
        rows.append(["`test_w8a8_on_genai_graph_runs_lowered_and_portable`" if model_id == GENAI_FAMILIES[0] else "",
                     f"{model_id}, quarot-w8a8 against the export (worst of portable and lowered)", f"{worst:.4f}"])
    return rows


def exporter_errors(work: Workspace) -> list[list]:
    """tests/test_file_exporters.py: every family as each exporter that writes one file spells it (Optimum's
    with past, unless said), at opsets 18 and 23 (one sequence), and as ORT's session optimizer saves it."""
    def sources(model_id: str) -> dict[str, pathlib.Path]:
        exports = {e: work.export(model_id, e, **({"kv_cache": True} if e == "optimum" else {}))
                   for e in FILE_EXPORTERS}
        return {**exports, "ORT-optimized": work.ort_optimized(exports["dynamo"])}

    def errors(source: pathlib.Path, recipe: str, ids: np.ndarray = IDS) -> list[float]:
        return [relative_error(logits(work.compile(source, recipe, portable=p), ids), logits(source, ids))
                for p in (True, False)]

    opsets = {m: [work.export(m, opset=o) for o in (18, 23)] for m in EVERY_FAMILY}
    rotate = max(max(error for s in sources(m).values() for error in errors(s, "rotate")) for m in EVERY_FAMILY)
    rotate_opsets = max(error for m in EVERY_FAMILY for s in opsets[m] for error in errors(s, "rotate", IDS[:1]))
    no_cache = work.export("tiny-qwen2", "optimum")
    rows = [["`test_export_maps_rotates_and_quantizes`, `test_ort_optimized_graph`", "rotate on every family and "
             "source, portable and lowered, against the source", f"{rotate:.1e}"],
            ["`test_opsets_18_and_23`", "the same at opsets 18 and 23 (first row of the ids)", f"{rotate_opsets:.1e}"],
            ["`test_optimum_graph_without_cache_rotates`", "tiny-qwen2 from Optimum without past, rotate (lowered)",
             f"{relative_error(logits(work.compile(no_cache, 'rotate')), logits(no_cache)):.1e}"]]
    for model_id in EVERY_FAMILY:
        w8a8 = [error for s in sources(model_id).values() for error in errors(s, "quarot-w8a8")]
        rows.append(["`test_export_maps_rotates_and_quantizes`, `test_ort_optimized_graph`"
                     if model_id == EVERY_FAMILY[0] else "",
                     f"{model_id}, quarot-w8a8 against the source: worst (best) of {', '.join(sources(model_id))}, "
                     "portable and lowered", f"{max(w8a8):.4f} ({min(w8a8):.4f})"])
    for model_id in EVERY_FAMILY:
        w8a8 = [error for s in opsets[model_id] for error in errors(s, "quarot-w8a8", IDS[:1])]
        rows.append(["`test_opsets_18_and_23`" if model_id == EVERY_FAMILY[0] else "",
                     f"{model_id}, quarot-w8a8 at opsets 18 and 23 (first row of the ids), worst", f"{max(w8a8):.4f}"])
    return rows


def padded_kv_error(work: Workspace) -> float:
    """tests/test_fuse_ort.py: ids 2 x 12 (seed 3), the second sequence left-padded by 5."""
    from oqcompile import evaluate

    source = work.export("tiny-llama", kv_cache=True)
    ids = np.random.default_rng(3).integers(0, 256, (2, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :5] = 0
    expected_prefill, expected_last = evaluate.prefill_and_decode(evaluate.session(source), ids, mask)
    prefill, last = evaluate.prefill_and_decode(evaluate.session(work.compile(source, "rotate")), ids, mask)
    if not (np.isfinite(prefill).all() and np.isfinite(last).all()):
        return float("nan")
    real = mask[:, :-1].astype(bool)
    return max(relative_error(prefill[real], expected_prefill[real]), relative_error(last, expected_last))


def export_errors(work: Workspace) -> list[list]:
    """tests/test_export.py: the exports against PyTorch, on its ids (2 x 12 random tokens, seed 1)."""
    import torch

    from oqcompile.models import load_torch_model

    ids = np.random.default_rng(1).integers(0, 256, (2, 12)).astype(np.int64)

    def torch_logits(model_id: str) -> np.ndarray:
        with torch.no_grad():
            return load_torch_model(model_id)(torch.from_numpy(ids)).logits.numpy()

    fp32 = max(relative_error(logits(work.export(m), ids), torch_logits(m)) for m in FAMILIES)
    half = work.export("tiny-llama", dtype="fp16")
    fp16 = logits(half, ids).astype(np.float32)
    exports = [work.export("tiny-llama", e, dtype="fp16", **({"kv_cache": True} if e == "optimum" else {}))
               for e in FILE_EXPORTERS]
    rotated = max(relative_error(logits(work.compile(source, "rotate", seed=1, portable=p), ids).astype(np.float32),
                                 logits(source, ids).astype(np.float32))
                  for source, p in itertools.product(exports, (False, True)))
    return [
        ["`test_ort_matches_pytorch`", "fp32 export of every family against PyTorch", f"{fp32:.1e}"],
        ["`test_fp16_export_matches_pytorch`", "tiny-llama fp16 export against PyTorch fp32",
         f"{relative_error(fp16, torch_logits('tiny-llama')):.1e}"],
        ["`test_rotate_on_fp16_export`", f"tiny-llama fp16 export ({', '.join(FILE_EXPORTERS)}), rotate (lowered, portable) "
         "against the export", f"{rotated:.1e}"],
        ["`test_shaped_export_draws_its_weights_when_saved_and_rotates`",
         "llama-1b-shaped, 2 layers, fp16 (weightless export), rotate against the export",
         f"{shaped_rotate_error(work):.1e}"],
    ]


def shaped_rotate_error(work: Workspace) -> float:
    """tests/test_export.py's weightless 2-layer 1B-shaped export, rotated, on its ids."""
    from oqcompile import modelio
    from oqcompile.models.shaped import export_shaped

    source = modelio.save(export_shaped("llama-1b-shaped", dtype="fp16", layers=2), work.path("shaped"))
    rotated = work.compile(source, "rotate", portable=True)
    ids = np.random.default_rng(0).integers(0, 128256, (1, 8)).astype(np.int64)
    return relative_error(logits(rotated, ids).astype(np.float32), logits(source, ids).astype(np.float32))


def quant_ratios() -> list[list]:
    """tests/test_quant.py: the error ratios of its quantizers on its synthetic (seeded) data."""
    from oqcompile import quant

    weight = np.random.default_rng(0).standard_t(3, (256, 32))
    norm_error = lambda q: (np.abs(q.dequantize() - weight) ** quant.CLIP_NORM).sum()
    rows = [["`test_clip_search_lowers_weight_error`", "int4 RTN with clip search / without (error norm)",
             f"{norm_error(quant.rtn(weight, 4, clip_search=True)) / norm_error(quant.rtn(weight, 4)):.3f}"]]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 128)) @ rng.standard_normal((128, 128))
    x[:, :4] *= 20
    weight = 0.05 * rng.standard_normal((128, 64))
    output_error = lambda q: np.linalg.norm(x @ q.dequantize() - x @ weight)
    for bits in (4, 6, 8):
        ratio = output_error(quant.gptq(weight, x.T @ x, bits)) / output_error(quant.rtn(weight, bits))
        rows.append(["`test_gptq_beats_rtn_on_outlier_inputs`", f"int{bits} GPTQ / RTN (output error)", f"{ratio:.3f}"])
    grouped = quant.gptq(weight, x.T @ x, 4, group=32, act_order=True, clip_search=True)
    rows.append(["", "int4 groups of 32: act-order GPTQ with clip search / RTN",
                 f"{output_error(grouped) / output_error(quant.rtn(weight, 4, group=32)):.3f}"])
    rng = np.random.default_rng(7)
    x, weight = rng.standard_t(2, (512, 64)), rng.standard_normal((64, 32))
    clip, error = quant.search_activation_clip(x, weight, 4)
    unclipped = np.linalg.norm((quant.fake_quantize_per_token(x, 4) - x) @ weight) / np.linalg.norm(x @ weight)
    rows.append(["`test_activation_clip_search_beats_no_clip_on_heavy_tails`",
                 f"int4 per-token activations clipped at {clip} / unclipped", f"{error / unclipped:.3f}"])
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Workspace(pathlib.Path(folder))
        recipes = report.markdown_table(["model", "recipe", "error vs fp (portable)", "lowered vs portable, median",
                                         "lowered vs portable, max"], recipe_errors(work))
        singles = report.markdown_table(["test", "what", "error"], single_errors(work))
        rounding = report.markdown_table(["test", "what", "worst error"], float_rounding_errors(work))
        exports = report.markdown_table(["test", "what", "worst error"], export_errors(work))
        genai = report.markdown_table(["test", "what", "error"], genai_errors(work))
        exporters = report.markdown_table(["test", "what", "error"], exporter_errors(work))
    ratios = report.markdown_table(["test", "what", "ratio"], quant_ratios())
    print(recipes, singles, rounding, exports, genai, exporters, ratios, sep="\n\n")
    report.write_section("tiny-errors", "Tiny models and synthetic data: the numbers the tests bound", f"""
Logits of the tiny models (2 x 24 random token ids, seed 0) through ORT CPU; the error of
logits `y` against `x` is max|y - x| / max|x|. Quantization recipes calibrate on 32 rows of
32 random token ids (seed 5) and compile with seed 0, as tests/test_quantize.py does;
"lowered vs portable" is |lowered - portable| / max|portable| over all logits. Seeded and
deterministic: the tests bound these numbers with a margin (see the tests).

{recipes}

{singles}

Checks that hold to float rounding (worst case over each test's models, recipes and exporters):

{rounding}

Exports against PyTorch (tests/test_export.py, its ids: 2 x 12 random token ids, seed 1):

{exports}

Graphs written by the ONNX Runtime GenAI model builder (`oqcompile export --exporter genai`: skip norms,
packed QKV into GroupQueryAttention with RoPE inside), on the ids above:

{genai}

Every family as each exporter that writes one ONNX file spells it: torch's dynamo exporter with and
without its optimizer and at opsets 18 and 23, TorchScript (legacy), Hugging Face Optimum's exporter
(`oqcompile export --exporter optimum --kv-cache`: TorchScript under Optimum's wrappers, `position_ids`
and the KV cache as inputs), and the dynamo export as ONNX Runtime's session optimizer saves it
(`ORT_ENABLE_EXTENDED`), on the ids above:

{exporters}

The quantizers of oqcompile.quant on the seeded synthetic data of tests/test_quant.py:

{ratios}
""")


if __name__ == "__main__":
    main()
