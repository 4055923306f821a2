"""Per-layer output error of a compiled recipe, and the activations its float part makes.

For every block linear, with ``X`` its float input (sampled token rows, run through the
recipe's float part: the passes before its first quantizing one, i.e. rotations and scale
folding, exact in float), ``W`` its float weight and ``Ŵ``, ``Q(X)`` what the compiled recipe
uses:

    weight error      ‖X (Ŵ - W)‖ / ‖X W‖
    activation error  ‖(Q(X) - X) W‖ / ‖X W‖
    total error       ‖Q(X) Ŵ - X W‖ / ‖X W‖

``Q`` is read from the compiled graph's QDQ metadata (bits, granularity, clip ratio). The
recipe is compiled again, portable and in memory, from the original model with the seed and
calibration it was made with, so the file compared may be lowered. The per-channel absolute
maxima of every linear's input before (the original model) and after the float part show
what the rotations and scalings did to the outlier channels.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from oqcompile import modelio
from oqcompile.calibrate import ActivationStats, CalibrationData, collect_statistics
from oqcompile.compiler import optimize, run_passes
from oqcompile.passes.base import TransformerPass
from oqcompile.recipes import build_recipe
from oqcompile.structure import Linear, analyze

__all__ = ["LayerErrors", "float_part", "measure", "quantizer_of"]

QUANTIZING_PASSES = ("quantize_weights", "insert_qdq", "quantize_kv")


def float_part(recipe: str, seed: int, calibration: CalibrationData | None) -> list[TransformerPass]:
    """The recipe's passes before its first quantizing one (everything exact in float)."""
    passes = build_recipe(recipe, seed, calibration)
    cut = next((i for i, p in enumerate(passes) if p.name in QUANTIZING_PASSES), len(passes))
    return passes[:cut]


def quantizer_of(linear: Linear):
    """``x -> Q(x)`` as the compiled graph's activation QDQ in front of ``linear`` does it."""
    from oqcompile import quant
    from oqcompile.qdq import QDQTag

    producer = linear.input.producer()
    tag = QDQTag.read(producer) if producer is not None and producer.op_type == "DequantizeLinear" else None
    if tag is None:
        return lambda x: x
    bits, granularity, clip = tag.bits, tag.granularity, tag.clip
    if granularity == "prescaled":
        return lambda x: np.clip(np.rint(x), *quant.qrange(bits))
    if granularity == "per_token":
        return lambda x: quant.fake_quantize_per_token(x, bits, clip, tag.group)
    raise ValueError(f"no NumPy model of {granularity} QDQ")


@dataclasses.dataclass
class LayerErrors:
    errors: list[dict]  # {"layer", "weight", "activation", "total"} per block linear, in graph order
    absmax_before: dict[str, np.ndarray]  # linear name -> per-channel absmax of its input, original model
    absmax_after: dict[str, np.ndarray]  # the same after the recipe's float part


def measure(source: str | os.PathLike, recipe: str, seed: int, calibration: CalibrationData | None,
            measured: CalibrationData, sample_tokens: int = 2048, progress: bool = False) -> LayerErrors:
    """The errors and input maxima of the module doc, on the token windows ``measured``."""
    quantized = modelio.load(source)
    optimize(quantized, recipe, seed=seed, calibration=calibration, portable=True, progress=progress)
    reference = modelio.load(source)  # measured as loaded, then turned into the recipe's float part
    original_linears = {lin.name: lin for lin in analyze(reference).linears()}
    before = collect_statistics(reference, [lin.input for lin in original_linears.values()], measured,
                                progress=progress)
    absmax_before = _absmax(before, original_linears)
    run_passes(reference, float_part(recipe, seed, calibration))
    float_linears = {lin.name: lin for lin in analyze(reference).linears()}
    after = collect_statistics(reference, [lin.input for lin in float_linears.values()], measured,
                               sample_tokens=sample_tokens, progress=progress)
    errors = []
    for linear in analyze(quantized).linears():
        if linear.name == "lm_head":
            continue
        exact = float_linears[linear.name]
        x = after[exact.input.name].sample.astype(np.float64)
        w, w_hat = exact.weight().astype(np.float64), linear.weight().astype(np.float64)
        y = x @ w
        x_hat = quantizer_of(linear)(x)
        norm = np.linalg.norm(y)
        errors.append({"layer": linear.name,
                       "weight": float(np.linalg.norm(x @ (w_hat - w)) / norm),
                       "activation": float(np.linalg.norm((x_hat - x) @ w) / norm),
                       "total": float(np.linalg.norm(x_hat @ w_hat - y) / norm)})
    return LayerErrors(errors, absmax_before, _absmax(after, float_linears))


def _absmax(stats: dict[str, ActivationStats], linears: dict[str, Linear]) -> dict[str, np.ndarray]:
    """Per-channel input absmax of each linear, by linear name."""
    return {name: np.maximum(np.abs(stats[lin.input.name].minimum), np.abs(stats[lin.input.name].maximum))
            for name, lin in linears.items()}
