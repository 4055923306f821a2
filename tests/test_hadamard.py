import numpy as np
import pytest

from oqcompile.hadamard import (dense_factor, hadamard, hadamard_rows, kronecker_factors, kronecker_pair, random_hadamard,
                                random_hadamard_rows)


@pytest.mark.parametrize("n", [1, 2, 16, 12, 20, 28, 36, 40, 64, 96, 576, 1536, 4096, 14336])
def test_hadamard_is_orthonormal_with_equal_magnitudes(n):
    """Every row against every row; above 4096, 256 seeded rows against every row (all 14336 rows
    would take a minute of float64 products)."""
    h = hadamard(n)
    rows = np.arange(n) if n <= 4096 else np.sort(np.random.default_rng(0).choice(n, 256, replace=False))
    np.testing.assert_allclose(h[rows] @ h.T, np.eye(n)[rows], atol=1e-12)
    np.testing.assert_allclose(np.abs(h), 1 / np.sqrt(n))


@pytest.mark.parametrize("n,factors", [(576, (36, 16)), (1536, (48, 32)), (64, (8, 8)), (40, (20, 2))])
def test_kronecker_factors_reproduce_the_matrix(n, factors):
    assert kronecker_factors(n) == factors
    h_a, h_b = kronecker_pair(n)
    assert (h_a.shape[0], h_b.shape[0]) == factors
    np.testing.assert_allclose(h_a @ h_a.T, np.eye(factors[0]), atol=1e-12)
    np.testing.assert_allclose(np.kron(h_a, h_b), hadamard(n), atol=1e-12)


@pytest.mark.parametrize("n,k", [(576, 36), (1536, 12), (14336, 28), (40, 20), (4096, None)])
def test_dense_factor_is_the_smallest_and_reproduces_the_matrix(n, k):
    h_k = dense_factor(n)
    if k is None:
        assert h_k is None
        return
    assert h_k.shape == (k, k)
    np.testing.assert_allclose(np.kron(h_k, hadamard(n // k)), hadamard(n), atol=1e-12)


def test_random_hadamard_is_seeded_and_orthonormal():
    q1, q2, q3 = random_hadamard(96, 3), random_hadamard(96, 3), random_hadamard(96, 4)
    np.testing.assert_array_equal(q1, q2)
    assert not np.array_equal(q1, q3)
    np.testing.assert_allclose(q1 @ q1.T, np.eye(96), atol=1e-12)


@pytest.mark.parametrize("n", [2, 64, 96, 576, 1536, 2048])
def test_row_transforms_equal_the_dense_matrices(n):
    """The Kronecker-factored transforms the passes apply to weights (float64 rounding apart)."""
    rows = np.random.default_rng(n).standard_normal((5, 3, n))
    np.testing.assert_allclose(hadamard_rows(rows), rows @ hadamard(n), rtol=0, atol=1e-12)
    np.testing.assert_allclose(random_hadamard_rows(n, 7)(rows), rows @ random_hadamard(n, 7), rtol=0, atol=1e-12)


def test_impossible_size_is_refused():
    with pytest.raises(ValueError, match="no Hadamard matrix of size 6"):
        hadamard(6)
