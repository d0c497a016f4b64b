"""The partial-correlation estimator against brute force and Gaussian closed forms."""

import itertools

import numpy as np
import pytest
from scipy import stats

from probdyn.algorithms.independence import (
    fastica,
    gaussian_total_correlation,
    least_dependent_grouping,
    partial_correlation,
    sample_partial_correlation,
)
from probdyn.errors import DataError

GROUPS = [0, 0, 1, 1]


def gaussian_codes(rho: float, num: int, seed: int):
    """Codes from N(0, Sigma) with cross-group correlation rho, draws with the bandwidth rule."""
    cov = np.array([[1, 0.5, rho, 0], [0.5, 1, 0, 0], [rho, 0, 1, -0.3], [0, 0, -0.3, 1]])
    rng = np.random.default_rng(seed)
    means = rng.multivariate_normal(np.zeros(4), cov, size=num)
    scale = num ** (-1 / (4 + 4))
    draws = means + scale * rng.normal(size=means.shape)
    return draws, means, scale, cov + scale**2 * np.eye(4)


def test_estimator_equals_the_weighted_mixture_written_out():
    rng = np.random.default_rng(0)
    draws, means = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    groups, scale, population = [0, 1, 1], 0.7, 40
    weights = np.array([1, 1, 0, 1, 1])
    kept = np.flatnonzero(weights)
    m = kept.size

    def log_q(i, dims):
        terms = []
        for j in kept:
            density = np.prod(stats.norm.pdf(draws[i, dims], means[j, dims], scale))
            terms.append(density * (1 if i == j else (population - 1) / (m - 1)))
        return np.log(sum(terms) / population)

    expected = np.mean([log_q(i, [0, 1, 2]) - log_q(i, [0]) - log_q(i, [1, 2]) for i in kept])
    got = partial_correlation(draws, means, scale, groups, population=population, weights=weights)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_independent_groups_give_zero_and_correlated_ones_the_gaussian_value():
    for seed in range(3):
        draws, means, scale, total = gaussian_codes(0.0, 2000, seed)
        assert gaussian_total_correlation(total, GROUPS) == pytest.approx(0.0, abs=1e-12)
        assert abs(float(partial_correlation(draws, means, scale, GROUPS))) < 0.08
        draws, means, scale, total = gaussian_codes(0.8, 2000, seed)
        exact = gaussian_total_correlation(total, GROUPS)
        assert exact > 0.4
        assert float(partial_correlation(draws, means, scale, GROUPS)) == pytest.approx(
            exact, abs=0.08
        )


def test_minibatches_estimate_the_full_data_value():
    draws, means, scale, _ = gaussian_codes(0.8, 2400, seed=5)
    full = float(partial_correlation(draws, means, scale, GROUPS))
    batches = [
        float(partial_correlation(d, m, scale, GROUPS, population=2400))
        for d, m in zip(np.split(draws, 6), np.split(means, 6), strict=True)
    ]
    assert np.mean(batches) == pytest.approx(full, abs=0.05)


def test_total_correlation_of_one_dimension_per_group_and_bad_shapes():
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    assert gaussian_total_correlation(cov, [0, 1]) == pytest.approx(-0.5 * np.log(1 - 0.36))
    for a, b in itertools.permutations([np.zeros((4, 2)), np.zeros((4, 3))]):
        with pytest.raises(DataError, match="shape"):
            partial_correlation(a, b, 1.0, [0, 1])


def test_fastica_unmixes_and_grouping_finds_the_independent_pairs():
    rng = np.random.default_rng(1)
    # Two independent groups, each a pair of dependent non-Gaussian sources.
    angle = rng.uniform(0, 2 * np.pi, size=(3000, 2))
    radius = 1 + 0.1 * rng.normal(size=(3000, 2))
    sources = np.stack(
        [radius[:, 0] * np.cos(angle[:, 0]), radius[:, 0] * np.sin(angle[:, 0]),
         rng.uniform(-1, 1, 3000), rng.laplace(size=3000)],
        axis=1,
    )  # fmt: skip
    shuffled = sources[:, [2, 0, 3, 1]]  # groups {0, 2} and {1, 3} in these columns
    labels = least_dependent_grouping(shuffled, 2)
    assert labels[0] == labels[2] and labels[1] == labels[3] and labels[0] != labels[1]
    independent = np.stack([rng.uniform(-1, 1, 3000), rng.laplace(size=3000)], axis=1)
    mixing = np.array([[1.0, 0.6], [-0.4, 1.0]])
    recovered, unmixing = fastica(independent @ mixing.T, seed=0)
    correlation = np.abs(np.corrcoef(recovered.T, independent.T)[:2, 2:])
    assert np.all(correlation.max(axis=1) > 0.99)
    np.testing.assert_allclose(
        np.abs(unmixing @ mixing).max(axis=1) / np.abs(unmixing @ mixing).sum(axis=1), 1, atol=0.02
    )
    with pytest.raises(DataError, match="equal groups"):
        least_dependent_grouping(shuffled[:, :3], 2)


def test_sample_partial_correlation_ignores_column_scales_and_sees_dependence():
    _, means, _, total = gaussian_codes(0.8, 2000, seed=7)
    value = sample_partial_correlation(means, GROUPS)
    assert sample_partial_correlation(means * [3.0, 0.1, 10.0, 1.0] + 5.0, GROUPS) == (
        pytest.approx(value, rel=1e-9)
    )
    # Standardised samples of N(0, Sigma), drawn at the bandwidth rule: near the closed form of
    # the standardised covariance smoothed by the kernels.
    scale = 2000 ** (-1 / 8)
    sd = np.sqrt(np.diag(total - scale**2 * np.eye(4)))
    smoothed = (total - scale**2 * np.eye(4)) / np.outer(sd, sd) + scale**2 * np.eye(4)
    assert value == pytest.approx(gaussian_total_correlation(smoothed, GROUPS), abs=0.08)
