r"""Asymmetry and time irreversibility of stochastic dynamics.

- :func:`decompose_connectivity`: :math:`J = J_s + J_a` with :math:`J_s = (J + J^\top)/2`,
  :math:`J_a = (J - J^\top)/2`; their norms and the share of each in the recurrent drift along
  trajectories.
- :func:`ou_entropy_production_rate`: the exact entropy production rate of a linear SDE.
- :func:`entropy_production_rate`: a path estimator for any SDE with additive noise, from the
  log-ratio of forward and time-reversed Euler-Maruyama transition densities, with its Monte Carlo
  standard error; :func:`entropy_production_posterior` applies it to every posterior draw of a
  fitted latent SDE.

For :math:`dx = f(x)\,dt + \sqrt{2D}\,dW` (:math:`D` the diffusion matrix) in its stationary
state, the entropy production rate is the mean rate at which the log-probability ratio of a path
to its time reverse grows (Seifert 2012, Rep. Prog. Phys. 75 126001); it is zero exactly when the
process is in detailed balance (e.g. gradient drift :math:`f = -D\nabla U`) and positive when
probability currents circulate, as with asymmetric connectivity. Nartallo-Kaluarachchi, Lambiotte
& Goriely (2026) use it to tell equilibrium from nonequilibrium memory in RNNs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax import Array

from probdyn.errors import ConfigError


def decompose_connectivity(
    J: Array,
    states: Array | None = None,
    nonlinearity: Callable[[Array], Array] = jnp.tanh,
) -> xr.Dataset:
    r"""Split :math:`J` into symmetric and antisymmetric parts and measure each one's role.

    Returns a Dataset with ``J_sym``, ``J_anti`` (unit, unit_from), their Frobenius norms
    ``norm_sym``, ``norm_anti`` and ``asymmetry`` :math:`= \|J_a\|_F / (\|J_s\|_F + \|J_a\|_F)`
    (0 for symmetric, 1 for antisymmetric). Given unit ``states`` (..., n), also ``share_sym`` and
    ``share_anti``: each part's share of the squared recurrent drift along them,

    .. math::
        s_{s} = \frac{\langle \|J_s \phi(x)\|^2\rangle}
                     {\langle \|J_s \phi(x)\|^2\rangle + \langle \|J_a \phi(x)\|^2\rangle},
        \qquad s_a = 1 - s_s .
    """
    J = np.asarray(J, dtype=float)
    if J.ndim != 2 or J.shape[0] != J.shape[1]:
        raise ConfigError(f"J has shape {J.shape}; expected a square (unit, unit) matrix")
    sym, anti = (J + J.T) / 2, (J - J.T) / 2
    norm_sym, norm_anti = np.linalg.norm(sym), np.linalg.norm(anti)
    total = norm_sym + norm_anti
    ds = xr.Dataset(
        {
            "J_sym": (("unit", "unit_from"), sym),
            "J_anti": (("unit", "unit_from"), anti),
            "norm_sym": norm_sym,
            "norm_anti": norm_anti,
            "asymmetry": norm_anti / total if total > 0 else np.nan,
        }
    )
    if states is not None:
        states = np.asarray(states, dtype=float)
        if states.shape[-1] != J.shape[0]:
            raise ConfigError(
                f"states have {states.shape[-1]} units in their last axis; J has {J.shape[0]}"
            )
        rates = np.asarray(nonlinearity(jnp.asarray(states))).reshape(-1, J.shape[0])
        power_sym = np.mean(np.sum((rates @ sym.T) ** 2, axis=-1))
        power_anti = np.mean(np.sum((rates @ anti.T) ** 2, axis=-1))
        ds["share_sym"] = power_sym / (power_sym + power_anti)
        ds["share_anti"] = power_anti / (power_sym + power_anti)
    return ds


def _lyapunov(B: np.ndarray, D: np.ndarray) -> np.ndarray:
    r"""Solve :math:`B S + S B^\top = 2 D` (B stable) through its Kronecker form."""
    n = B.shape[0]
    eye = np.eye(n)
    kron = np.kron(eye, B) + np.kron(B, eye)
    return np.linalg.solve(kron, 2 * D.reshape(-1, order="F")).reshape(n, n, order="F")


def ou_entropy_production_rate(B: Array, D: Array) -> float:
    r"""Exact stationary entropy production rate of :math:`dx = -Bx\,dt + \sqrt{2D}\,dW`.

    With the stationary covariance :math:`S` solving :math:`BS + SB^\top = 2D`,

    .. math::
        \Phi = \mathrm{tr}(D^{-1} B S B^\top) - \mathrm{tr}(B).

    ``B`` must be stable (eigenvalues with positive real part) and ``D`` positive definite.
    """
    B, D = np.asarray(B, dtype=float), np.asarray(D, dtype=float)
    if B.ndim != 2 or B.shape[0] != B.shape[1] or D.shape != B.shape:
        raise ConfigError(f"B {B.shape} and D {D.shape} must be square matrices of one size")
    if np.any(np.linalg.eigvals(B).real <= 0):
        raise ConfigError("B has an eigenvalue with real part <= 0: -Bx has no stationary state")
    if np.any(np.linalg.eigvalsh((D + D.T) / 2) <= 0):
        raise ConfigError("D must be positive definite")
    S = _lyapunov(B, D)
    return float(np.trace(np.linalg.solve(D, B @ S @ B.T)) - np.trace(B))


@dataclass(frozen=True)
class EntropyProduction:
    """An entropy production rate estimate (nats per unit time) with its standard error."""

    rate: float
    se: float
    num_batches: int

    def __str__(self) -> str:
        return f"{self.rate:.4g} +- {self.se:.2g} nats per unit time"


def _step_log_ratios(drift, inv_diffusion, paths, dt) -> Array:
    r"""Per-step :math:`\ln p(x_{t+1}\mid x_t) - \ln p(x_t \mid x_{t+1})` under Euler-Maruyama.

    With :math:`\Delta = x_{t+1} - x_t` and :math:`f_0 = f(x_t)`, :math:`f_1 = f(x_{t+1})` the
    Gaussian normalisers cancel and

    .. math::
        \tfrac12 \Delta^\top D^{-1}(f_0 + f_1)
        + \tfrac{dt}{4}\big(f_1^\top D^{-1} f_1 - f_0^\top D^{-1} f_0\big).
    """
    forces = jax.vmap(jax.vmap(drift))(paths)
    steps = paths[:, 1:] - paths[:, :-1]
    f0, f1 = forces[:, :-1], forces[:, 1:]
    heat = 0.5 * jnp.einsum("bti,ij,btj->bt", steps, inv_diffusion, f0 + f1)
    boundary = (
        0.25
        * dt
        * (
            jnp.einsum("bti,ij,btj->bt", f1, inv_diffusion, f1)
            - jnp.einsum("bti,ij,btj->bt", f0, inv_diffusion, f0)
        )
    )
    return heat + boundary


def entropy_production_rate(
    drift: Callable[[Array], Array],
    diffusion: Array,
    paths: Array,
    dt: float,
    *,
    num_batches: int = 20,
) -> EntropyProduction:
    r"""Estimate the entropy production rate from stationary sample paths.

    Parameters
    ----------
    drift
        :math:`f(x)` at one state (dim,) -> (dim,).
    diffusion
        The diffusion matrix :math:`D` (dim, dim) of :math:`dx = f\,dt + \sqrt{2D}\,dW`
        (:math:`D = \Sigma\Sigma^\top/2` for noise :math:`\Sigma\,dW`), or a scalar for
        :math:`D = \text{scalar}\cdot I`.
    paths
        (trial, time, dim) or (time, dim): states ``dt`` apart, from the stationary state.
    dt
        Time between states; the estimator's bias is O(dt).
    num_batches
        The steps of every trial are cut into this many consecutive batches; the estimate is
        the mean log-ratio per unit time, and its standard error is the spread of the batch
        means over :math:`\sqrt{\text{batches}\times\text{trials}}` (batches long against the
        correlation time are nearly independent).

    The estimate is :math:`\hat\Phi = \langle \ln p_F(x_{t+1}\mid x_t) - \ln p_F(x_t\mid
    x_{t+1})\rangle / dt`, the Euler-Maruyama transition densities taken forward and backward
    along the recorded path. For an Ornstein-Uhlenbeck process compare with
    :func:`ou_entropy_production_rate`.

    """
    paths = jnp.asarray(paths, dtype=jnp.result_type(float))
    if paths.ndim == 2:
        paths = paths[None]
    if paths.ndim != 3:
        raise ConfigError(f"paths has shape {paths.shape}; expected (trial, time, dim)")
    dim = paths.shape[-1]
    D = jnp.asarray(diffusion, dtype=paths.dtype)
    D = D * jnp.eye(dim) if D.ndim == 0 else D
    if D.shape != (dim, dim):
        raise ConfigError(f"diffusion has shape {D.shape}; expected () or ({dim}, {dim})")
    if not dt > 0:
        raise ConfigError(f"dt = {dt!r}; expected a positive time step")
    num_steps = paths.shape[1] - 1
    if num_batches < 2 or num_steps < num_batches:
        raise ConfigError(
            f"{num_steps} steps per trial cannot be cut into num_batches={num_batches} (>= 2)"
        )
    ratios = np.asarray(_step_log_ratios(drift, jnp.linalg.inv(D), paths, dt))
    usable = (num_steps // num_batches) * num_batches
    batches = ratios[:, :usable].reshape(paths.shape[0], num_batches, -1).mean(-1) / dt
    batches = batches.reshape(-1)
    return EntropyProduction(
        rate=float(batches.mean()),
        se=float(batches.std(ddof=1) / np.sqrt(batches.size)),
        num_batches=int(batches.size),
    )


def entropy_production_posterior(
    model,
    draws: Mapping[str, Array],
    *,
    dt: float,
    num_trials: int = 20,
    num_steps: int = 2000,
    burn_in: int = 500,
    num_draws: int = 20,
    seed: int = 0,
) -> xr.Dataset:
    r"""Entropy production rate of fitted latent SDEs, one estimate per posterior draw.

    For each of ``num_draws`` draws (taken evenly from ``draws``, leading draw axis), simulate
    ``num_trials`` paths of its latent SDE :math:`dz = g(z)\,dt + L\,dW` without input
    (Euler-Maruyama, step ``dt``, from :math:`z_0 \sim N(0, I)`), drop ``burn_in`` steps so the
    paths are near the stationary state, and apply :func:`entropy_production_rate` with
    :math:`D = LL^\top/2`. ``model`` needs ``drift`` and ``diffusion_tril``
    (:class:`probdyn.models.SDERNN`).

    Returns a Dataset over ``draw`` with ``rate`` and ``se`` (Monte Carlo error of each draw's
    estimate); the spread of ``rate`` across draws is the posterior uncertainty.
    """
    from probdyn.algorithms.sde import EulerMaruyamaPath

    if burn_in >= num_steps - num_trials:
        raise ConfigError(f"burn_in={burn_in} leaves too few of num_steps={num_steps} steps")
    total = len(next(iter(draws.values())))
    picks = np.unique(np.linspace(0, total - 1, min(num_draws, total)).astype(int))
    keys = jax.random.split(jax.random.key(seed), len(picks))
    rates, errors = [], []
    for key, index in zip(keys, picks, strict=True):
        params = {name: jnp.asarray(value[index]) for name, value in draws.items()}
        tril = model.diffusion_tril(params)
        field = model.drift(params)
        paths = EulerMaruyamaPath(field, tril, dt, num_steps).sample(key, (num_trials,))
        estimate = entropy_production_rate(field, tril @ tril.T / 2, paths[:, burn_in:], dt)
        rates.append(estimate.rate)
        errors.append(estimate.se)
    return xr.Dataset(
        {"rate": ("draw", np.asarray(rates)), "se": ("draw", np.asarray(errors))},
        coords={"draw": picks},
        attrs={"dt": dt, "num_trials": num_trials, "num_steps": num_steps, "burn_in": burn_in},
    )
