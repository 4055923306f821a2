"""Recipes: named, ordered lists of passes.

``rotate`` is QuaRot's full set of function-preserving rotations: fold the norms, rotate
the residual stream (R1), rotate V/O per head with an online Hadamard at o_proj (R2),
rotate Q/K after RoPE (R3), add the online Hadamard before down_proj (R4) and clean up
rotations that can be folded. Each single pass is also a recipe of its own, with
``fuse_norms`` in front where the pass needs scale-free norms.
"""

from __future__ import annotations

from collections.abc import Callable

from oqcompile.errors import OQError
from oqcompile.passes.base import TransformerPass
from oqcompile.passes.cancel_rotations import CancelRotations
from oqcompile.passes.fuse_norms import FuseNorms
from oqcompile.passes.online_hadamard import OnlineHadamard
from oqcompile.passes.rotate_heads import RotateHeads
from oqcompile.passes.rotate_qk import RotateQK
from oqcompile.passes.rotate_residual import RotateResidual

__all__ = ["RECIPES", "build_recipe"]

RECIPES: dict[str, tuple[str, Callable[[int], list[TransformerPass]]]] = {
    "rotate": ("QuaRot rotations R1-R4, exact in float", lambda seed: [
        FuseNorms(), RotateResidual(seed=seed), RotateHeads(seed=seed), RotateQK(),
        OnlineHadamard(), CancelRotations()]),
    "fuse_norms": ("fold norm gains/biases into the next linears", lambda seed: [FuseNorms()]),
    "rotate_residual": ("R1 only (after fuse_norms)", lambda seed: [
        FuseNorms(), RotateResidual(seed=seed)]),
    "rotate_heads": ("R2 only", lambda seed: [RotateHeads(seed=seed)]),
    "rotate_qk": ("R3 only", lambda seed: [RotateQK()]),
    "online_hadamard": ("R4 only", lambda seed: [OnlineHadamard()]),
}


def build_recipe(name: str, seed: int = 0) -> list[TransformerPass]:
    """The passes of recipe ``name`` (raises :class:`OQError` for an unknown name)."""
    if name not in RECIPES:
        raise OQError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[name][1](seed)
