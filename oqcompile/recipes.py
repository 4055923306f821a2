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
on the rotated stream, with act-order GPTQ weights. At 8 bits that is OutlierTune proper
(scale-free static codes); at 6 and 4 bits only its symmetrization (per-channel midpoints
folded into biases) with per-token codes and per-layer activation clip search: static
per-channel ranges are too coarse there, while removing the offsets shrinks every token's
range. ``ot-quarot-w4a4-g32`` and ``-g16`` also give weights and activations one scale per 32
or 16 input channels (a token's int4 codes then follow its local range; SmolLM2 numbers in
docs/RESULTS.md section ``accuracy-best-per-width``). ``duquant`` replaces the rotations by
SmoothQuant and DuQuant's per-layer block rotations and permutation (the stream is not
rotated, so the norms can keep SmoothQuant's scales), with the same GPTQ and activation
settings as ``ot-quarot``.

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
import json
import pathlib
import tomllib
from collections.abc import Iterable

from oqcompile.calibrate import CalibrationData
from oqcompile.errors import OQError
from oqcompile.passes.base import CalibratedPass, TransformerPass
from oqcompile.passes.cancel_rotations import CancelRotations
from oqcompile.passes.fuse_norms import FuseNorms
from oqcompile.passes.drop_nan_guard import DropNanGuard
from oqcompile.passes.duquant import DuQuant
from oqcompile.passes.fuse_ort import FuseOrt
from oqcompile.passes.insert_qdq import InsertQDQ
from oqcompile.passes.lower import Lower
from oqcompile.passes.online_hadamard import OnlineHadamard
from oqcompile.passes.outliertune import OutlierTune
from oqcompile.passes.quantize_embedding import QuantizeEmbedding
from oqcompile.passes.quantize_kv import QuantizeKV
from oqcompile.passes.quantize_weights import QuantizeWeights
from oqcompile.passes.rotate_heads import RotateHeads
from oqcompile.passes.rotate_qk import RotateQK
from oqcompile.passes.rotate_residual import RotateResidual
from oqcompile.passes.smoothquant import SmoothQuant
from oqcompile.passes.spinquant import SpinQuant

__all__ = ["PASSES", "RECIPES", "build_recipe", "recipe_toml"]

PASSES: dict[str, type[TransformerPass]] = {cls.name: cls for cls in (
    FuseNorms, RotateResidual, RotateHeads, RotateQK, OnlineHadamard, CancelRotations,
    SpinQuant, SmoothQuant, OutlierTune, DuQuant, QuantizeWeights, InsertQDQ, QuantizeKV, QuantizeEmbedding, Lower, FuseOrt,
    DropNanGuard)}

# A recipe is data: its passes with their parameters, as a TOML recipe lists them. The seed and
# the calibration data are given to the passes by build_recipe.
Step = tuple[type[TransformerPass], dict]

ROTATE: list[Step] = [(FuseNorms, {}), (RotateResidual, {}), (RotateHeads, {}), (RotateQK, {}),
                      (OnlineHadamard, {}), (CancelRotations, {})]


def _quantize(bits: int, *, act_bits: int | None = None, clip: float = 1.0, method: str = "rtn",
              clip_search: bool = False, act_order: bool = False, act_clip_search: bool = False,
              group: int | None = None, act_group: int | None = None, lm_head_bits: int | None = None) -> list[Step]:
    """Weights at ``bits`` (per channel, or per ``group`` input rows), activations at ``act_bits``
    (default: the same; per token, or per ``act_group`` channels of a token); the lm_head (weights
    and input) at ``lm_head_bits`` or float."""
    lm_head = {} if lm_head_bits is None else {"lm_head_bits": lm_head_bits}
    grouped = {} if group is None else {"group": group}
    act_grouped = {} if act_group is None else {"group": act_group}
    return [(QuantizeWeights, {"bits": bits, "method": method, "clip_search": clip_search, "act_order": act_order,
                               **grouped, **lm_head}),
            (InsertQDQ, {"bits": act_bits or bits, "clip": clip, "clip_search": act_clip_search, **act_grouped,
                         **lm_head})]


def _quantize_model(bits: int, **options) -> list[Step]:
    """:func:`_quantize` of the whole model, as deployed: the lm_head too (int8 weights and input)
    and the token embedding as int8 rows."""
    return [*_quantize(bits, lm_head_bits=8, **options), (QuantizeEmbedding, {})]


def _duquant_gptq(bits: int, group: int | None = None) -> list[Step]:
    """``duquant``: SmoothQuant (α 0.5) on the unrotated stream and DuQuant's block rotations and
    permutation, as the DuQuant paper orders them, then :func:`_quantize_model` as
    :func:`_symmetrized_gptq` does."""
    return [(FuseNorms, {}), (SmoothQuant, {"alpha": 0.5}), (DuQuant, {}),
            *_quantize_model(bits, method="gptq", clip_search=True, act_order=True, act_clip_search=True,
                             group=group, act_group=group)]


def _symmetrized_gptq(bits: int, group: int | None = None) -> list[Step]:
    """``ot-quarot`` below 8 bits: ``rotate``, OutlierTune's symmetrization alone, then
    :func:`_quantize_model` with act-order GPTQ and both clip searches; ``group``: one scale per
    ``group`` input channels for the weights and for each token's activations."""
    return [*ROTATE, (OutlierTune, {"bits": bits, "prescale": False}),
            *_quantize_model(bits, method="gptq", clip_search=True, act_order=True, act_clip_search=True,
                             group=group, act_group=group)]


RECIPES: dict[str, tuple[str, list[Step]]] = {
    "rotate": ("QuaRot rotations R1-R4, exact in float", ROTATE),
    "fuse_norms": ("fold norm gains/biases into the next linears", [(FuseNorms, {})]),
    "rotate_residual": ("R1 only (after fuse_norms)", [(FuseNorms, {}), (RotateResidual, {})]),
    "rotate_heads": ("R2 only", [(RotateHeads, {})]),
    "rotate_qk": ("R3 only", [(RotateQK, {})]),
    "online_hadamard": ("R4 only", [(OnlineHadamard, {})]),
    "naive-w8a8": ("RTN int8 weights, per-token int8 activations", _quantize(8)),
    "naive-w6a6": ("RTN int6 weights, per-token int6 activations", _quantize(6)),
    "naive-w4a4": ("RTN int4 weights, per-token int4 activations", _quantize(4)),
    "smoothquant-w8a8": ("SmoothQuant (alpha 0.5), then naive W8A8", [(SmoothQuant, {"alpha": 0.5}), *_quantize(8)]),
    "outliertune-w8a8": ("OutlierTune scale-free int8 inputs of norm-fed linears, per-token elsewhere",
                         [(OutlierTune, {"bits": 8}), *_quantize(8)]),
    "outliertune-w6a6": ("OutlierTune W6A6 (weight clip search)",
                         [(OutlierTune, {"bits": 6}), *_quantize(6, clip_search=True)]),
    "quarot-w8a8": ("rotate, RTN int8 weights, per-token int8 activations; int8 lm_head and token embedding",
                    [*ROTATE, *_quantize_model(8)]),
    "quarot-w6a6": ("rotate, RTN int6 weights with clip search, per-token int6; int8 lm_head and token embedding",
                    [*ROTATE, *_quantize_model(6, clip_search=True)]),
    "quarot-w4a4-rtn": ("rotate, RTN int4 weights with clip search, per-token int4 (clip 0.9); int8 lm_head and "
                        "token embedding", [*ROTATE, *_quantize_model(4, clip=0.9, clip_search=True)]),
    "quarot-w4a4-gptq": ("rotate, GPTQ int4 weights, per-token int4 activations (clip 0.9); int8 lm_head and token "
                         "embedding", [*ROTATE, *_quantize_model(4, clip=0.9, method="gptq", clip_search=True)]),
    "quarot-w4a4kv4-gptq": ("quarot-w4a4-gptq plus a 4-bit KV cache (asymmetric, per head)",
                            [*ROTATE, *_quantize_model(4, clip=0.9, method="gptq", clip_search=True),
                             (QuantizeKV, {"bits": 4})]),
    "quarot-w4a8": ("rotate, GPTQ int4 weights in groups of 32, per-token int8 activations (int8 hardware "
                    "runs them as fast as int4 ones on CPUs); int8 lm_head and token embedding",
                    [*ROTATE, *_quantize_model(4, act_bits=8, method="gptq", clip_search=True, group=32)]),
    "quarot-w4a16-gptq": ("rotate, GPTQ int4 weights (groups of 32) as ORT MatMulNBits, float activations",
                          [*ROTATE, (QuantizeWeights, {"bits": 4, "method": "gptq", "group": 32, "clip_search": True,
                                                       "format": "matmulnbits"})]),
    "ot-quarot-w8a8": ("rotate, then OutlierTune (scale-free int8 norm-fed inputs), act-order GPTQ int8; int8 "
                       "lm_head and token embedding",
                       [*ROTATE, (OutlierTune, {"bits": 8}), *_quantize_model(8, method="gptq", act_order=True)]),
    "ot-quarot-w6a6": ("rotate, OutlierTune symmetrization, act-order GPTQ int6, per-token int6 with per-layer "
                       "clip search; int8 lm_head and token embedding", _symmetrized_gptq(6)),
    "ot-quarot-w4a4": ("rotate, OutlierTune symmetrization, act-order GPTQ int4, per-token int4 with "
                       "per-layer clip search; int8 lm_head and token embedding", _symmetrized_gptq(4)),
    "ot-quarot-w4a4-g32": ("ot-quarot-w4a4 with scales in groups of 32 input channels: act-order GPTQ int4 weights "
                           "and int4 activations per token and group of 32", _symmetrized_gptq(4, group=32)),
    "ot-quarot-w4a4-g16": ("ot-quarot-w4a4 with scales in groups of 16 input channels: act-order GPTQ int4 weights "
                           "and int4 activations per token and group of 16", _symmetrized_gptq(4, group=16)),
    "duquant-w4a4": ("SmoothQuant (alpha 0.5), DuQuant block rotations and zigzag permutation of every block "
                     "linear's input, act-order GPTQ int4, per-token int4 with per-layer clip search; int8 "
                     "lm_head and token embedding", _duquant_gptq(4)),
    "duquant-w4a4-g16": ("duquant-w4a4 with scales in groups of 16 input channels for the weights and each "
                         "token's activations", _duquant_gptq(4, group=16)),
}


def build_recipe(name: str, seed: int = 0, calibration: CalibrationData | None = None,
                 progress: bool = False) -> list[TransformerPass]:
    """The passes of recipe ``name`` or of the TOML file ``name`` (:class:`OQError` if unknown).

    A pass with a ``seed`` parameter gets ``seed`` unless the recipe sets it; every pass that
    reads activation statistics gets ``calibration`` and ``progress``.
    """
    if name in RECIPES:
        steps, where = RECIPES[name][1], f"recipe {name}"
    elif name.endswith(".toml"):
        steps, where = _read_toml(pathlib.Path(name)), str(name)
    else:
        raise OQError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)} or give a .toml file")
    _check_duquant_order(steps, where)
    passes = []
    for cls, params in steps:
        params = dict(params)
        if "seed" in {field.name for field in dataclasses.fields(cls)}:
            params.setdefault("seed", seed)
        if issubclass(cls, CalibratedPass):
            params.update(calibration=calibration, progress=progress)
        try:
            passes.append(cls(**params))
        except (TypeError, ValueError) as error:
            raise OQError(f"{where}: pass {cls.name}: {error}") from error
    return passes


# DuQuant's online transform sits between the stream and the linears: passes that fold into the
# linears' inputs must run before it, and quantization of those inputs after it.
_FOLD_INTO_INPUTS = (FuseNorms, RotateResidual, RotateHeads, OnlineHadamard, CancelRotations, SpinQuant, SmoothQuant,
                     OutlierTune)
_QUANTIZE_INPUTS = (QuantizeWeights, InsertQDQ, Lower)


def _check_duquant_order(steps: list[Step], where: str) -> None:
    classes = [cls for cls, _ in steps]
    if DuQuant not in classes:
        return
    first, last = classes.index(DuQuant), len(classes) - 1 - classes[::-1].index(DuQuant)
    for cls in classes[first + 1:]:
        if cls in _FOLD_INTO_INPUTS:
            raise OQError(f"{where}: pass {cls.name} must come before duquant (it folds into the linear inputs "
                          "that duquant transforms)")
    for cls in classes[:last]:
        if cls in _QUANTIZE_INPUTS:
            raise OQError(f"{where}: pass {cls.name} must come after duquant (it quantizes the linear inputs "
                          "that duquant transforms)")


def recipe_toml(steps: Iterable[tuple[str, dict]]) -> str:
    """The text of a TOML recipe listing ``(pass name, parameters)`` in order (what :func:`build_recipe` reads)."""
    lines = []
    for name, params in steps:
        lines += ["[[pass]]", f"name = {json.dumps(name)}"] + [f"{k} = {json.dumps(v)}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def _read_toml(path: pathlib.Path) -> list[Step]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise OQError(f"{path}: not a readable TOML recipe ({error})") from error
    entries = document.get("pass", [])
    if not entries:
        raise OQError(f"{path}: the recipe lists no [[pass]] tables")
    steps = []
    for entry in entries:
        params = dict(entry)
        name = params.pop("name", None)
        if name not in PASSES:
            raise OQError(f"{path}: unknown pass {name!r}: choose one of {', '.join(PASSES)}")
        steps.append((PASSES[name], params))
    return steps
