r"""Posterior over fixed points of inferred dynamics.

For every posterior draw :math:`\theta^{(s)}` the fixed points solve :math:`g_\theta(x) = 0` with

.. math::
    g_\theta(x) = f_\theta(x, u)\ \text{(flow)}\qquad\text{or}\qquad
    g_\theta(x) = F_\theta(x, u) - x\ \text{(map)},

for a constant input :math:`u` (zero by default). Each draw is searched from many starts (states
on its inferred latent trajectories plus jitter, or points of a box) by Levenberg-Marquardt on
:math:`q(x) = \tfrac12 \lVert g_\theta(x) \rVert^2`:

.. math::
    (J^\top J + \lambda I)\,\delta = -J^\top g,\qquad J = \partial g / \partial x,

with :math:`\lambda` shrunk after a step that lowers :math:`q` and grown after one that does not;
for small :math:`\lambda` this is Newton's method (quadratic convergence near a root), for large
:math:`\lambda` gradient descent on :math:`q` (the fallback far from one). A start counts when
:math:`\lVert g \rVert_\infty` < ``tol``; starts that reach the same point are merged. The solver is
vmapped over draws and starts and compiled once.

At each point the eigenvalues :math:`\lambda_i` of :math:`\partial f / \partial x` (flows) or
:math:`\partial F / \partial x` (maps) give the class. With the growth rate
:math:`\sigma_i = \mathrm{Re}\,\lambda_i` (flows) or :math:`\log|\lambda_i|` (maps) and the
margin ``marginal_tol``: any :math:`|\sigma_i| \le` margin is *marginal* (centre-like); otherwise
all negative is *stable*, all positive *unstable*, mixed signs a *saddle*; stable and unstable
points are *spirals* when an eigenvalue is complex, else *nodes*.

Latent coordinates are not identifiable across draws (an invertible map of the latents is
absorbed by the readout), so points of different draws are matched in observation space: the
predicted observation :math:`h_\theta(x^*)` (the model's ``emission_mean``), standardised per
channel. A reference draw (the first with the most common number of points) seeds one cluster
per point; every draw is then assigned to the clusters by an optimal one-to-one assignment
(Hungarian algorithm), and a point farther than ``match_tol`` from every cluster opens a new one.
For the latent view each point is carried into the reference draw's coordinates through the
readouts: :math:`\tilde x = \arg\min_{x'} \lVert h_{\text{ref}}(x') - h_\theta(x^*) \rVert^2`
(the same Levenberg-Marquardt solver; for a linear readout this is the affine map
:math:`C_{\text{ref}}^{+}(C_\theta x^* + d_\theta - d_{\text{ref}})`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.optimize
import xarray as xr
from jax import Array

from probdyn import memory
from probdyn.capabilities import Dynamical, Posterior, require
from probdyn.errors import ConfigError

#: Stability classes, in the order of their integer codes in the dataset (-1: no point).
CLASSES = (
    "stable node",
    "stable spiral",
    "unstable node",
    "unstable spiral",
    "saddle",
    "marginal",
)


@dataclasses.dataclass(frozen=True)
class Dynamics:
    r"""A known vector field with fixed parameters, searched without inference.

    ``vector_field(x, parameters)`` is :math:`f(x)` (``kind="flow"``) or :math:`F(x)`
    (``kind="map"``), e.g. ``Dynamics(probdyn.systems.lorenz, {"sigma": 10, ...}, 3)``. The
    observation space is the latent space itself.
    """

    field: Callable[[Array, Mapping[str, float]], Array]
    parameters: Mapping[str, float]
    latent_dim: int
    kind: str = "flow"

    def vector_field(self, params, x: Array, u: Array | None = None) -> Array:
        """The field at ``x`` (``params`` is empty: the parameters are the object's own)."""
        return self.field(x, self.parameters)

    def emission_mean(self, params, x: Array) -> Array:
        """The identity: points are matched in latent coordinates."""
        return x


def residual(model, params, x: Array, u: Array | None = None) -> Array:
    r"""The function whose roots are the fixed points.

    :math:`g(x) = f(x, u)` for a flow, :math:`g(x) = F(x, u) - x` for a map.
    """
    value = model.vector_field(params, x, u)
    return value if model.kind == "flow" else value - x


def levenberg_marquardt(
    residual: Callable[[Array], Array], x0: Array, *, tol: float, max_steps: int
) -> tuple[Array, Array]:
    r"""Minimise :math:`\tfrac12\lVert r(x)\rVert^2` from ``x0``; return the point and max |r|.

    Stops when max |r| < ``tol`` / 100 (a converged root, polished), when the damping exceeds
    1e12 times the curvature scale (a stalled minimum that is not a root), or after
    ``max_steps`` steps. Works for non-square Jacobians (least squares).
    """
    jacobian = jax.jacfwd(residual)

    def cost(r):
        return 0.5 * jnp.sum(r**2)

    def step(state):
        x, r, lam, i = state
        J = jacobian(x)
        H = J.T @ J
        scale = jnp.maximum(jnp.max(jnp.diag(H)), 1e-12)
        delta = jnp.linalg.solve(H + lam * scale * jnp.eye(x.shape[0]), -J.T @ r)
        x_new = x + delta
        r_new = residual(x_new)
        better = jnp.isfinite(cost(r_new)) & (cost(r_new) < cost(r))
        return (
            jnp.where(better, x_new, x),
            jnp.where(better, r_new, r),
            jnp.where(better, lam * 0.3, lam * 4.0),
            i + 1,
        )

    def running(state):
        _, r, lam, i = state
        return (jnp.max(jnp.abs(r)) >= tol / 100) & (lam < 1e12) & (i < max_steps)

    r0 = residual(x0)
    x, r, _, _ = jax.lax.while_loop(running, step, (x0, r0, jnp.asarray(1e-3, x0.dtype), 0))
    return x, jnp.max(jnp.abs(r))


class _Static:
    """A model as a static jit argument: hashed and compared by identity (models hold dicts)."""

    __slots__ = ("model",)

    def __init__(self, model):
        self.model = model


_STATIC: collections.OrderedDict[int, _Static] = collections.OrderedDict()


def _static(model) -> _Static:
    """The identity wrapper of ``model``: one per live model, so repeated searches reuse it.

    The cache holds the model, so its id cannot be reused by another object meanwhile.
    """
    key = id(model)
    if key not in _STATIC or _STATIC[key].model is not model:
        _STATIC[key] = _Static(model)
        while len(_STATIC) > 16:
            _STATIC.popitem(last=False)
    _STATIC.move_to_end(key)
    return _STATIC[key]


def _search(model, max_steps: int, params, starts, u, tol, merge_radius):
    """Solve from every start of every draw; the Jacobian and predictions at each end point.

    Returns arrays with leading (draw, start) axes: end point, max |g|, Jacobian of the field,
    predicted observation at the end point and at the start, and whether the end point is a
    kept root (converged and not within ``merge_radius`` plus both points' first-order errors
    |g|_2 / sigma_min(dg/dx) of an earlier converged start). The
    draws run in chunks sized by the memory budget (:mod:`probdyn.memory`).
    """

    def per_draw(item):
        p, x0s = item

        def solve(x0):
            x, res = levenberg_marquardt(
                lambda x: residual(model, p, x, u),
                x0,
                tol=tol,
                max_steps=max_steps,
            )
            jac = jax.jacfwd(lambda x: model.vector_field(p, x, u))(x)
            return x, res, jac, model.emission_mean(p, x), model.emission_mean(p, x0)

        x, res, jac, emitted, emitted_start = jax.vmap(solve)(x0s)
        converged = res < tol
        # How far a converged end point may lie from the root it approximates, to first order:
        # |g|_2 / sigma_min(dg/dx). Along a slow direction (a map's eigenvalue near 1, a
        # flow's near 0) a residual under tol still leaves the point far from the root, so two
        # starts that reached the same root are one point when closer than their two errors.
        identity = jnp.eye(x.shape[-1]) if model.kind == "map" else 0.0
        smallest = jnp.linalg.svd(jac - identity, compute_uv=False)[..., -1]
        error = jnp.sqrt(x.shape[-1]) * res / jnp.maximum(smallest, 1e-12)
        distance = jnp.linalg.norm(x[:, None] - x[None], axis=-1)
        earlier = jnp.tril(jnp.ones(distance.shape, bool), k=-1)
        same = distance < merge_radius + error[:, None] + error[None]
        duplicate = jnp.any(earlier & converged[None] & same, axis=1)
        return x, res, jac, emitted, emitted_start, converged & ~duplicate

    return memory.map_chunks(per_draw, (params, starts), what="fixed-point search", unit="draw")


def classify(eigenvalues: np.ndarray, kind: str, marginal_tol: float) -> np.ndarray:
    """Integer class codes (index into :data:`CLASSES`) from eigenvalues (..., eigen)."""
    eigenvalues = np.asarray(eigenvalues)
    with np.errstate(divide="ignore"):
        growth = eigenvalues.real if kind == "flow" else np.log(np.abs(eigenvalues))
    rotating = np.any(np.abs(eigenvalues.imag) > marginal_tol, axis=-1)
    marginal = np.any(np.abs(growth) <= marginal_tol, axis=-1)
    stable = np.all(growth < 0, axis=-1)
    unstable = np.all(growth > 0, axis=-1)
    code = np.full(growth.shape[:-1], CLASSES.index("saddle"))
    code = np.where(stable & ~rotating, CLASSES.index("stable node"), code)
    code = np.where(stable & rotating, CLASSES.index("stable spiral"), code)
    code = np.where(unstable & ~rotating, CLASSES.index("unstable node"), code)
    code = np.where(unstable & rotating, CLASSES.index("unstable spiral"), code)
    return np.where(marginal, CLASSES.index("marginal"), code)


def _parameter_draws(model, posterior, num_draws: int | None, seed: int):
    """(parameter draws with a leading draw axis, latent states or None, number of draws)."""
    if posterior is None:
        if not isinstance(model, Dynamics):
            raise ConfigError("posterior=None is only for a Dynamics with known parameters")
        return {}, None, 1
    if isinstance(posterior, xr.DataTree):
        stacked = posterior["posterior"].to_dataset().stack(sample=("chain", "draw"))
        draws = {k: np.moveaxis(v.values, -1, 0) for k, v in stacked.data_vars.items()}
    elif isinstance(posterior, Mapping):
        draws = {k: np.asarray(v) for k, v in posterior.items()}
    elif isinstance(posterior, Posterior):
        draws = posterior.draws(num_draws, seed=seed)
    else:
        raise ConfigError(
            "posterior must be an inference result (probdyn.capabilities.Posterior: SVIResult, "
            "MCMCResult, PointEstimate, WeightPosterior), an ArviZ DataTree or a mapping of "
            f"parameter draws; got {type(posterior).__name__}"
        )
    sizes = {v.shape[0] for v in draws.values() if np.ndim(v) > 0}
    if len(sizes) != 1:
        raise ConfigError(f"parameter draws need one common leading draw axis; got sizes {sizes}")
    total = sizes.pop()
    if num_draws is not None and num_draws < total:
        keep = np.linspace(0, total - 1, num_draws).round().astype(int)
        draws = {k: v[keep] for k, v in draws.items()}
        total = num_draws
    names = set(model.default_priors(1)) if hasattr(model, "default_priors") else set(draws)
    params = {k: jnp.asarray(v) for k, v in draws.items() if k in names}
    states = draws.get("latents")
    return params, states, total


def _starts(states, per_draw, box, num_draws, num_starts, latent_dim, jitter, rng) -> np.ndarray:
    """Starting points (draw, start, latent): states plus jitter, or uniform in the box.

    ``states`` is (draw, ..., latent) when ``per_draw`` (the posterior's own latents), else
    (..., latent) shared by every draw.
    """
    if states is not None:
        states = np.asarray(states)
        if states.shape[-1] != latent_dim:
            raise ConfigError(
                f"states have {states.shape[-1]} latent dims; the model has {latent_dim}"
            )
        flat = states.reshape(states.shape[0] if per_draw else 1, -1, latent_dim)
        flat = np.broadcast_to(flat, (num_draws, *flat.shape[1:]))
        pick = rng.integers(0, flat.shape[1], size=(num_draws, num_starts))
        chosen = np.take_along_axis(flat, pick[..., None], axis=1)
        spread = flat.std(axis=1, keepdims=True) + 1e-12
        return chosen + jitter * spread * rng.standard_normal(chosen.shape)
    low, high = (np.broadcast_to(np.asarray(b, float), (latent_dim,)) for b in box)
    if np.any(high <= low):
        raise ConfigError(f"box={box} must have every upper bound above its lower bound")
    return rng.uniform(low, high, size=(num_draws, num_starts, latent_dim))


def fixed_points(
    model,
    posterior=None,
    *,
    seed: int = 0,
    num_starts: int = 64,
    num_draws: int | None = None,
    states: Any = None,
    box: tuple[Any, Any] | None = None,
    inputs: Any = None,
    jitter: float = 0.1,
    tol: float | None = None,
    merge_tol: float = 1e-4,
    match_tol: float = 0.5,
    marginal_tol: float = 1e-3,
    max_steps: int = 200,
) -> FixedPointPosterior:
    r"""Find the fixed points of every posterior draw and match them across draws.

    Parameters
    ----------
    model
        A probdyn model (``kind``, ``vector_field``, ``emission_mean``) or a :class:`Dynamics`.
    posterior
        Any inference result (:class:`probdyn.capabilities.Posterior`: an SVI fit gives
        ``num_draws`` guide draws, default 200; NUTS all its draws; a point estimate its
        point), an ArviZ DataTree with a posterior group, or a mapping of parameter draws with
        a leading draw axis; None for a :class:`Dynamics`.
    num_starts
        Starts per draw. They are latent states of the draw (the posterior's ``latents`` site,
        or ``states``: (..., latent), shared by all draws) plus Gaussian
        jitter of ``jitter`` times their spread per dimension; without states, uniform in
        ``box`` = (low, high) (default (-3, 3) for a model, whose latents have unit prior scale).
    inputs
        Constant input :math:`u` under which the fixed points are sought (default: none).
    tol
        A start converged when :math:`\max_i |g_i(x)|` < ``tol`` (default 1e-8 in 64-bit, 1e-4
        in 32-bit precision).
    merge_tol
        Starts closer than ``merge_tol`` times the spread of the starts are one point.
    match_tol
        Gate (root-mean-square distance in observation units standardised per channel) beyond
        which a point opens a new matched fixed point rather than joining one.
    marginal_tol
        Growth rates within this margin of zero make a point *marginal*.

    """
    require(model, Dynamical, "fixed_points")
    kind = model.kind
    if kind not in ("flow", "map"):
        raise ConfigError(f"model.kind={kind!r}; expected 'flow' or 'map'")
    latent_dim = model.latent_dim
    params, posterior_states, num_draws = _parameter_draws(model, posterior, num_draws, seed)
    per_draw = states is None
    states = posterior_states if per_draw else states
    if states is None and box is None:
        if isinstance(model, Dynamics):
            raise ConfigError("give states= or box=(low, high) to place the starts")
        box = (-3.0, 3.0)
    rng = np.random.default_rng(seed)
    dtype = jnp.result_type(float)
    starts = jnp.asarray(
        _starts(states, per_draw, box, num_draws, num_starts, latent_dim, jitter, rng), dtype
    )
    u = None if inputs is None else jnp.asarray(inputs, dtype)
    tol = tol if tol is not None else (1e-8 if dtype == jnp.float64 else 1e-4)
    spread = float(np.sqrt(np.mean(np.var(np.asarray(starts), axis=1)))) or 1.0

    solved = _search(model, max_steps, params, starts, u, tol, merge_tol * spread)
    x, res, jac, emitted, emitted_start, keep = (np.asarray(a) for a in solved)
    eig = np.linalg.eigvals(jac)
    order = np.argsort(-(eig.real if kind == "flow" else np.abs(eig)), axis=-1, kind="stable")
    eig = np.take_along_axis(eig, order, axis=-1)
    codes = classify(eig, kind, marginal_tol)

    # Observation units: the spread of the predicted observations over the starts (the region
    # the data occupy), so that the gate does not shrink with the posterior's own spread.
    obs_scale = emitted_start.reshape(-1, emitted_start.shape[-1]).std(axis=0)
    obs_scale = np.where(obs_scale > 0, obs_scale, 1.0)
    found = [np.flatnonzero(keep[d]) for d in range(num_draws)]
    assignment, reference = _match(
        [emitted[d, idx] / obs_scale for d, idx in enumerate(found)], match_tol
    )
    num_points = 1 + max((int(a.max()) for a in assignment if a.size), default=-1)

    def gather(values, fill):
        out = np.full((num_draws, num_points, *values.shape[2:]), fill, dtype=values.dtype)
        for d, idx in enumerate(found):
            out[d, assignment[d]] = values[d, idx]
        return out

    location = gather(x, np.nan)
    emitted_location = gather(emitted, np.nan)
    reference_params = jax.tree.map(lambda v: v[reference], params)
    aligned = _align(model, reference_params, location, emitted_location, reference, tol, max_steps)
    eigen = gather(eig, np.nan + 0j)
    dataset = xr.Dataset(
        {
            "exists": (("draw", "fixed_point"), gather(keep, False)),
            "location": (("draw", "fixed_point", "latent"), location),
            "aligned_location": (("draw", "fixed_point", "latent"), aligned),
            "observation_mean": (("draw", "fixed_point", "neuron"), emitted_location),
            "eigenvalue_real": (("draw", "fixed_point", "eigen"), eigen.real),
            "eigenvalue_imag": (("draw", "fixed_point", "eigen"), eigen.imag),
            "stability": (("draw", "fixed_point"), gather(codes.astype(np.int8), np.int8(-1))),
            "residual": (("draw", "fixed_point"), gather(res, np.nan)),
            "converged_starts": (("draw",), (res < tol).sum(axis=1)),
        },
        coords={"draw": np.arange(num_draws), "fixed_point": np.arange(num_points)},
        attrs={
            "kind": kind,
            "classes": list(CLASSES),
            "reference_draw": int(reference),
            "num_starts": int(num_starts),
            "tol": float(tol),
            "match_tol": float(match_tol),
            "marginal_tol": float(marginal_tol),
        },
    )
    # The reference draw's parameters travel with the result, so that a saved result can be
    # drawn again (phase portrait) without the posterior it came from.
    for name, value in reference_params.items():
        value = np.asarray(value)
        dims = tuple(f"reference_{name}_{axis}" for axis in range(value.ndim))
        dataset[f"reference_{name}"] = (dims, value)
    dataset["stability"].attrs = {
        "flag_values": list(range(len(CLASSES))),
        "flag_meanings": " ".join(c.replace(" ", "_") for c in CLASSES),
        "missing": -1,
    }
    return FixedPointPosterior(dataset, model, reference_params, u)


def _match(points: list[np.ndarray], match_tol: float) -> tuple[list[np.ndarray], int]:
    """Cluster index of every point of every draw, and the reference draw."""
    counts = np.array([len(p) for p in points])
    values, frequency = np.unique(counts, return_counts=True)
    modal = values[np.argmax(frequency)]
    reference = int(np.flatnonzero(counts == modal)[0])
    centres = [c for c in points[reference]]
    sizes = [1] * len(centres)
    assignment: list[np.ndarray | None] = [None] * len(points)
    assignment[reference] = np.arange(len(centres))
    for d, draw_points in enumerate(points):
        if d == reference:
            continue
        labels = np.full(len(draw_points), -1)
        if centres and len(draw_points):
            difference = draw_points[:, None].astype(np.float64) - np.asarray(centres)[None]
            with np.errstate(over="ignore", invalid="ignore"):
                cost = np.sqrt(np.mean(difference**2, axis=-1))
            # A point whose predicted observation overflows matches nothing: its own cluster.
            cost = np.where(np.isfinite(cost), cost, np.inf)
            rows, cols = scipy.optimize.linear_sum_assignment(np.where(cost < np.inf, cost, 1e300))
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= match_tol:
                    labels[r] = c
                    sizes[c] += 1
                    centres[c] = centres[c] + (draw_points[r] - centres[c]) / sizes[c]
        for r in np.flatnonzero(labels < 0):
            labels[r] = len(centres)
            centres.append(draw_points[r])
            sizes.append(1)
        assignment[d] = labels
    return assignment, reference


@functools.partial(jax.jit, static_argnums=(0, 1))
def _invert_readout(static: _Static, max_steps: int, params, starts, targets, tol):
    """Latent states whose predicted observations under ``params`` best match ``targets``."""

    def solve(x0, y):
        x, _ = levenberg_marquardt(
            lambda x: static.model.emission_mean(params, x) - y, x0, tol=tol, max_steps=max_steps
        )
        return x

    return jax.vmap(solve)(starts, targets)


def _align(model, reference_params, location, emitted, reference, tol, max_steps) -> np.ndarray:
    """Carry every point into the reference draw's latent coordinates through the readouts."""
    ref_location = location[reference]
    # Start each point from the reference draw's point of the same cluster where it has one.
    start = np.where(np.isnan(ref_location)[None], location, ref_location[None])
    start = np.nan_to_num(start)
    target = np.nan_to_num(emitted)

    flat = _invert_readout(
        _static(model),
        max_steps,
        reference_params,
        jnp.asarray(start.reshape(-1, start.shape[-1])),
        jnp.asarray(target.reshape(-1, target.shape[-1])),
        tol,
    )
    aligned = np.array(flat).reshape(location.shape)
    aligned[reference] = ref_location
    return np.where(np.isnan(location), np.nan, aligned)


@dataclasses.dataclass(frozen=True)
class FixedPointPosterior:
    """Fixed points of every posterior draw, matched across draws.

    ``dataset`` has dims (draw, fixed_point, latent, neuron, eigen): ``exists``, ``location``
    (the draw's own latent coordinates), ``aligned_location`` (the reference draw's
    coordinates), ``observation_mean``, ``eigenvalue_real``/``eigenvalue_imag`` (leading first:
    largest real part for flows, largest modulus for maps), ``stability`` (codes into
    :data:`CLASSES`, -1 where the point is absent), ``residual``; absent entries are NaN.
    """

    dataset: xr.Dataset
    model: Any
    reference_params: Mapping[str, Array]
    inputs: Array | None = None

    def _classes(self) -> np.ndarray:
        return self.dataset["stability"].values

    def summary(self, level: float = 0.9) -> pd.DataFrame:
        """One row per matched fixed point.

        Columns: ``p_exists`` (share of draws that have it), ``class`` and ``p_class`` (its most
        probable class and that class's probability given that the point exists),
        ``p_stable``, then mean and central ``level`` interval (``q05``/``q95`` at 0.9) of each
        aligned latent coordinate ``x{i}``, each observation-space coordinate ``y{j}``, and the
        leading eigenvalue's real part and absolute imaginary part.
        """
        ds = self.dataset
        low, high = (1 - level) / 2, (1 + level) / 2
        names = (f"q{round(100 * low):02d}", f"q{round(100 * high):02d}")
        stable = [CLASSES.index("stable node"), CLASSES.index("stable spiral")]
        rows = []
        for k in ds["fixed_point"].values:
            exists = ds["exists"].values[:, k]
            codes = self._classes()[exists, k]
            counts = np.bincount(codes, minlength=len(CLASSES))
            row = {
                "fixed_point": int(k),
                "p_exists": exists.mean(),
                "class": CLASSES[int(np.argmax(counts))],
                "p_class": counts.max() / max(counts.sum(), 1),
                "p_stable": np.isin(codes, stable).mean(),
            }
            columns = {
                **{
                    f"x{i}": ds["aligned_location"].values[exists, k, i]
                    for i in range(ds.sizes["latent"])
                },
                **{
                    f"y{j}": ds["observation_mean"].values[exists, k, j]
                    for j in range(ds.sizes["neuron"])
                },
                "lead_real": ds["eigenvalue_real"].values[exists, k, 0],
                "lead_imag_abs": np.abs(ds["eigenvalue_imag"].values[exists, k, 0]),
            }
            for name, values in columns.items():
                row[f"{name}_mean"] = values.mean()
                row[f"{name}_{names[0]}"] = np.quantile(values, low)
                row[f"{name}_{names[1]}"] = np.quantile(values, high)
            rows.append(row)
        return pd.DataFrame(rows).set_index("fixed_point")

    def describe(self) -> str:
        """A few lines for a terminal: each matched point's class, probabilities, eigenvalue."""
        summary = self.summary()
        counts = self.count_distribution()["total"]
        lines = [
            f"fixed points over {self.dataset.sizes['draw']} posterior draws; number of points: "
            + ", ".join(f"{n}: {p:.2f}" for n, p in counts.items() if p > 0)
        ]
        for k, row in summary.iterrows():
            lines.append(
                f"  point {k}: {row['class']} (P = {row['p_class']:.2f}), exists in "
                f"{100 * row['p_exists']:.0f}% of draws, P(stable) = {row['p_stable']:.2f}, "
                f"leading eigenvalue {row['lead_real_mean']:.3f} "
                f"± {row['lead_imag_abs_mean']:.3f}i"
            )
        return "\n".join(lines)

    def count_distribution(self) -> pd.DataFrame:
        """Posterior probability of each number of fixed points, in total and by class."""
        codes = self._classes()
        counts = {c: (codes == i).sum(axis=1) for i, c in enumerate(CLASSES)}
        counts["total"] = (codes >= 0).sum(axis=1)
        largest = max(int(v.max()) for v in counts.values())
        table = pd.DataFrame(
            {c: np.bincount(v, minlength=largest + 1) / len(v) for c, v in counts.items()}
        )
        table.index.name = "number"
        return table

    def in_credible_region(
        self, value, fixed_point: int, *, level: float = 0.9, space: str = "observation"
    ) -> bool:
        r"""Whether ``value`` lies in the ``level`` credible region of one matched point.

        The region is the ellipsoid :math:`(v - \bar v)^\top \Sigma^{+} (v - \bar v) \le c`
        of the draws' mean and covariance, with :math:`c` the ``level`` quantile of the draws'
        own Mahalanobis distances (no Gaussian assumption on their spread). ``space`` is
        ``"observation"`` or ``"latent"`` (reference draw's coordinates). A point that exists in
        fewer than two draws has no region (False).
        """
        variable = {"observation": "observation_mean", "latent": "aligned_location"}.get(space)
        if variable is None:
            raise ConfigError(f"space={space!r}; expected 'observation' or 'latent'")
        exists = self.dataset["exists"].values[:, fixed_point]
        draws = self.dataset[variable].values[exists, fixed_point]
        if len(draws) < 2:
            return False
        mean = draws.mean(axis=0)
        precision = np.linalg.pinv(np.atleast_2d(np.cov(draws, rowvar=False)), rcond=1e-10)

        def distance(v):
            centred = np.asarray(v) - mean
            return np.einsum("...i,ij,...j->...", centred, precision, centred)

        return bool(distance(value) <= np.quantile(distance(draws), level))

    @classmethod
    def from_tree(cls, tree: xr.DataTree) -> FixedPointPosterior:
        """The result saved in a run's ``fixed_points`` group (see :meth:`attach`)."""
        import json

        from probdyn.models import from_spec

        if "fixed_points" not in tree.children:
            raise ConfigError("the run has no fixed_points group; run probdyn fixed-points on it")
        dataset = tree["fixed_points"].to_dataset().load()
        model = from_spec(json.loads(tree["posterior"].attrs["model"]))
        reference = {
            name.removeprefix("reference_"): jnp.asarray(value.values)
            for name, value in dataset.data_vars.items()
            if name.startswith("reference_")
        }
        return cls(dataset, model, reference)

    def attach(self, tree: xr.DataTree) -> xr.DataTree:
        """A copy of an ArviZ DataTree with this result as its ``fixed_points`` group."""
        tree = tree.copy()
        tree["fixed_points"] = xr.DataTree(self.dataset)
        return tree

    def phase_portrait(self, dims: tuple[int, int] | None = None):
        """Matplotlib figure: aligned fixed points of all draws coloured by class (see report)."""
        from probdyn.report import phase_portrait_figure

        return phase_portrait_figure(self, dims)

    def eigenvalue_figure(self, level: float = 0.9):
        """Matplotlib figure: eigenvalues of every draw and the leading one's credible box."""
        from probdyn.report import eigenvalue_figure

        return eigenvalue_figure(self.dataset, level)
