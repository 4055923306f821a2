"""DuQuant's channel transform: block rotations, a zigzag permutation, block rotations again.

For an activation ``x`` with ``n = k · b`` channels (``k`` blocks of ``b``), DuQuant (Lin et al.,
2024) finds an orthogonal ``T = B₁ P B₂`` such that ``x T`` has no outlier channel:

- ``B₁ = diag(R₁, …, R₁)`` is block diagonal, one ``b x b`` rotation repeated over the blocks
  (as DuQuant's reference code does; a rotation per block stores ``k`` times the constants:
  72 MiB more in SmolLM2's lowered file, where the weights take 112 MiB). ``R₁`` is grown
  greedily on the calibration rows cut into blocks, ``X`` (``[rows · k, b]``): take the
  channel ``d`` holding the peak ``max |X R|`` and append ``E_d G E_d``, where ``G`` is an
  orthogonal matrix whose first row is flat (``1/√b`` everywhere) and ``E_d`` swaps channels 0
  and ``d``: the outlier channel is spread evenly over the block. The step count with the
  lowest peak is kept (the peak is not monotone in the steps).
- ``P`` is the zigzag permutation: channels sorted by their peak after ``B₁`` are dealt to the
  blocks as 0, 1, …, k-1, k-1, …, 1, 0, 0, 1, …, so that every block gets large and small
  channels alike and the blocks' peaks even out.
- ``B₂ = diag(R₂, …, R₂)``, ``R₂`` grown like ``R₁`` on the permuted rows, spreading what ``P``
  brought together.

``G`` is the Householder reflection that swaps ``e₀`` and the flat vector, times a seeded random
rotation of the other ``b - 1`` channels: ``G = diag(1, Q) · (I - 2 v vᵀ / vᵀv)``, ``v = e₀ - 1/√b``.
``T`` is orthogonal, so ``x W = (x T)(Tᵀ W)``: the linear's weight takes ``Tᵀ`` and the
activation is transformed online (:func:`oqcompile.rotation.insert_block_rotation`), in
``O(n (2b))`` multiply-adds per token.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["BlockRotation", "block_size", "fit_block_rotation"]


@dataclasses.dataclass(frozen=True)
class BlockRotation:
    """``T = B₁ P B₂``: ``first`` and ``second`` ``[b, b]`` (``R₁`` and ``R₂``, the blocks of ``B₁``
    and ``B₂``), ``permutation`` ``[n]`` (``(x B₁)[..., permutation]`` is ``x B₁ P``)."""

    first: np.ndarray
    permutation: np.ndarray
    second: np.ndarray

    @property
    def size(self) -> int:
        return self.permutation.shape[0]

    @property
    def block(self) -> int:
        return self.first.shape[-1]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows @ T`` for ``rows[..., n]``, block by block (no dense ``n x n`` matrix)."""
        blocks = (*rows.shape[:-1], self.size // self.block, self.block)
        permuted = (rows.reshape(blocks) @ self.first).reshape(rows.shape)[..., self.permutation]
        return (permuted.reshape(blocks) @ self.second).reshape(rows.shape)


def block_size(channels: int, largest: int) -> int:
    """The block DuQuant uses on ``channels``: the largest power of two ``≤ largest`` dividing it."""
    block = 1
    while block * 2 <= largest and channels % (block * 2) == 0:
        block *= 2
    return block


def fit_block_rotation(sample: np.ndarray, block: int, steps: int, seed: int) -> BlockRotation:
    """``T`` for the calibration rows ``sample[rows, n]`` (see module doc); ``block`` divides ``n``,
    at most ``steps`` greedy steps per rotation."""
    rows, n = sample.shape
    rng = np.random.default_rng(seed)
    x = sample.astype(np.float64)
    first = _greedy_rotation(x.reshape(-1, block), steps, rng)
    rotated = (x.reshape(-1, block) @ first).reshape(rows, n)
    permutation = _zigzag(np.abs(rotated).max(axis=0), n // block)
    second = _greedy_rotation(rotated[:, permutation].reshape(-1, block), steps, rng)
    return BlockRotation(first, permutation, second)


def _spreading_rotation(block: int, rng: np.random.Generator) -> np.ndarray:
    """``G``: orthogonal, first row flat (``e₀ G = 1/√b``), the rest randomly rotated (module doc)."""
    flat = np.full(block, 1 / np.sqrt(block))
    v = -flat
    v[0] += 1.0
    norm = v @ v
    householder = np.eye(block) - (2 / norm) * np.outer(v, v) if norm > 1e-12 else np.eye(block)
    q, r = np.linalg.qr(rng.standard_normal((block - 1, block - 1)))
    rest = np.eye(block)
    rest[1:, 1:] = q * np.sign(np.diag(r))
    return rest @ householder


def _greedy_rotation(x: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``R`` (``b x b``) lowering ``max |x R|`` for the block rows ``x[rows, b]`` (module doc)."""
    block = x.shape[1]
    spread = _spreading_rotation(block, rng)
    rotation, best, best_peak = np.eye(block), np.eye(block), np.abs(x).max()
    current = x
    for _ in range(steps):
        channel = int(np.abs(current).max(axis=0).argmax())
        swap = np.arange(block)
        swap[[0, channel]] = swap[[channel, 0]]
        step = spread[swap][:, swap]  # E_d G E_d
        rotation, current = rotation @ step, current @ step
        peak = np.abs(current).max()
        if peak < best_peak:
            best, best_peak = rotation, peak
    return best


def _zigzag(peaks: np.ndarray, blocks: int) -> np.ndarray:
    """The permutation dealing channels, largest peak first, to the blocks in zigzag order; each
    block's channels sorted by peak (module doc)."""
    order = np.argsort(-peaks, kind="stable")
    cycle = np.concatenate([np.arange(blocks), np.arange(blocks)[::-1]])
    assigned: list[list[int]] = [[] for _ in range(blocks)]
    for position, channel in enumerate(order):
        assigned[cycle[position % len(cycle)]].append(int(channel))
    return np.array([channel for members in assigned for channel in members], np.int64)
