r"""Simulators that return recordings in the data convention together with their ground truth.

- :func:`simulate_attractor`: chaotic attractor -> Poisson spikes, the recipe of Sedler,
  Versteeg & Pandarinath (2023).
- :func:`simulate_hmm`: symbol sequences from the HMM architectures of Torre et al. (2025).
- :func:`simulate_sde`: sample paths of a stochastic system observed directly (plus optional
  Gaussian noise), for drift-diffusion matching.
- :func:`simulate_facrnn_teacher`: two independent attractors (Lorenz, Thomas) carried by a
  low-rank teacher RNN, the synthetic benchmark of FacRNN (Li et al. 2025).

Ground truth travels with the data as variables with a ``_true`` suffix (``latents_true``,
``rates_true``, ``readout_true``, ``transition_matrix_true``, ...), so it survives netCDF.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr
from jax import Array

from probdyn.data.integrate import euler_maruyama_path, rk4_path
from probdyn.data.systems import ATTRACTORS, SDE_SYSTEMS, lorenz96
from probdyn.data.validate import validate
from probdyn.errors import DataError
from probdyn.schema import Count, NonNegative, Positive


def _choose(name: str, table: dict, what: str):
    if name not in table:
        raise DataError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{name} = {value!r}; expected a positive integer")
    return int(value)


def simulate_attractor(
    system: str = "Arneodo",
    *,
    num_trials: Count = 2000,
    num_timesteps: Count = 70,
    num_neurons: Count = 10,
    points_per_period: Count | None = None,
    burn_in_periods: NonNegative = 10.0,
    seed: int,
) -> xr.Dataset:
    r"""Poisson spikes driven by a chaotic attractor (Sedler et al. 2023).

    One long trajectory of ``system`` (after ``burn_in_periods`` periods from a jittered point on
    the attractor) is sampled at ``points_per_period`` points per period (defaults: 35 for
    Arneodo, Rossler and Thomas, 100 for Lorenz), cut into ``num_trials`` consecutive trials of
    ``num_timesteps`` bins, and projected to neurons:

    .. math::
        a = z W,\quad W_{ij} \sim U(-\tfrac12, \tfrac12),\quad
        \tilde a_n = (a_n - \bar a_n)/\mathrm{sd}(a_n),\quad
        r = \exp(\tilde a),\quad y \sim \mathrm{Poisson}(r).

    Returns ``spikes``, ``latents_true`` (the attractor's coordinates), ``rates_true`` (per bin),
    ``readout_true`` ``W`` (latent, neuron); ``attrs`` hold the system name and its parameters.
    ``dt`` is the sampling interval in the system's own time unit.
    """
    attractor = _choose(system, ATTRACTORS, "attractor")
    num_trials = _positive_int(num_trials, "num_trials")
    num_timesteps = _positive_int(num_timesteps, "num_timesteps")
    num_neurons = _positive_int(num_neurons, "num_neurons")
    points = _positive_int(points_per_period or attractor.points_per_period, "points_per_period")
    interval = attractor.period / points
    key_start, key_readout, key_spikes = jax.random.split(jax.random.key(seed), 3)
    burn_in = max(2, int(burn_in_periods * points))
    latents = _attractor_trajectory(
        system, num_trials * num_timesteps, interval, key_start, burn_in
    )
    if not np.isfinite(latents).all():
        raise DataError(f"the {system} trajectory diverged; try fewer points per period")
    latents = latents.reshape(num_trials, num_timesteps, 3)

    readout = np.asarray(jax.random.uniform(key_readout, (3, num_neurons), minval=-0.5, maxval=0.5))
    activity = latents @ readout
    flat = activity.reshape(-1, num_neurons)
    activity = (activity - flat.mean(0)) / flat.std(0)
    rates = np.exp(activity)
    spikes = np.asarray(jax.random.poisson(key_spikes, rates), dtype=np.int64)

    ds = xr.Dataset(
        {
            "spikes": (("trial", "time", "neuron"), spikes),
            "latents_true": (("trial", "time", "latent"), latents),
            "rates_true": (("trial", "time", "neuron"), rates),
            "readout_true": (("latent", "neuron"), readout),
        },
        coords={"time": np.arange(num_timesteps) * interval},
        attrs={
            "dt": float(interval),
            "system": system,
            "seed": int(seed),
            **{f"parameter_{k}": float(v) for k, v in attractor.parameters.items()},
        },
    )
    return validate(ds, "poisson")


@partial(jax.jit, static_argnums=(0, 2, 4))
def _integrate_attractor(field, x0, num_points, interval, substeps):
    return rk4_path(field, x0, num_points=num_points, interval=interval, substeps=substeps)


def hmm_architecture(architecture: str, num_states: int | None = None):
    r"""Initial, transition and emission probabilities of the HMMs of Torre et al. (2025).

    - ``"linear"`` (:math:`M \in \{2,\dots,5\}`, default 3): a chain; each state stays with
      probability :math:`1 - q`, :math:`q = 0.05^{1/(M-1)}`, and moves to its chain neighbours
      with :math:`q` split equally among them (so crossing the whole chain in :math:`M - 1`
      consecutive switches has probability 0.05 for every :math:`M`). State :math:`i` emits
      :math:`[0.99(1 - a_i),\ 0.01,\ 0.99\,a_i]`, :math:`a_i = i/(M-1)`.
    - ``"fully_connected"`` (3 states): stay 0.95, 0.025 to each other state; emission 0.98 on
      the diagonal, 0.01 elsewhere.
    - ``"cyclic"`` (4 states): a ring, stay 0.95, 0.025 to each neighbour; emissions as the
      linear chain's with :math:`a = (0, \tfrac12, 1, \tfrac12)` around the ring (the ring visits
      the two pure symbols through mixed states, our reading of the paper).

    Three symbols and a uniform initial distribution throughout.
    """
    if architecture == "linear":
        m = 3 if num_states is None else num_states
        if m not in range(2, 6):
            raise DataError(f"num_states = {m!r} for a linear chain; expected 2, 3, 4 or 5")
        q = 0.05 ** (1.0 / (m - 1))
        transition = np.zeros((m, m))
        for i in range(m):
            neighbours = [j for j in (i - 1, i + 1) if 0 <= j < m]
            transition[i, i] = 1.0 - q
            transition[i, neighbours] = q / len(neighbours)
        mix = np.arange(m) / (m - 1)
    elif architecture == "fully_connected":
        m = _fixed_states(architecture, num_states, 3)
        transition = np.full((m, m), 0.025) + np.eye(m) * (0.95 - 0.025)
        emission = np.full((m, 3), 0.01) + np.eye(3) * (0.98 - 0.01)
        return np.full(m, 1.0 / m), transition, emission
    elif architecture == "cyclic":
        m = _fixed_states(architecture, num_states, 4)
        transition = 0.95 * np.eye(m)
        for i in range(m):
            transition[i, (i - 1) % m] = transition[i, (i + 1) % m] = 0.025
        mix = np.array([0.0, 0.5, 1.0, 0.5])
    else:
        raise DataError(
            f"unknown HMM architecture {architecture!r}; expected 'linear', 'fully_connected' or "
            "'cyclic'"
        )
    emission = np.stack([0.99 * (1 - mix), np.full(m, 0.01), 0.99 * mix], axis=1)
    return np.full(m, 1.0 / m), transition, emission


def _fixed_states(architecture: str, num_states: int | None, required: int) -> int:
    if num_states not in (None, required):
        raise DataError(
            f"the {architecture} HMM has {required} states; got num_states={num_states}"
        )
    return required


def simulate_hmm(
    architecture: str = "linear",
    *,
    num_states: Count | None = None,
    num_trials: Count = 100,
    num_timesteps: Count = 100,
    seed: int,
) -> xr.Dataset:
    """Symbol sequences from one of the HMMs of :func:`hmm_architecture`.

    Returns ``symbols`` (trial, time), the hidden ``states_true`` and the ``initial_true``,
    ``transition_matrix_true`` (state, next_state) and ``emission_matrix_true`` (state, symbol);
    ``dt`` is 1 (one symbol per step).
    """
    initial, transition, emission = hmm_architecture(architecture, num_states)
    num_trials = _positive_int(num_trials, "num_trials")
    num_timesteps = _positive_int(num_timesteps, "num_timesteps")
    key_init, key_path, key_emit = jax.random.split(jax.random.key(seed), 3)
    log_transition = jnp.log(jnp.asarray(transition))
    first = jax.random.categorical(key_init, jnp.log(jnp.asarray(initial)), shape=(num_trials,))

    def advance(states, key):
        nxt = jax.random.categorical(key, log_transition[states])
        return nxt, nxt

    keys = jax.random.split(key_path, num_timesteps - 1)
    _, rest = jax.lax.scan(advance, first, keys)
    states = np.asarray(jnp.concatenate([first[None], rest]).T, dtype=np.int64)
    log_emission = jnp.log(jnp.asarray(emission))
    symbols = np.asarray(jax.random.categorical(key_emit, log_emission[states]), dtype=np.int64)
    num_symbols = emission.shape[1]
    ds = xr.Dataset(
        {
            "symbols": (("trial", "time"), symbols),
            "states_true": (("trial", "time"), states),
            "initial_true": ("state", initial),
            "transition_matrix_true": (("state", "next_state"), transition),
            "emission_matrix_true": (("state", "symbol"), emission),
        },
        coords={"time": np.arange(num_timesteps, dtype=float), "symbol": np.arange(num_symbols)},
        attrs={"dt": 1.0, "architecture": architecture, "seed": int(seed)},
    )
    return validate(ds, "categorical")


def simulate_sde(
    system: str = "double_well",
    *,
    num_trials: Count = 50,
    num_timesteps: Count = 200,
    dt: Positive = 0.05,
    noise_scale: Positive | None = None,
    observation_noise: NonNegative = 0.0,
    substeps: Count = 10,
    parameters: dict[str, float] | None = None,
    seed: int,
) -> xr.Dataset:
    r"""Sample paths of :math:`dx = f(x)\,dt + \sigma s(x)\,dW` (:mod:`probdyn.data.systems`).

    Each trial starts at :math:`x_0 \sim N(m, s^2 I)` (the system's default initial mean and
    scale) and is integrated by Euler-Maruyama with ``substeps`` steps per recorded bin of width
    ``dt``. The state is observed directly, ``y = x + observation_noise * N(0, I)``, with one
    ``neuron`` per state dimension. Returns ``y``, ``latents_true``, ``noise_scale_true`` and the
    drift parameters in ``attrs``.
    """
    spec = _choose(system, SDE_SYSTEMS, "SDE system")
    num_trials = _positive_int(num_trials, "num_trials")
    num_timesteps = _positive_int(num_timesteps, "num_timesteps")
    substeps = _positive_int(substeps, "substeps")
    if not dt > 0:
        raise DataError(f"dt = {dt!r}; expected a positive bin width")
    params = {**spec.parameters, **(parameters or {})}
    unknown = set(params) - set(spec.parameters)
    if unknown:
        raise DataError(
            f"unknown parameters {sorted(unknown)} for {system}; it has {spec.parameters}"
        )
    sigma = spec.noise_scale if noise_scale is None else float(noise_scale)
    key_start, key_path, key_obs = jax.random.split(jax.random.key(seed), 3)
    x0 = jnp.asarray(spec.initial_mean) + spec.initial_scale * jax.random.normal(
        key_start, (num_trials, spec.dim)
    )
    drift = partial(spec.drift, p=params)
    paths = jax.vmap(
        lambda x, k: euler_maruyama_path(
            drift,
            x,
            spec.noise_factor(sigma),
            k,
            num_points=num_timesteps,
            interval=dt,
            substeps=substeps,
        )
    )(x0, jax.random.split(key_path, num_trials))
    latents = np.asarray(paths, dtype=np.float64)
    if not np.isfinite(latents).all():
        raise DataError(f"the {system} simulation diverged; use a smaller dt or more substeps")
    y = latents + observation_noise * np.asarray(jax.random.normal(key_obs, latents.shape))
    ds = xr.Dataset(
        {
            "y": (("trial", "time", "neuron"), y),
            "latents_true": (("trial", "time", "latent"), latents),
            "noise_scale_true": ((), sigma),
        },
        coords={"time": np.arange(num_timesteps) * dt},
        attrs={
            "dt": float(dt),
            "system": system,
            "seed": int(seed),
            "observation_noise": float(observation_noise),
            **{f"parameter_{k}": float(v) for k, v in params.items()},
        },
    )
    return validate(ds, "gaussian")


def _attractor_trajectory(
    system: str, num_points: int, interval: float, key, burn_in: int
) -> np.ndarray:
    """``num_points`` states of ``system`` ``interval`` apart, after ``burn_in`` discarded ones.

    The start is the system's initial condition jittered by 5% (``key``); RK4 steps no longer
    than period / 1500 keep the discretisation error far below the attractor's own divergence.
    """
    attractor = ATTRACTORS[system]
    substeps = max(1, math.ceil(interval / (attractor.period / 1500)))
    x0 = jnp.asarray(attractor.initial_condition) * (1.0 + 0.05 * jax.random.normal(key, (3,)))
    field = partial(attractor.vector_field, p=attractor.parameters)
    path = _integrate_attractor(field, x0, num_points + burn_in, interval, substeps)
    return np.asarray(path[burn_in:], dtype=np.float64)


@partial(jax.jit, static_argnums=(2,))
def _fit_low_rank_teacher(z: Array, init: dict, num_steps: int) -> tuple[dict, Array]:
    r"""Least squares for :math:`z_{t+1} \approx B \tanh(A z_t + a) + b` by Adam."""

    def loss(p):
        predicted = jnp.tanh(z[:-1] @ p["A"].T + p["a"]) @ p["B"].T + p["b"]
        return jnp.mean((z[1:] - predicted) ** 2)

    schedule = optax.cosine_decay_schedule(1e-2, num_steps, alpha=0.01)
    optimiser = optax.adam(schedule)

    def step(carry, _):
        p, state = carry
        value, grad = jax.value_and_grad(loss)(p)
        updates, state = optimiser.update(grad, state)
        return (optax.apply_updates(p, updates), state), value

    (p, _), losses = jax.lax.scan(step, (init, optimiser.init(init)), None, length=num_steps)
    return p, losses


def _lorenz96_trajectory(num_points: int, interval: float, key) -> np.ndarray:
    """Six-site Lorenz-96 (F = 8), RK4 at ``interval / 10``, after 10 time units of burn-in."""
    x0 = 8.0 + jax.random.normal(key, (6,))
    burn_in = math.ceil(10 / interval)
    field = partial(lorenz96, p={"F": 8.0})
    path = _integrate_attractor(field, x0, num_points + burn_in, interval, 10)
    return np.asarray(path[burn_in:], dtype=np.float64)


def simulate_facrnn_teacher(
    *,
    latents: str = "Lorenz+Thomas",
    num_trials: int = 40,
    num_timesteps: int = 100,
    num_neurons: int = 20,
    noise: float = 0.1,
    fit_steps: int = 3000,
    seed: int,
) -> xr.Dataset:
    r"""Two independent attractors carried by a low-rank teacher RNN (FacRNN's synthetic data).

    Lorenz and Thomas (dysts' scaled form) are integrated by RK4 and sampled every
    :math:`\Delta = 0.1` time units, each from a jittered start after 10 periods, and z-scored
    per coordinate: :math:`z_t = (z^{(1)}_t, z^{(2)}_t) \in \mathbb{R}^6`, two 3-D groups
    independent by construction. A rank-6 teacher on ``num_neurons`` units,
    :math:`z_{t+1} \approx B \tanh(A z_t + a) + b` (:math:`A` (N, 6), :math:`B` (6, N)), is
    fitted to carry them (least squares on one-step transitions, Adam, ``fit_steps`` steps), and
    the recording is its activity

    .. math::
        x_t = A z_t + a + \texttt{noise}\,\epsilon_t,\qquad \epsilon_t \sim N(0, I_N).

    ``latents="Lorenz96"`` replaces the two groups by one entangled 6-D system (six-site
    Lorenz-96, :math:`F = 8`; every dimension in group 0), the control on which no independent
    grouping exists. The trajectory is cut into ``num_trials`` trials of ``num_timesteps``
    bins. Returns ``y``,
    ``latents_true`` (with the coordinate ``latent_group``: 0 Lorenz, 1 Thomas), the teacher's
    ``A_true``, ``a_true``, ``B_true``, ``b_true``, ``connectivity_true`` :math:`J = AB` and
    ``subconnectivity_true`` :math:`A_g B_g` (group, neuron, neuron_from), and ``fit_bins``:
    True on even time steps (fitting), False on odd ones (testing). ``attrs["teacher_r2"]`` is
    the teacher's one-step :math:`R^2` on the latents.
    """
    num_trials = _positive_int(num_trials, "num_trials")
    num_timesteps = _positive_int(num_timesteps, "num_timesteps")
    num_neurons = _positive_int(num_neurons, "num_neurons")
    fit_steps = _positive_int(fit_steps, "fit_steps")
    if not noise >= 0:
        raise DataError(f"noise = {noise!r}; expected a non-negative standard deviation")
    if latents not in ("Lorenz+Thomas", "Lorenz96"):
        raise DataError(f"latents = {latents!r}; expected 'Lorenz+Thomas' or 'Lorenz96'")
    interval, total = 0.1, num_trials * num_timesteps
    keys = jax.random.split(jax.random.key(seed), 5)
    if latents == "Lorenz96":
        z = _lorenz96_trajectory(total, interval, keys[0])
        groups = np.zeros(6, int)
    else:
        trajectories = []
        for name, key in (("Lorenz", keys[0]), ("Thomas", keys[1])):
            burn_in = max(2, math.ceil(10 * ATTRACTORS[name].period / interval))  # ten periods
            trajectories.append(_attractor_trajectory(name, total, interval, key, burn_in))
        z = np.concatenate(trajectories, axis=1)
        groups = np.repeat([0, 1], 3)
    z = (z - z.mean(0)) / z.std(0)
    k_a, k_bias, k_b = jax.random.split(keys[2], 3)
    init = {
        "A": jax.random.normal(k_a, (num_neurons, 6)) / math.sqrt(6),
        "a": 0.5 * jax.random.normal(k_bias, (num_neurons,)),
        "B": jax.random.normal(k_b, (6, num_neurons)) / math.sqrt(num_neurons),
        "b": jnp.zeros(6),
    }
    teacher, losses = _fit_low_rank_teacher(jnp.asarray(z), init, fit_steps)
    teacher = {k: np.asarray(v, dtype=np.float64) for k, v in teacher.items()}
    residual = float(losses[-1]) / float(np.mean((z[1:] - z[1:].mean(0)) ** 2))
    x = z @ teacher["A"].T + teacher["a"]
    x = x + noise * np.asarray(jax.random.normal(keys[3], x.shape), dtype=np.float64)
    A, B = teacher["A"], teacher["B"]
    sub = np.stack([A[:, groups == g] @ B[groups == g] for g in np.unique(groups)])
    ds = xr.Dataset(
        {
            "y": (("trial", "time", "neuron"), x.reshape(num_trials, num_timesteps, num_neurons)),
            "latents_true": (("trial", "time", "latent"), z.reshape(num_trials, num_timesteps, 6)),
            "A_true": (("neuron", "latent"), A),
            "a_true": (("neuron",), teacher["a"]),
            "B_true": (("latent", "neuron"), B),
            "b_true": (("latent",), teacher["b"]),
            "connectivity_true": (("neuron", "neuron_from"), A @ B),
            "subconnectivity_true": (("group", "neuron", "neuron_from"), sub),
            "fit_bins": (("time",), np.arange(num_timesteps) % 2 == 0),
        },
        coords={
            "time": np.arange(num_timesteps) * interval,
            "latent_group": ("latent", groups),
        },
        attrs={
            "dt": interval,
            "latents": latents,
            "seed": int(seed),
            "noise": float(noise),
            "teacher_r2": 1.0 - residual,
        },
    )
    return validate(ds, "gaussian")
