"""Orthonormal Hadamard matrices of sizes ``2^k`` and ``K * 2^k``.

``H_n`` with entries ``±1/sqrt(n)`` satisfies ``H Hᵀ = I``. Sizes that are not powers of two
use a Kronecker product ``H_K ⊗ H_{2^k}`` with the smallest ``K`` that has a construction
(Paley I for ``K = q + 1``, ``q ≡ 3 mod 4`` prime; Paley II for ``K = 2(q + 1)``,
``q ≡ 1 mod 4`` prime: K in {12, 20, 28, 36, 44, 52, 60, …}), and ``H_{2^k}`` is Sylvester's.
Keeping ``K`` minimal keeps the fast transform cheap: ``K`` multiply-adds per element for the
dense factor against ``k`` additions for the butterflies (n = 14336 = 28 · 512, not 112 · 128).
Because Sylvester's ``H_{2^k} = H_{2^j} ⊗ H_{2^(k-j)}``, the same matrix also splits into two
balanced factors ``(H_K ⊗ H_{2^j}) ⊗ H_{2^(k-j)}`` for graphs that apply it as two MatMuls.
A *random* Hadamard matrix is ``H · diag(s)`` with signs ``s`` drawn from a seeded generator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = ["dense_factor", "hadamard", "hadamard_rows", "kronecker_factors", "kronecker_pair", "random_hadamard",
           "random_hadamard_rows"]


def hadamard(n: int) -> np.ndarray:
    """The orthonormal ``n x n`` Hadamard matrix (float64) used everywhere in oqcompile."""
    return np.kron(*kronecker_pair(n))


def hadamard_rows(rows: np.ndarray) -> np.ndarray:
    """``rows @ hadamard(n)`` for ``rows[..., n]`` through the Kronecker pair, ``x (A ⊗ B) = vec(Aᵀ X B)``:
    ``O(n (a + b))`` per row and no dense ``n x n`` matrix; formed in ``rows``' float type."""
    a, b = (factor.astype(rows.dtype, copy=False) for factor in kronecker_pair(rows.shape[-1]))
    grid = rows.reshape(*rows.shape[:-1], a.shape[0], b.shape[0])
    return (a.T @ grid @ b).reshape(rows.shape)


def kronecker_pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal ``(H_a, H_b)`` with ``hadamard(n) == kron(H_a, H_b)``, sizes from :func:`kronecker_factors`."""
    a, b = kronecker_factors(n)
    core, _ = _minimal_split(n)
    left = np.kron(_unnormalized(core), _unnormalized(a // core))
    return left / np.sqrt(a), _unnormalized(b) / np.sqrt(b)


def dense_factor(n: int) -> np.ndarray | None:
    """The orthonormal ``K x K`` factor of ``hadamard(n) = H_K ⊗ H_{n/K}`` (``K`` minimal), or None
    when ``n`` is a power of two: what ``oq.Hadamard`` multiplies besides its butterflies."""
    core, _ = _minimal_split(n)
    return None if core == 1 else _unnormalized(core) / np.sqrt(core)


def random_hadamard(n: int, seed: int) -> np.ndarray:
    """``hadamard(n) · diag(s)``, ``s`` seeded random signs: an orthonormal random rotation."""
    return hadamard(n) * _random_signs(n, seed)[None, :]


def random_hadamard_rows(n: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """``rows -> rows @ random_hadamard(n, seed)`` through :func:`hadamard_rows` (no dense matrix)."""
    signs = _random_signs(n, seed)
    return lambda rows: hadamard_rows(rows) * signs.astype(rows.dtype, copy=False)


def _random_signs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=n)


def kronecker_factors(n: int) -> tuple[int, int]:
    """Split ``n = a * b``, ``b`` a power of two and ``a = K * 2^j``, balanced for two MatMuls.

    ``hadamard(n) == kron(H_a, H_b)`` (:func:`kronecker_pair`); applying it to ``x`` reshaped to
    ``[..., a, b]`` is ``H_aᵀ X H_b``, costing ``O(n (a + b))`` instead of ``O(n^2)``.
    """
    a, b = _minimal_split(n)
    while b > 1 and a * 2 <= b:  # move powers of two into the first factor until balanced
        a, b = a * 2, b // 2
    return a, b


def _minimal_split(n: int) -> tuple[int, int]:
    """``(K, 2^k)`` with ``n = K * 2^k`` and ``K`` the smallest order with a construction (1 for 2^k)."""
    power = n & -n
    core = n // power
    while not _constructible(core):
        if power == 1:
            raise ValueError(f"no Hadamard matrix of size {n} (need 2^k or K*2^k with K in "
                             f"{{12, 20, 28, 36, 44, ...}})")
        core, power = core * 2, power // 2  # the odd part 3 of 12 * 2^k grows to 12
    return core, power


def _constructible(order: int) -> bool:
    try:
        _unnormalized(order)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _unnormalized(order: int) -> np.ndarray:
    """A ±1 Hadamard matrix of ``order`` (Sylvester or Paley I/II)."""
    if order == 1:
        return np.ones((1, 1))
    if order & (order - 1) == 0:
        half = _unnormalized(order // 2)
        return np.block([[half, half], [half, -half]])
    q = order - 1
    if q % 4 == 3 and _is_prime(q):
        return _paley_one(q)
    q = order // 2 - 1
    if order % 2 == 0 and q % 4 == 1 and _is_prime(q):
        return _paley_two(q)
    raise ValueError(f"no Hadamard construction for order {order}")


def _jacobsthal(q: int) -> np.ndarray:
    squares = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if i in squares else -1 for i in range(1, q)], dtype=float)
    idx = (np.arange(q)[None, :] - np.arange(q)[:, None]) % q
    return chi[idx]


def _paley_one(q: int) -> np.ndarray:
    jac = _jacobsthal(q)
    s = np.zeros((q + 1, q + 1))
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, jac
    return s + np.eye(q + 1)


def _paley_two(q: int) -> np.ndarray:
    jac = _jacobsthal(q)
    c = np.zeros((q + 1, q + 1))
    c[0, 1:], c[1:, 0], c[1:, 1:] = 1, 1, jac
    return np.kron(c, np.array([[1, -1], [-1, -1]])) + np.kron(np.eye(q + 1), np.array([[1, 1], [1, -1]]))


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, int(q**0.5) + 1))
