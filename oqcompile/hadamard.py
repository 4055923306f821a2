"""Orthonormal Hadamard matrices of sizes ``2^k`` and ``K * 2^k``.

``H_n`` with entries ``±1/sqrt(n)`` satisfies ``H Hᵀ = I``. Sizes that are not powers of two
use a Kronecker product ``H_K ⊗ H_{2^k}``, where ``H_K`` comes from Paley's constructions
(Paley I for ``K = q + 1``, ``q ≡ 3 mod 4`` prime; Paley II for ``K = 2(q + 1)``,
``q ≡ 1 mod 4`` prime); this covers K in {12, 20, 28, 36, 40 (= 2·20), 44, 52, 60, …}
and ``H_{2^k}`` is Sylvester's. A *random* Hadamard matrix is ``H · diag(s)`` with signs
``s`` drawn from a seeded generator.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["hadamard", "kronecker_factors", "kronecker_pair", "random_hadamard"]


def hadamard(n: int) -> np.ndarray:
    """The orthonormal ``n x n`` Hadamard matrix (float64) used everywhere in oqcompile."""
    return np.kron(*kronecker_pair(n))


def kronecker_pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal ``(H_a, H_b)`` with ``hadamard(n) == kron(H_a, H_b)``, sizes from :func:`kronecker_factors`."""
    a, b = kronecker_factors(n)
    return _unnormalized(a) / np.sqrt(a), _unnormalized(b) / np.sqrt(b)


def random_hadamard(n: int, seed: int) -> np.ndarray:
    """``hadamard(n) · diag(s)``, ``s`` seeded random signs: an orthonormal random rotation."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=n)
    return hadamard(n) * signs[None, :]


def kronecker_factors(n: int) -> tuple[int, int]:
    """Split ``n = a * b`` with both Hadamard orders and ``b`` a power of two, balanced for speed.

    ``hadamard(n) == kron(hadamard(a), hadamard(b))``; applying it to ``x`` reshaped to
    ``[..., a, b]`` is ``H_aᵀ X H_b``, costing ``O(n (a + b))`` instead of ``O(n^2)``.
    """
    power = n & -n
    base = n // power
    while not _constructible(base):
        if power == 1:
            raise ValueError(f"no Hadamard matrix of size {n} (need 2^k or K*2^k with K in "
                             f"{{12, 20, 28, 36, 40, ...}})")
        base, power = base * 2, power // 2  # the odd part 3 of 12 * 2^k grows to 12
    # Move powers of two into the first factor until the two factors are balanced.
    while power > 1 and base * 2 <= power:
        base, power = base * 2, power // 2
    return base, power


def _constructible(order: int) -> bool:
    try:
        _unnormalized(order)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _unnormalized(order: int) -> np.ndarray:
    """A ±1 Hadamard matrix of ``order`` (Sylvester, Paley I/II, or a doubling of those)."""
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
    if order % 2 == 0 and order // 2 > 2:
        half = _unnormalized(order // 2)  # raises if the half is not constructible
        return np.block([[half, half], [half, -half]])
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
