"""Recipes: named, ordered lists of passes, built in or read from a TOML file.

``rotate`` is QuaRot's full set of function-preserving rotations: fold the norms, rotate
the residual stream (R1), rotate V/O per head with an online Hadamard at o_proj (R2),
rotate Q/K (R3), add the online Hadamard before down_proj (R4) and fold what can be
folded. Each single pass is also a recipe of its own, with ``fuse_norms`` in front where
the pass needs scale-free norms.

Quantization recipes are named ``<method>-w<weight bits>a<activation bits>``: ``naive``
quantizes as is (per-token activations, per-channel RTN weights), ``smoothquant`` and
``outliertune`` first move or pre-execute the activation scales, ``quarot`` first applies
``rotate`` (QuaRot's own settings), and ``ot-quarot`` does both: rotation, then OutlierTune
on the rotated stream. At 8 bits that is OutlierTune proper (scale-free static codes); at 6
and 4 bits only its symmetrization (per-channel midpoints folded into biases) with per-token
codes, per-layer activation clip search and, at 4 bits, act-order GPTQ: static per-channel
ranges are too coarse there, while removing the offsets shrinks every token's range.

A TOML recipe lists passes with their parameters::

    description = "my recipe"
    [[pass]]
    name = "rotate_residual"   # a pass with a `seed` parameter gets --seed unless set here
    [[pass]]
    name = "quantize_weights"
    bits = 4
    method = "gptq"
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from collections.abc import Callable

from oqcompile.errors import OQError
from oqcompile.passes.base import TransformerPass
from oqcompile.passes.cancel_rotations import CancelRotations
from oqcompile.passes.fuse_norms import FuseNorms
from oqcompile.passes.insert_qdq import InsertQDQ
from oqcompile.passes.lower import Lower
from oqcompile.passes.online_hadamard import OnlineHadamard
from oqcompile.passes.outliertune import OutlierTune
from oqcompile.passes.quantize_kv import QuantizeKV
from oqcompile.passes.quantize_weights import QuantizeWeights
from oqcompile.passes.rotate_heads import RotateHeads
from oqcompile.passes.rotate_qk import RotateQK
from oqcompile.passes.rotate_residual import RotateResidual
from oqcompile.passes.smoothquant import SmoothQuant

__all__ = ["PASSES", "RECIPES", "build_recipe"]

PASSES: dict[str, type[TransformerPass]] = {cls.name: cls for cls in (
    FuseNorms, RotateResidual, RotateHeads, RotateQK, OnlineHadamard, CancelRotations,
    SmoothQuant, OutlierTune, QuantizeWeights, InsertQDQ, QuantizeKV, Lower)}


def _rotate(seed: int) -> list[TransformerPass]:
    return [FuseNorms(), RotateResidual(seed=seed), RotateHeads(seed=seed), RotateQK(),
            OnlineHadamard(), CancelRotations()]


def _quantize(bits: int, *, clip: float = 1.0, method: str = "rtn", clip_search: bool = False,
              act_order: bool = False, act_clip_search: bool = False) -> list[TransformerPass]:
    return [QuantizeWeights(bits=bits, method=method, clip_search=clip_search, act_order=act_order),
            InsertQDQ(bits=bits, clip=clip, clip_search=act_clip_search)]


RECIPES: dict[str, tuple[str, Callable[[int], list[TransformerPass]]]] = {
    "rotate": ("QuaRot rotations R1-R4, exact in float", _rotate),
    "fuse_norms": ("fold norm gains/biases into the next linears", lambda seed: [FuseNorms()]),
    "rotate_residual": ("R1 only (after fuse_norms)", lambda seed: [FuseNorms(), RotateResidual(seed=seed)]),
    "rotate_heads": ("R2 only", lambda seed: [RotateHeads(seed=seed)]),
    "rotate_qk": ("R3 only", lambda seed: [RotateQK()]),
    "online_hadamard": ("R4 only", lambda seed: [OnlineHadamard()]),
    "naive-w8a8": ("RTN int8 weights, per-token int8 activations", lambda seed: _quantize(8)),
    "naive-w6a6": ("RTN int6 weights, per-token int6 activations", lambda seed: _quantize(6)),
    "naive-w4a4": ("RTN int4 weights, per-token int4 activations", lambda seed: _quantize(4)),
    "smoothquant-w8a8": ("SmoothQuant (alpha 0.5), then naive W8A8", lambda seed: [
        SmoothQuant(alpha=0.5), *_quantize(8)]),
    "outliertune-w8a8": ("OutlierTune scale-free int8 inputs of norm-fed linears, per-token elsewhere",
                         lambda seed: [OutlierTune(bits=8), *_quantize(8)]),
    "outliertune-w6a6": ("OutlierTune W6A6 (weight clip search)", lambda seed: [
        OutlierTune(bits=6), *_quantize(6, clip_search=True)]),
    "quarot-w8a8": ("rotate, RTN int8 weights, per-token int8 activations", lambda seed: [
        *_rotate(seed), *_quantize(8)]),
    "quarot-w6a6": ("rotate, RTN int6 weights with clip search, per-token int6", lambda seed: [
        *_rotate(seed), *_quantize(6, clip_search=True)]),
    "quarot-w4a4-rtn": ("rotate, RTN int4 weights with clip search, per-token int4 (clip 0.9)",
                        lambda seed: [*_rotate(seed), *_quantize(4, clip=0.9, clip_search=True)]),
    "quarot-w4a4-gptq": ("rotate, GPTQ int4 weights, per-token int4 activations (clip 0.9)",
                         lambda seed: [*_rotate(seed), *_quantize(4, clip=0.9, method="gptq",
                                                                  clip_search=True)]),
    "quarot-w4a4kv4-gptq": ("quarot-w4a4-gptq plus a 4-bit KV cache (asymmetric, per head)",
                            lambda seed: [*_rotate(seed), *_quantize(4, clip=0.9, method="gptq", clip_search=True),
                                          QuantizeKV(bits=4)]),
    "quarot-w4a16-gptq": ("rotate, GPTQ int4 weights (groups of 32) as ORT MatMulNBits, float activations",
                          lambda seed: [*_rotate(seed), QuantizeWeights(
                              bits=4, method="gptq", group=32, clip_search=True, format="matmulnbits")]),
    "ot-quarot-w8a8": ("rotate, then OutlierTune (scale-free int8 norm-fed inputs), RTN int8", lambda seed: [
        *_rotate(seed), OutlierTune(bits=8), *_quantize(8)]),
    "ot-quarot-w6a6": ("rotate, OutlierTune symmetrization, int6 with weight and activation clip search",
                       lambda seed: [*_rotate(seed), OutlierTune(bits=6, prescale=False),
                                     *_quantize(6, clip_search=True, act_clip_search=True)]),
    "ot-quarot-w4a4": ("rotate, OutlierTune symmetrization, act-order GPTQ int4, per-token int4 with "
                       "per-layer clip search", lambda seed: [
                           *_rotate(seed), OutlierTune(bits=4, prescale=False),
                           *_quantize(4, method="gptq", clip_search=True, act_order=True, act_clip_search=True)]),
}


def build_recipe(name: str, seed: int = 0) -> list[TransformerPass]:
    """The passes of recipe ``name`` or of the TOML file ``name`` (:class:`OQError` if unknown)."""
    if name in RECIPES:
        return RECIPES[name][1](seed)
    if name.endswith(".toml"):
        return _load_toml(pathlib.Path(name), seed)
    raise OQError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)} or give a .toml file")


def _load_toml(path: pathlib.Path, seed: int) -> list[TransformerPass]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise OQError(f"{path}: not a readable TOML recipe ({error})") from error
    entries = document.get("pass", [])
    if not entries:
        raise OQError(f"{path}: the recipe lists no [[pass]] tables")
    passes = []
    for entry in entries:
        params = dict(entry)
        name = params.pop("name", None)
        if name not in PASSES:
            raise OQError(f"{path}: unknown pass {name!r}: choose one of {', '.join(PASSES)}")
        cls = PASSES[name]
        if "seed" in {f.name for f in dataclasses.fields(cls)}:
            params.setdefault("seed", seed)
        try:
            passes.append(cls(**params))
        except (TypeError, ValueError) as error:
            raise OQError(f"{path}: pass {name}: {error}") from error
    return passes
