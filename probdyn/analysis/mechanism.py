r"""Reverse-engineering a noise-driven network: its orbit and the residency of its output.

Torre et al. (2025) describe HMM-emulating RNNs by where their hidden states go under noise
(a closed orbit in the leading principal components) and by how long the output stays put:
each time step is labelled by the length :math:`r` of the run of identical symbols it belongs to,

- ``"transition"``: :math:`r < 2` (the output is changing),
- ``"kick zone"``: :math:`2 \le r \le 8`,
- ``"cluster"``: :math:`r > 8` (slow, noise-driven dwelling).

These are our reading of the paper's groups (<2, 2-8, >8 steps); the thresholds are arguments.

:func:`kick_neurons` ablates one hidden unit at a time (its activity clamped to zero) and
counts the network's output transitions of each kind under the same noise: the units whose
ablation removes most transitions of some kind are the paper's "kick neurons".

The paper's mechanism, each as a measurement that can come out negative:
:func:`orbit_winding` (do the noisy states circulate one way around the orbit's plane?),
:func:`speed_regions` (are there slow regions joined by fast transitions, and do the fast steps
carry the output's switches?) and :func:`phase_decoding` (does the phase on the orbit predict
the symbol on held-out trials, beyond chance and beyond shuffled trials?).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from probdyn.errors import ConfigError, DataError

GROUPS = ("transition", "kick zone", "cluster")


def run_lengths(symbols) -> np.ndarray:
    """For every step of ``symbols`` (trial, time), the length of its run of equal symbols."""
    values = np.asarray(symbols)
    if values.ndim != 2:
        raise DataError(f"symbols have shape {values.shape}; expected (trial, time)")
    lengths = np.empty(values.shape, dtype=int)
    for n, row in enumerate(values):
        starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
        sizes = np.diff(np.concatenate([starts, [row.size]]))
        lengths[n] = np.repeat(sizes, sizes)
    return lengths


def residency_groups(symbols, *, short: int = 2, long: int = 8) -> np.ndarray:
    """Group index per step: 0 transition (run < ``short``), 1 kick zone, 2 cluster (> ``long``)."""
    lengths = run_lengths(symbols)
    return np.where(lengths < short, 0, np.where(lengths <= long, 1, 2))


def orbit_pca(hidden, num_components: int = 3) -> xr.Dataset:
    r"""Principal components of hidden states (..., hidden): where the noise-driven orbit lies.

    Returns ``components`` (component, unit; each signed so that its largest loading is
    positive), ``explained_variance_ratio`` (component), the ``mean`` state and the
    ``projection`` (..., component) of every state.
    """
    states = np.asarray(hidden, dtype=np.float64)
    flat = states.reshape(-1, states.shape[-1])
    if flat.shape[0] < 2 or num_components > min(flat.shape):
        raise DataError(
            f"{flat.shape[0]} states of {flat.shape[1]} units cannot give {num_components} "
            "principal components"
        )
    mean = flat.mean(axis=0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    # Each component's sign fixed by its largest loading (positive), not by the SVD's whim:
    # the same states in another order give the same axes, so a phase's direction means one
    # thing.
    vt = vt * np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])[:, None]
    variance = singular**2
    projection = (states - mean) @ vt[:num_components].T
    dims = [f"axis_{i}" for i in range(states.ndim - 1)]
    return xr.Dataset(
        {
            "components": (("component", "unit"), vt[:num_components]),
            "explained_variance_ratio": ("component", variance[:num_components] / variance.sum()),
            "mean": ("unit", mean),
            "projection": ((*dims, "component"), projection),
        }
    )


def _trials(hidden) -> np.ndarray:
    """Hidden states as (trial, time, unit)."""
    states = np.asarray(hidden, dtype=np.float64)
    if states.ndim != 3 or states.shape[1] < 3:
        raise DataError(
            f"hidden states have shape {states.shape}; expected (trial, time >= 3, unit)"
        )
    return states


def _symbols_of(symbols, shape: tuple[int, ...]) -> np.ndarray:
    """Symbols (trial, time) checked to pair with hidden states of (trial, time) ``shape``."""
    values = np.asarray(symbols)
    if values.shape != tuple(shape):
        raise DataError(f"symbols have shape {values.shape}; the hidden states {tuple(shape)}")
    return values


def orbit_phase(hidden) -> np.ndarray:
    r"""Phase :math:`\theta_t \in (-\pi, \pi]` of each state on the orbit's plane.

    The plane is spanned by the first two principal components of all states
    (:func:`orbit_pca`), centred on their mean: :math:`\theta = \operatorname{atan2}(p_2, p_1)`.
    """
    projection = orbit_pca(_trials(hidden), 2).projection.values
    return np.arctan2(projection[..., 1], projection[..., 0])


def orbit_winding(hidden, *, z: float = 3.0) -> xr.Dataset:
    r"""Whether the noise-driven states circulate: the mean winding of their phase per step.

    With :math:`\Delta\theta_t = \theta_{t+1} - \theta_t` wrapped into :math:`(-\pi, \pi]`
    (:func:`orbit_phase`), each trial's mean :math:`\omega_n = \overline{\Delta\theta_t}`
    (radians per step); ``winding`` is their mean over trials, ``winding_se`` its standard error
    (trials independent), ``turns`` each trial's :math:`\sum_t \Delta\theta_t / 2\pi`, and
    ``circulates`` whether :math:`|\bar\omega| >` ``z`` standard errors. A network whose
    noise-free map has a stable point and whose noisy states still wind one way has a
    noise-sustained orbit (Torre et al. 2025); reversing time flips the sign, and a reversible
    process (no preferred direction) does not circulate.
    """
    theta = orbit_phase(hidden)
    steps = np.angle(np.exp(1j * np.diff(theta, axis=1)))
    per_trial = steps.mean(axis=1)
    mean = per_trial.mean()
    se = per_trial.std(ddof=1) / np.sqrt(len(per_trial)) if len(per_trial) > 1 else np.inf
    return xr.Dataset(
        {
            "winding": ((), mean),
            "winding_se": ((), se),
            "turns": ("trial", steps.sum(axis=1) / (2 * np.pi)),
            "circulates": ((), bool(abs(mean) > z * se)),
        }
    )


def _two_gaussians(values: np.ndarray, iterations: int = 200):
    """Means, sds and responsibilities of a two-component 1-D Gaussian mixture fitted by EM."""
    lo, hi = np.quantile(values, [0.25, 0.75])
    weight, mean = np.array([0.5, 0.5]), np.array([lo, hi])
    sd = np.full(2, values.std() / 2 + 1e-12)
    for _ in range(iterations):
        log_p = np.log(weight) - np.log(sd) - 0.5 * ((values[:, None] - mean) / sd) ** 2
        resp = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        resp /= resp.sum(axis=1, keepdims=True)
        total = resp.sum(axis=0) + 1e-12
        weight = total / len(values)
        mean = (resp * values[:, None]).sum(axis=0) / total
        sd = np.sqrt((resp * (values[:, None] - mean) ** 2).sum(axis=0) / total) + 1e-12
    order = np.argsort(mean)
    return mean[order], sd[order], resp[:, order]


def speed_regions(hidden, symbols=None, *, field=None, separation: float = 2.0) -> xr.Dataset:
    r"""Slow regions and fast transitions: the hidden state's speed along its trajectories.

    The speed :math:`v_t = \lVert h_{t+1} - h_t \rVert` of every step (the step taken, noise
    included), or with ``field`` (a function of states (..., unit) giving the noise-free next
    states, e.g. ``lambda h: model.vector_field(params, h)`` vmapped) the noise-free speed
    :math:`\lVert F(h_t) - h_t \rVert` at every visited state but the last (the speed of
    Sussillo & Barak's slow-point analysis), is split into a slow and
    a fast group by a two-component Gaussian mixture on :math:`\log v_t` (EM); each step gets
    the more probable group (``fast``, (trial, time - 1)). The groups are distinct when
    Ashman's :math:`D = \sqrt2\,|\mu_2 - \mu_1| / \sqrt{s_1^2 + s_2^2}` exceeds
    ``separation`` (2: the mixture is bimodal; Ashman, Bird & Zepf 1994): ``distinct``. A
    unimodal spread of speeds (a random walk) gives :math:`D` below 2.

    Returns ``slow_speed`` and ``fast_speed`` (:math:`e^{\mu}` of each group), ``fast_share``,
    ``ashman_d``, ``distinct``, ``fast``; with ``symbols`` (trial, time) also
    ``p_fast_at_switch`` and ``p_fast_elsewhere``: the share of fast steps among the steps
    where the output symbol changes and among the others (fast transitions that carry the
    output's switches make the first much larger).
    """
    states = _trials(hidden)
    if field is None:
        speed = np.linalg.norm(np.diff(states, axis=1), axis=-1)
    else:
        visited = states[:, :-1]
        speed = np.linalg.norm(np.asarray(field(visited), np.float64) - visited, axis=-1)
    moving = speed > 0
    if moving.sum() < 10:
        raise DataError("fewer than 10 steps of the hidden states move; no speeds to split")
    log_speed = np.log(speed[moving])
    mean, sd, resp = _two_gaussians(log_speed)
    fast = np.zeros(speed.shape, bool)
    fast[moving] = resp[:, 1] > 0.5
    ashman = np.sqrt(2.0) * abs(mean[1] - mean[0]) / np.sqrt(sd[0] ** 2 + sd[1] ** 2)
    out = {
        "slow_speed": ((), np.exp(mean[0])),
        "fast_speed": ((), np.exp(mean[1])),
        "fast_share": ((), fast.mean()),
        "ashman_d": ((), ashman),
        "distinct": ((), bool(ashman > separation)),
        "fast": (("trial", "step"), fast),
    }
    if symbols is not None:
        values = _symbols_of(symbols, states.shape[:2])
        switch = values[:, 1:] != values[:, :-1]
        out["p_fast_at_switch"] = ((), fast[switch].mean() if switch.any() else np.nan)
        out["p_fast_elsewhere"] = ((), fast[~switch].mean() if (~switch).any() else np.nan)
    return xr.Dataset(out)


def phase_decoding(
    hidden, symbols, *, num_bins: int = 12, folds: int = 5, seed: int = 0
) -> xr.Dataset:
    r"""How well the orbit's phase predicts the emitted symbol, on trials held out.

    The phase (:func:`orbit_phase`) is cut into ``num_bins`` equal sectors; each sector
    predicts the symbol most often emitted there on the training trials (the most frequent
    symbol overall where a sector is empty). ``folds``-fold cross-validation over trials gives
    ``accuracy``; ``chance`` is the held-out accuracy of always predicting the training
    trials' most frequent symbol, and ``shuffled`` the accuracy of the same decoder when the
    trials' symbol sequences are permuted among trials (``seed``), which breaks any link
    between a trial's phase and its own symbols. Torre et al. (2025) find the phase sets the
    emission: accuracy well above both controls.
    """
    theta = orbit_phase(hidden)
    values = _symbols_of(symbols, theta.shape)
    if not (np.all(values >= 0) and np.all(values == np.round(values))):
        raise DataError("symbols must be non-negative integers (0, 1, ...)")
    values = values.astype(int)
    if not 2 <= folds <= len(values):
        raise ConfigError(f"folds={folds}; expected 2..{len(values)} (the trials)")
    sector = np.minimum(((theta + np.pi) / (2 * np.pi) * num_bins).astype(int), num_bins - 1)
    num_symbols = int(values.max()) + 1
    split = np.arange(len(values)) % folds

    def score(labels):
        hits, chance_hits = 0, 0
        for k in range(folds):
            train, test = split != k, split == k
            counts = np.zeros((num_bins, num_symbols))
            np.add.at(counts, (sector[train], labels[train]), 1)
            overall = int(np.argmax(counts.sum(axis=0)))
            rule = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), overall)
            hits += (rule[sector[test]] == labels[test]).sum()
            chance_hits += (labels[test] == overall).sum()
        return hits / values.size, chance_hits / values.size

    accuracy, chance = score(values)
    permuted = values[np.random.default_rng(seed).permutation(len(values))]
    shuffled, _ = score(permuted)
    return xr.Dataset(
        {"accuracy": ((), accuracy), "chance": ((), chance), "shuffled": ((), shuffled)}
    )


def kick_neurons(
    model,
    params,
    *,
    seed: int,
    num_trials: int = 50,
    num_timesteps: int = 200,
    threshold: float = 0.5,
    min_transitions: int = 20,
    max_group: int = 10,
) -> xr.Dataset:
    r"""Output transitions of a noise-driven RNN with each hidden unit ablated in turn.

    ``model`` is a :class:`probdyn.models.RNNEmulator` (anything with ``hidden``,
    ``noise_dim``, ``num_symbols`` and ``latent_path(params, noise, dt)``) and ``params`` one draw
    of its weights. The same noise (``seed``) drives the intact network and every ablated copy,
    in which unit :math:`u`'s activity is clamped to zero (row :math:`u` of :math:`W_{hh}` and
    :math:`W_{in}` zeroed, and its bias where the model has biases: its pre-activation is 0, so ReLU
    keeps it at 0). The output is the
    most likely symbol :math:`s_t = \arg\max W_{out} h_t` (the readout's sampling noise would
    add transitions of its own). For every ordered pair :math:`i \ne j`,
    :math:`n_{ij}` counts the steps with :math:`s_t = i,\ s_{t+1} = j`, and

    .. math:: \mathrm{drop}_{u,ij} = 1 - n^{(u)}_{ij} / n_{ij}

    where the intact network makes at least ``min_transitions`` such transitions (NaN
    elsewhere). Unit :math:`u` is a kick neuron when some drop exceeds ``threshold``: its
    removal takes away most transitions of at least one kind, possibly of one direction only
    (the paper's kick neurons are direction-selective).

    Switching may also be carried by a group of units none of which matters alone. So the units
    are ranked by their largest single drop (``rank``: rank -> unit, ties by unit index) and the
    first :math:`k` ranked units are ablated together, for :math:`k = 1 \dots` ``max_group``:
    ``group_transitions`` and ``group_relative_drop`` (group_size, from, to), defined as above.

    Returns ``transitions`` (from, to) of the intact network, ``ablated_transitions`` (unit,
    from, to), ``relative_drop`` (unit, from, to), the output ``volatility`` (unit)
    :math:`P(s_{t+1} \ne s_t)` of each ablated copy and ``intact_volatility``, ``kick``
    (unit), and the group ablation above.
    """
    if max_group < 1:
        raise ConfigError(f"max_group={max_group}; expected at least 1 unit")
    num_symbols = model.num_symbols
    noise = jax.random.normal(jax.random.key(seed), (num_trials, num_timesteps, model.noise_dim))

    def transition_counts(weights):
        hidden = jax.vmap(lambda xi: model.latent_path(weights, xi, 1.0))(noise)
        symbols = jnp.argmax(hidden @ weights["W_out"].T, axis=-1)
        pairs = symbols[:, :-1] * num_symbols + symbols[:, 1:]
        counts = jnp.bincount(pairs.ravel(), length=num_symbols**2)
        return counts.reshape(num_symbols, num_symbols)

    def ablated(removed):
        keep = ~removed[:, None]
        silenced = dict(params, W_hh=params["W_hh"] * keep, W_in=params["W_in"] * keep)
        if "b" in params:
            silenced["b"] = params["b"] * keep[:, 0]
        return transition_counts(silenced)

    units = jnp.arange(model.hidden)
    intact = np.asarray(transition_counts(params))
    per_unit = np.asarray(jax.lax.map(lambda unit: ablated(units == unit), units))
    changes = ~np.eye(num_symbols, dtype=bool)
    steps = num_trials * (num_timesteps - 1)
    counted = changes & (intact >= min_transitions)

    def relative_drop(counts):
        return np.where(counted, 1.0 - counts / np.where(counted, intact, 1), np.nan)

    drop = relative_drop(per_unit)
    largest = np.where(counted, drop, -np.inf).max(axis=(1, 2))
    ranking = np.argsort(-largest, kind="stable")
    sizes = np.arange(1, min(max_group, model.hidden) + 1)
    rank_of_unit = jnp.asarray(np.argsort(ranking))
    per_group = np.asarray(jax.lax.map(lambda size: ablated(rank_of_unit < size), sizes))
    symbol = np.arange(num_symbols)
    return xr.Dataset(
        {
            "transitions": (("from", "to"), intact),
            "ablated_transitions": (("unit", "from", "to"), per_unit),
            "relative_drop": (("unit", "from", "to"), drop),
            "volatility": ("unit", per_unit[:, changes].sum(axis=-1) / steps),
            "intact_volatility": ((), intact[changes].sum() / steps),
            "kick": ("unit", largest > threshold),
            "rank": ("rank", ranking),
            "group_transitions": (("group_size", "from", "to"), per_group),
            "group_relative_drop": (("group_size", "from", "to"), relative_drop(per_group)),
        },
        coords={"from": symbol, "to": symbol, "group_size": sizes},
    )
