r"""Asymmetry and time irreversibility of stochastic dynamics.

- :func:`decompose_connectivity`: :math:`J = J_s + J_a` with :math:`J_s = (J + J^\top)/2`,
  :math:`J_a = (J - J^\top)/2`; their norms and the share of each in the recurrent drift along
  trajectories.
- :func:`ou_entropy_production_rate`: the exact entropy production rate of a linear SDE;
  :func:`ou_entropy_production_modes` breaks it down by the drift's eigenmodes.
- :func:`entropy_production_rate`: a path estimator for any SDE with additive noise, from the
  log-ratio of forward and time-reversed Euler-Maruyama transition densities, with its Monte Carlo
  standard error; :func:`entropy_production_parts` breaks it down by the forces that make up the
  drift (populations of units, the symmetric and antisymmetric connectivity);
  :func:`entropy_production_posterior` applies both to every posterior draw of a fitted latent
  SDE.

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


def _modal_basis(B: np.ndarray) -> tuple[np.ndarray, list[slice], np.ndarray]:
    r"""A real basis :math:`P` in which :math:`P^{-1}BP` is block diagonal (1x1 and 2x2 blocks).

    A real eigenvalue gives its eigenvector; a complex pair :math:`\gamma \pm i\omega` gives the
    real and imaginary parts of one eigenvector, whose block is
    :math:`\begin{pmatrix}\gamma & \omega\\ -\omega & \gamma\end{pmatrix}`. Returns the basis,
    each mode's slice of it and each mode's eigenvalue (the one with :math:`\omega \ge 0`).
    """
    values, vectors = np.linalg.eig(B)
    order = np.lexsort((-values.imag, values.real))
    columns, blocks, eigenvalues = [], [], []
    used = np.zeros(len(values), bool)
    scale = np.max(np.abs(values)) + 1.0
    for index in order:
        if used[index]:
            continue
        value, vector = values[index], vectors[:, index]
        used[index] = True
        start = len(columns)
        if abs(value.imag) <= 1e-10 * scale:
            columns.append(vector.real if np.abs(vector.real).max() > 0 else vector.imag)
        else:
            partner = np.argmin(np.where(used, np.inf, np.abs(values - value.conjugate())))
            used[partner] = True
            if value.imag < 0:
                value, vector = value.conjugate(), vector.conjugate()
            columns += [vector.real, vector.imag]
        blocks.append(slice(start, len(columns)))
        eigenvalues.append(value)
    return np.stack(columns, axis=1), blocks, np.asarray(eigenvalues)


def ou_entropy_production_modes(B: Array, D: Array) -> xr.Dataset:
    r"""The OU entropy production rate broken down by the eigenmodes of the drift.

    For :math:`dx = -Bx\,dt + \sqrt{2D}\,dW`, in the real modal basis :math:`P` of :math:`B`
    (:math:`P^{-1}BP` block diagonal: one block per real eigenvalue, one 2x2 block
    :math:`\begin{pmatrix}\gamma & \omega\\ -\omega & \gamma\end{pmatrix}` per complex pair
    :math:`\gamma \pm i\omega`) each mode :math:`k` is an OU process of its own block
    :math:`B_k` driven by its block :math:`D_k` of :math:`P^{-1}DP^{-\top}`, and its rate is
    :func:`ou_entropy_production_rate` of :math:`(B_k, D_k)`: zero for a real mode (one
    dimension is always reversible), :math:`2\omega^2/\gamma` for a rotating mode with
    isotropic noise in its plane. Entropy production does not depend on the coordinates, so
    neither does a mode's rate. The modes sum to the total when they are independent (the noise
    block diagonal in the modal basis, e.g. normal :math:`B` and isotropic :math:`D`); what
    their interaction adds (or removes) is ``coupling`` = total - sum of the modes.

    Returns a Dataset over ``mode`` with ``rate``, ``decay`` :math:`\gamma`, ``frequency``
    :math:`\omega` and ``size`` (1 or 2), and the scalars ``total`` and ``coupling``.
    """
    total = ou_entropy_production_rate(B, D)
    B, D = np.asarray(B, dtype=float), np.asarray(D, dtype=float)
    P, blocks, eigenvalues = _modal_basis(B)
    P_inv = np.linalg.inv(P)
    B_modal, D_modal = P_inv @ B @ P, P_inv @ D @ P_inv.T
    rates = np.array(
        [
            ou_entropy_production_rate(B_modal[k, k], D_modal[k, k])
            if k.stop - k.start > 1
            else 0.0
            for k in blocks
        ]
    )
    return xr.Dataset(
        {
            "rate": ("mode", rates),
            "decay": ("mode", eigenvalues.real),
            "frequency": ("mode", eigenvalues.imag),
            "size": ("mode", np.array([k.stop - k.start for k in blocks])),
            "total": total,
            "coupling": total - rates.sum(),
        },
        coords={"mode": np.arange(len(blocks))},
    )


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
    paths, inverse = _checked_paths(paths, diffusion, dt, num_batches)
    ratios = np.asarray(_step_log_ratios(drift, inverse, paths, dt))
    rate, se, count = _batch_means(ratios, num_batches, dt)
    return EntropyProduction(rate=float(rate), se=float(se), num_batches=count)


def _checked_paths(paths, diffusion, dt: float, num_batches: int) -> tuple[Array, Array]:
    """(trial, time, dim) paths and :math:`D^{-1}`, or a ConfigError naming what is wrong."""
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
    return paths, jnp.linalg.inv(D)


def _batch_means(per_step: np.ndarray, num_batches: int, dt: float):
    """Mean per unit time of (trial, step, ...) values, its se from batch means, the batch count.

    Each trial's steps are cut into ``num_batches`` consecutive batches; the standard error is
    the spread of the batch means over the square root of their number.
    """
    usable = (per_step.shape[1] // num_batches) * num_batches
    trimmed = per_step[:, :usable]
    batches = trimmed.reshape(trimmed.shape[0], num_batches, -1, *trimmed.shape[2:]).mean(2) / dt
    batches = batches.reshape(-1, *trimmed.shape[2:])
    return batches.mean(0), batches.std(0, ddof=1) / np.sqrt(len(batches)), len(batches)


def entropy_production_parts(
    parts: Callable[[Array], Array],
    diffusion: Array,
    paths: Array,
    dt: float,
    *,
    names: list[str] | None = None,
    num_batches: int = 20,
) -> xr.Dataset:
    r"""The entropy production rate broken down by the forces that make up the drift.

    With the drift a sum of forces :math:`f = \sum_p f_p` (``parts(x)`` returns them stacked,
    (part, dim)), the log-ratio of :func:`entropy_production_rate` is, up to a boundary term
    whose stationary mean is zero, the work each force does along the path against the noise
    (a Stratonovich sum),

    .. math::
        \Phi_p = \frac{1}{dt}\Big\langle \tfrac12 \Delta_t^\top D^{-1}
                  \big(f_p(x_t) + f_p(x_{t+1})\big)\Big\rangle,
        \qquad \sum_p \Phi_p \approx \Phi .

    A gradient force :math:`f_p = -D\nabla U` does no net work in a stationary state (its sum
    telescopes to :math:`U(x_0) - U(x_T)`), so :math:`\Phi_p` is the share of the
    irreversibility that force :math:`p` carries; it can be negative. For a network, the forces
    are its populations' (or its connectivity's symmetric and antisymmetric parts')
    contributions to the drift (:meth:`probdyn.models.SDERNN.drift_parts`).

    Returns a Dataset over ``part`` (named by ``names``) with ``rate`` and ``se`` (batch means,
    as in :func:`entropy_production_rate`), and their sum ``total`` with its ``total_se``.
    """
    paths, inverse = _checked_paths(paths, diffusion, dt, num_batches)
    forces = jax.vmap(jax.vmap(parts))(paths)  # (trial, time, part, dim)
    steps = paths[:, 1:] - paths[:, :-1]
    work = 0.5 * jnp.einsum("bti,ij,btpj->btp", steps, inverse, forces[:, :-1] + forces[:, 1:])
    work = np.asarray(work)
    rate, se, _ = _batch_means(work, num_batches, dt)
    total, total_se, _ = _batch_means(work.sum(-1), num_batches, dt)
    names = list(names) if names is not None else [f"part {p}" for p in range(work.shape[-1])]
    if len(names) != work.shape[-1]:
        raise ConfigError(f"{len(names)} names for {work.shape[-1]} parts")
    return xr.Dataset(
        {"rate": ("part", rate), "se": ("part", se), "total": total, "total_se": total_se},
        coords={"part": names},
        attrs={"dt": dt, "num_batches": num_batches},
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
    by=None,
) -> xr.Dataset:
    r"""Entropy production rate of fitted latent SDEs, one estimate per posterior draw.

    For each of ``num_draws`` draws (taken evenly from ``draws``, leading draw axis), simulate
    ``num_trials`` paths of its latent SDE :math:`dz = g(z)\,dt + L\,dW` without input
    (Euler-Maruyama, step ``dt``, from :math:`z_0 \sim N(0, I)`), drop ``burn_in`` steps so the
    paths are near the stationary state, and apply :func:`entropy_production_rate` with
    :math:`D = LL^\top/2`. ``model`` needs ``drift`` and ``diffusion_tril``
    (:class:`probdyn.models.SDERNN`; additive noise: the estimator does not cover
    state-dependent diffusion).

    Returns a Dataset over ``draw`` with ``rate`` and ``se`` (Monte Carlo error of each draw's
    estimate); the spread of ``rate`` across draws is the posterior uncertainty. With ``by``
    (``"symmetry"`` or one label per unit, as :meth:`probdyn.models.SDERNN.drift_parts` reads
    it) also ``part_rate`` and ``part_se`` (draw, part) from :func:`entropy_production_parts`
    on the same paths.
    """
    from probdyn.algorithms.sde import EulerMaruyamaPath

    if burn_in >= num_steps - num_trials:
        raise ConfigError(f"burn_in={burn_in} leaves too few of num_steps={num_steps} steps")
    if getattr(model, "diffusion", None) == "state":
        raise ConfigError(
            "the path estimator assumes additive noise; a model with diffusion='state' "
            "(state-dependent noise) is not covered"
        )
    total = len(next(iter(draws.values())))
    picks = np.unique(np.linspace(0, total - 1, min(num_draws, total)).astype(int))
    keys = jax.random.split(jax.random.key(seed), len(picks))
    rates, errors, splits = [], [], []
    for key, index in zip(keys, picks, strict=True):
        params = {name: jnp.asarray(value[index]) for name, value in draws.items()}
        tril = model.diffusion_tril(params)
        field = model.drift(params)
        paths = EulerMaruyamaPath(field, tril, dt, num_steps).sample(key, (num_trials,))
        stationary, D = paths[:, burn_in:], tril @ tril.T / 2
        estimate = entropy_production_rate(field, D, stationary, dt)
        rates.append(estimate.rate)
        errors.append(estimate.se)
        if by is not None:
            names, parts = model.drift_parts(params, by)
            splits.append(entropy_production_parts(parts, D, stationary, dt, names=names))
    result = xr.Dataset(
        {"rate": ("draw", np.asarray(rates)), "se": ("draw", np.asarray(errors))},
        coords={"draw": picks},
        attrs={"dt": dt, "num_trials": num_trials, "num_steps": num_steps, "burn_in": burn_in},
    )
    if splits:
        split = xr.concat(splits, dim="draw").assign_coords(draw=picks)
        result = result.assign(part_rate=split.rate, part_se=split.se)
    return result
