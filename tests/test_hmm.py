"""DiscreteHMM against brute-force enumeration of every state path on tiny problems."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy.special import logsumexp

from probdyn import ConfigError
from probdyn.algorithms.hmm import DiscreteHMM


def _random_hmm(rng, K, T, time_varying, emission):
    initial = rng.normal(size=K)
    transitions = rng.normal(size=(T, K, K) if time_varying else (K, K))
    if emission == "categorical":
        obs = dist.Categorical(logits=jnp.asarray(rng.normal(size=(K, 3))))
        value = rng.integers(0, 3, size=T)
    elif emission == "poisson":
        obs = dist.Poisson(jnp.asarray(rng.uniform(0.5, 4.0, size=(T, K))))
        value = rng.poisson(2.0, size=T)
    else:  # multivariate Gaussian emission: event shape (2,)
        obs = dist.Normal(jnp.asarray(rng.normal(size=(K, 2))), 0.7).to_event(1)
        value = rng.normal(size=(T, 2))
    return jnp.asarray(initial), jnp.asarray(transitions), obs, jnp.asarray(value)


def _brute_force(initial, transitions, obs, value, observed=None, initial_step=-1):
    """Joint log p(z, y) of every path (K^T of them), by the model's definition."""
    K = initial.shape[-1]
    T = value.shape[0]
    log_pi = np.asarray(jax.nn.log_softmax(initial))
    log_a = np.asarray(jax.nn.log_softmax(transitions, axis=-1))
    log_a = np.broadcast_to(log_a, (T, K, K)) if log_a.ndim == 2 else log_a
    event_dims = len(obs.event_shape)
    log_e = np.asarray(obs.log_prob(jnp.expand_dims(value, -1 - event_dims)))
    log_e = np.broadcast_to(log_e, (T, K))
    if observed is not None:
        log_e = np.where(np.asarray(observed)[:, None], log_e, 0.0)
    paths = list(itertools.product(range(K), repeat=T))
    joint = []
    for path in paths:
        # z_{-1} ~ pi, summed out, then T transitions; or z_0 ~ pi and T - 1 transitions.
        first = logsumexp(log_pi + log_a[0][:, path[0]]) if initial_step == -1 else log_pi[path[0]]
        total = first + log_e[0, path[0]]
        for t in range(1, T):
            total += log_a[t][path[t - 1], path[t]] + log_e[t, path[t]]
        joint.append(total)
    return np.array(paths), np.array(joint)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("emission", ["categorical", "poisson", "gaussian"])
@pytest.mark.parametrize("time_varying", [False, True])
@pytest.mark.parametrize("initial_step", [-1, 0])
def test_log_prob_filter_smooth_viterbi_equal_enumeration(
    emission, time_varying, seed, initial_step
):
    rng = np.random.default_rng([seed, ["categorical", "poisson", "gaussian"].index(emission)])
    K, T = 3, 5
    initial, transitions, obs, value = _random_hmm(rng, K, T, time_varying, emission)
    paths, joint = _brute_force(initial, transitions, obs, value, initial_step=initial_step)
    log_z = logsumexp(joint)
    posterior = np.exp(joint - log_z)
    for method in ("sequential", "parallel"):
        hmm = DiscreteHMM(
            initial, transitions, obs, num_steps=T, method=method, initial_step=initial_step
        )
        np.testing.assert_allclose(hmm.log_prob(value), log_z, rtol=0, atol=1e-10)
    hmm = DiscreteHMM(initial, transitions, obs, num_steps=T, initial_step=initial_step)
    smoothed = np.stack([[posterior[paths[:, t] == k].sum() for k in range(K)] for t in range(T)])
    np.testing.assert_allclose(hmm.smooth(value), smoothed, atol=1e-10)
    # Filtered marginal at t: enumerate the paths of the prefix y_{0:t}.
    for t in range(T):
        prefix_paths, prefix_joint = _brute_force(
            initial,
            transitions[: t + 1] if time_varying else transitions,
            obs_prefix(obs, t + 1),
            value[: t + 1],
            initial_step=initial_step,
        )
        weights = np.exp(prefix_joint - logsumexp(prefix_joint))
        expected = [weights[prefix_paths[:, t] == k].sum() for k in range(K)]
        np.testing.assert_allclose(hmm.filter(value)[t], expected, atol=1e-10)
    np.testing.assert_array_equal(hmm.viterbi(value), paths[np.argmax(joint)])


def obs_prefix(obs, length):
    """The emission distribution of the first ``length`` steps (time-varying ones are cut)."""
    if len(obs.batch_shape) == 2:
        return dist.Poisson(obs.rate[:length])
    return obs


def test_missing_bins_drop_their_emission():
    rng = np.random.default_rng(5)
    initial, transitions, obs, value = _random_hmm(rng, 2, 6, False, "categorical")
    observed = jnp.array([True, False, True, True, False, True])
    _, joint = _brute_force(initial, transitions, obs, value, observed)
    for method in ("sequential", "parallel"):
        hmm = DiscreteHMM(initial, transitions, obs, num_steps=6, observed=observed, method=method)
        np.testing.assert_allclose(hmm.log_prob(value), logsumexp(joint), atol=1e-10)


def test_batched_trials_and_long_sequences_agree_between_methods():
    rng = np.random.default_rng(2)
    K, T, trials = 4, 2000, 3
    obs = dist.Normal(jnp.asarray(rng.normal(size=K) * 2), 1.0)
    hmm = DiscreteHMM(jnp.zeros(K), jnp.asarray(rng.normal(size=(K, K))), obs, num_steps=T)
    value = hmm.sample(jax.random.key(0), (trials,))
    assert value.shape == (trials, T)
    sequential = hmm.log_prob(value)
    parallel = DiscreteHMM(
        hmm.initial_logits, hmm.transition_logits, obs, num_steps=T, method="parallel"
    ).log_prob(value)
    assert sequential.shape == (trials,)
    np.testing.assert_allclose(parallel, sequential, rtol=1e-10)
    per_trial = [hmm.log_prob(v) for v in value]
    np.testing.assert_allclose(sequential, per_trial, rtol=1e-12)


def test_samples_follow_the_chain():
    # Deterministic cycle 0 -> 1 -> 2 -> 0 with noiseless emissions: sampled symbols cycle.
    cycle = jnp.log(jnp.roll(jnp.eye(3), 1, axis=1) + 1e-30)
    emission = dist.Categorical(logits=jnp.log(jnp.eye(3) + 1e-30))
    hmm = DiscreteHMM(jnp.zeros(3), cycle, emission, num_steps=7)
    states, symbols = hmm.sample_with_states(jax.random.key(1), (50,))
    np.testing.assert_array_equal(states, symbols)
    np.testing.assert_array_equal((symbols[:, 1:] - symbols[:, :-1]) % 3, 1)
    # Every start state appears (z_{-1} uniform).
    assert set(np.asarray(symbols[:, 0]).tolist()) == {0, 1, 2}
    # A start fixed at state 2: z_{-1} = 2 moves to z_0 = 0; with initial_step=0, z_0 = 2.
    start = jnp.log(jnp.array([1e-30, 1e-30, 1.0]))
    for initial_step, first in ((-1, 0), (0, 2)):
        hmm = DiscreteHMM(start, cycle, emission, num_steps=7, initial_step=initial_step)
        states, _ = hmm.sample_with_states(jax.random.key(2), (20,))
        np.testing.assert_array_equal(states, (first + np.arange(7)) % 3 + np.zeros((20, 1)))


def test_a_single_step_is_the_mixture_of_the_first_state():
    initial = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    emission = dist.Poisson(jnp.array([1.0, 3.0, 7.0]))
    for method in ("sequential", "parallel"):
        hmm = DiscreteHMM(
            initial, jnp.zeros((3, 3)), emission, num_steps=1, method=method, initial_step=0
        )
        expected = logsumexp(np.asarray(initial + emission.log_prob(4.0)))
        np.testing.assert_allclose(hmm.log_prob(jnp.array([4.0])), expected, atol=1e-12)


def test_bad_shapes_are_named():
    with pytest.raises(ConfigError, match="last two axes"):
        DiscreteHMM(jnp.zeros(3), jnp.zeros((3, 2)), dist.Normal(jnp.zeros(3), 1.0), num_steps=4)
    with pytest.raises(ConfigError, match="batch shape"):
        DiscreteHMM(jnp.zeros(3), jnp.zeros((3, 3)), dist.Normal(jnp.zeros(2), 1.0), num_steps=4)
    with pytest.raises(ConfigError, match="number of time steps"):
        DiscreteHMM(jnp.zeros(3), jnp.zeros((3, 3)), dist.Normal(jnp.zeros(3), 1.0))
    with pytest.raises(ConfigError, match="method"):
        DiscreteHMM(
            jnp.zeros(3),
            jnp.zeros((3, 3)),
            dist.Normal(jnp.zeros(3), 1.0),
            num_steps=4,
            method="fast",
        )
    with pytest.raises(ConfigError, match="initial_step"):
        DiscreteHMM(
            jnp.zeros(3),
            jnp.zeros((3, 3)),
            dist.Normal(jnp.zeros(3), 1.0),
            num_steps=4,
            initial_step=1,
        )


@pytest.mark.parametrize("emission", ["categorical", "poisson", "gaussian"])
@pytest.mark.parametrize("masked", [False, True])
def test_pointwise_terms_are_each_values_density_given_those_before_it(emission, masked):
    """Terms = log p(values up to it) - log p(values before it), every path enumerated."""
    rng = np.random.default_rng(["categorical", "poisson", "gaussian"].index(emission))
    K, T = 2, 4
    initial, transitions, obs, value = _random_hmm(rng, K, T, False, emission)
    observed = jnp.asarray([True, False, True, True]) if masked else None
    hmm = DiscreteHMM(initial, transitions, obs, num_steps=T, observed=observed)
    terms = np.asarray(hmm.pointwise_log_prob(value))
    assert terms.shape == value.shape
    # Each step's emission split into components (one for scalar emissions).
    event = len(obs.event_shape)
    base = obs.base_dist if event else obs
    parts = np.asarray(base.log_prob(jnp.expand_dims(value, -1 - event)))  # (T, K[, N])
    parts = np.broadcast_to(parts, (T, K, *parts.shape[2:])).reshape(T, K, -1)
    if masked:
        parts = parts * np.asarray(observed)[:, None, None]
    log_pi = np.asarray(jax.nn.log_softmax(initial))
    log_a = np.asarray(jax.nn.log_softmax(transitions, axis=-1))

    def log_prefix(t, n):
        """log p(y_<t, the first n components of y_t), every path of length t + 1 summed."""
        joint = []
        for path in itertools.product(range(K), repeat=t + 1):
            total = logsumexp(log_pi + log_a[:, path[0]])
            total += sum(log_a[path[s - 1], path[s]] for s in range(1, t + 1))
            total += sum(parts[s, path[s]].sum() for s in range(t)) + parts[t, path[t], :n].sum()
            joint.append(total)
        return logsumexp(joint)

    expected = np.array(
        [[log_prefix(t, n + 1) - log_prefix(t, n) for n in range(parts.shape[-1])] for t in range(T)]
    )
    np.testing.assert_allclose(terms.reshape(T, -1), expected, atol=1e-10)
    np.testing.assert_allclose(terms.sum(), float(hmm.log_prob(value)), atol=1e-10)
