r"""How far groups of latent dimensions are from independent: the FacRNN penalty and its checks.

An encoder that maps each sample :math:`x_n` (:math:`n = 1..N`) to a Gaussian
:math:`q(z \mid x_n) = N(\mu_n, s^2 I)` defines the aggregated posterior
:math:`q(z) = \frac1N \sum_n q(z \mid x_n)`. For a partition of the dimensions into groups
:math:`z = (z^{(1)}, \dots, z^{(G)})`, the partial correlation of Li et al. (FacRNN, 2025) is

.. math::
    \mathrm{PC} = D_{KL}\Big(q(z)\,\Big\|\,\prod_g q(z^{(g)})\Big)
    = \mathbb{E}_{q(z)}\Big[\log q(z) - \sum_g \log q(z^{(g)})\Big],

zero exactly when the groups are independent under :math:`q`; with one dimension per group it
is the total correlation (Watanabe 1960). On a minibatch of :math:`M` samples with draws
:math:`z_i \sim q(z \mid x_i)`, each log density is estimated with importance weights
(minibatch-weighted sampling, Chen et al. 2018, *Isolating sources of disentanglement*): the
own term counts once, each of the other :math:`M - 1` stands in for :math:`(N-1)/(M-1)` samples,

.. math::
    \log \hat q(z_i) = \log \frac1N \Big[q(z_i \mid x_i)
        + \frac{N-1}{M-1}\sum_{j \ne i} q(z_i \mid x_j)\Big],

and likewise for each group's marginal (a diagonal Gaussian factorises over dimensions).
:func:`gaussian_total_correlation` is the closed form the estimator is checked against.

The post-hoc alternative the seed compares with: unmix the latents of a plain low-rank RNN by
independent component analysis (:func:`fastica`, Hyvarinen 1999) and group the components by
the partition of least partial correlation (:func:`least_dependent_grouping`;
:func:`sample_partial_correlation` scores point samples).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.errors import DataError


def partial_correlation(
    draws: Array,
    means: Array,
    scale: float | Array,
    groups,
    *,
    population: float | Array | None = None,
    weights: Array | None = None,
) -> Array:
    r"""Minibatch estimate of :math:`\mathrm{PC}` (see the module docstring).

    ``draws`` and ``means`` are (M, K): :math:`z_i` and :math:`\mu_i`; ``scale`` is :math:`s`;
    ``groups`` gives each of the K dimensions a group label; ``population`` is :math:`N`
    (default: M, the batch is all the data); ``weights`` (M,) of 0/1 leaves samples out (of
    both the average and the mixtures), e.g. bins not fitted. Differentiable in ``draws``,
    ``means`` and ``scale``.
    """
    draws, means = jnp.asarray(draws), jnp.asarray(means)
    labels = np.asarray(groups)
    if draws.ndim != 2 or draws.shape != means.shape or labels.shape != (draws.shape[1],):
        raise DataError(
            f"partial_correlation needs draws and means of shape (M, K) and one group label per "
            f"dimension; got {draws.shape}, {means.shape} and {labels.shape}"
        )
    keep = jnp.ones(draws.shape[0]) if weights is None else jnp.asarray(weights, draws.dtype)
    count = jnp.sum(keep)
    total = count if population is None else jnp.asarray(population, draws.dtype)
    others = jnp.log(jnp.maximum(total - 1, 0.0)) - jnp.log(jnp.maximum(count - 1, 1.0))
    log_weight = jnp.where(jnp.eye(draws.shape[0], dtype=bool), 0.0, others)
    log_weight = log_weight + jnp.where(keep[None, :] > 0, 0.0, -jnp.inf) - jnp.log(total)

    def log_kernel(dims: np.ndarray) -> Array:
        """Log N(z_i; mu_j, s^2 I) over ``dims`` for every pair (i, j), by one matrix product."""
        z, mu = draws[:, dims], means[:, dims]
        squared = (z**2).sum(1)[:, None] + (mu**2).sum(1)[None, :] - 2 * z @ mu.T
        return -0.5 * jnp.maximum(squared, 0.0) / scale**2 - dims.size * jnp.log(
            jnp.sqrt(2 * jnp.pi) * scale
        )

    kernels = {g: log_kernel(np.flatnonzero(labels == g)) for g in np.unique(labels)}

    def log_mixture(kernel: Array) -> Array:
        return jax.nn.logsumexp(log_weight + kernel, axis=1)

    joint = log_mixture(sum(kernels.values()))
    marginals = sum(log_mixture(kernel) for kernel in kernels.values())
    return jnp.sum(keep * (joint - marginals)) / count


def gaussian_total_correlation(covariance, groups) -> float:
    r"""Gaussian closed form: :math:`\frac12(\sum_g \log|\Sigma_{gg}| - \log|\Sigma|)`."""
    covariance = np.asarray(covariance, dtype=float)
    labels = np.asarray(groups)
    blocks = sum(
        np.linalg.slogdet(covariance[np.ix_(labels == g, labels == g)])[1]
        for g in np.unique(labels)
    )
    return 0.5 * float(blocks - np.linalg.slogdet(covariance)[1])


def fastica(samples, *, num_iterations: int = 500, tol: float = 1e-8, seed: int = 0):
    r"""Symmetric FastICA with the log-cosh contrast (Hyvarinen 1999).

    ``samples`` (M, K) are centred and whitened, :math:`w = V(x - \bar x)`, and an orthogonal
    :math:`W` is iterated to a fixed point of
    :math:`W \leftarrow \mathbb{E}[g(Wx)x^\top] - \mathrm{diag}\,\mathbb{E}[g'(Wx)]\,W`,
    :math:`g = \tanh`, followed by symmetric decorrelation. Returns the sources (M, K) and the
    unmixing matrix :math:`U = WV` (sources = :math:`(x - \bar x) U^\top`).
    """
    x = np.asarray(samples, dtype=float)
    x = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x.T))
    whiten = (vectors / np.sqrt(values)).T
    w = x @ whiten.T

    def decorrelate(m):
        u, _, vt = np.linalg.svd(m)
        return u @ vt

    W = decorrelate(np.random.default_rng(seed).normal(size=(x.shape[1],) * 2))
    for _ in range(num_iterations):
        projected = np.tanh(w @ W.T)
        updated = decorrelate(
            projected.T @ w / len(w) - np.diag((1 - projected**2).mean(axis=0)) @ W
        )
        converged = np.max(np.abs(np.abs(np.sum(updated * W, axis=1)) - 1)) < tol
        W = updated
        if converged:
            break
    unmixing = W @ whiten
    return x @ unmixing.T, unmixing


def sample_partial_correlation(samples, groups, *, scale: float | None = None) -> float:
    r"""PC of point samples (M, K): each column standardised, kernels of width ``scale``.

    The bandwidth defaults to the rule :math:`s = M^{-1/(K+4)}`; the draws
    :math:`x_i + s\epsilon_i` use a fixed :math:`\epsilon` (seed 0), so equal inputs give equal
    values. The way to compare the independence of groups of latents across methods whose
    latents differ in scale.
    """
    x = np.asarray(samples, dtype=float)
    x = (x - x.mean(0)) / x.std(0)
    scale = x.shape[0] ** (-1 / (x.shape[1] + 4)) if scale is None else scale
    noise = np.random.default_rng(0).normal(size=x.shape)
    return float(partial_correlation(x + scale * noise, x, scale, groups))


def least_dependent_grouping(samples, num_groups: int, *, scale: float | None = None):
    """Labels that split the K columns into ``num_groups`` equal groups of least estimated PC.

    Every partition is tried (K!/(H!^G G!) of them; 10 for two groups of three), each scored
    by :func:`sample_partial_correlation`.
    """
    num_columns = np.shape(samples)[1]
    size, rest = divmod(num_columns, num_groups)
    if rest:
        raise DataError(f"{num_columns} columns do not split into {num_groups} equal groups")
    partitions = list(_equal_partitions(num_columns, num_groups, size))
    scores = [sample_partial_correlation(samples, labels, scale=scale) for labels in partitions]
    return partitions[int(np.argmin(scores))]


def _equal_partitions(num: int, num_groups: int, size: int):
    """Each split of range(num) into groups of ``size``, once (group 0 holds element 0)."""
    if num_groups == 1:
        yield np.zeros(num, int)
        return
    for first in itertools.combinations(range(1, num), size - 1):
        chosen = (0, *first)
        remaining = [i for i in range(num) if i not in chosen]
        for labels in _equal_partitions(len(remaining), num_groups - 1, size):
            full = np.zeros(num, int)
            full[remaining] = labels + 1
            yield full
