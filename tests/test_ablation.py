"""Ablations of SDE RNNs: the connectivity without J_a or a population, run in unit space."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probdyn.analysis.ablation import ablated_connectivity, asymmetry_populations, simulate_units
from probdyn.data.integrate import euler_maruyama_path
from probdyn.errors import ConfigError
from probdyn.models import SDERNN


def _draw(model, seed=0):
    priors = model.site_priors(model.latent_dim)
    keys = jax.random.split(jax.random.key(seed), len(priors))
    return {name: prior.sample(k) for k, (name, prior) in zip(keys, priors.items(), strict=True)}


def test_connectivity_ablations():
    rng = np.random.default_rng(0)
    J = rng.normal(size=(6, 6))
    given = J.copy()
    symmetric = ablated_connectivity(J, remove="antisymmetric")
    np.testing.assert_allclose(symmetric, symmetric.T)
    np.testing.assert_allclose(symmetric + ablated_connectivity(J, remove="symmetric"), J)
    silenced = ablated_connectivity(J, silence=[1, 4])
    assert (silenced[:, [1, 4]] == 0).all()
    np.testing.assert_array_equal(np.delete(silenced, [1, 4], 1), np.delete(J, [1, 4], 1))
    np.testing.assert_array_equal(J, given)  # what the user gave is not changed
    with pytest.raises(ConfigError, match="remove="):
        ablated_connectivity(J, remove="both")
    # Only the antisymmetric couplings touching units 0 and 3 go; the rest of J stays.
    local = ablated_connectivity(J, remove="antisymmetric", among=[0, 3])
    anti = (J - J.T) / 2
    touched = np.zeros((6, 6), bool)
    touched[[0, 3], :] = touched[:, [0, 3]] = True
    np.testing.assert_allclose(local, np.where(touched, symmetric, J))
    np.testing.assert_allclose((local - local.T)[~touched], 2 * anti[~touched])
    np.testing.assert_allclose(
        ablated_connectivity(J, remove="antisymmetric", among=np.ones(6, bool)), symmetric
    )
    with pytest.raises(ConfigError, match="give remove="):
        ablated_connectivity(J, among=[0])


def test_populations_ranked_by_their_share_of_the_antisymmetric_part():
    # Units 2 and 5 carry the only antisymmetric coupling (a rotation between them).
    J = np.eye(6) + 0.3
    J[2, 5], J[5, 2] = 2.0, -2.0
    groups = asymmetry_populations(J, 3)
    assert sorted(np.flatnonzero(groups == 0)) == [2, 5]
    assert np.bincount(groups).tolist() == [2, 2, 2]
    with pytest.raises(ConfigError, match="num_groups"):
        asymmetry_populations(J, 7)


@pytest.mark.parametrize("diffusion", ["isotropic", "state"])
def test_the_intact_network_in_unit_space_is_the_latent_sde(diffusion):
    # Same noise, same path: the unit-space run of a low-rank network read back in latent
    # coordinates equals the latent SDE run directly, and never leaves the subspace.
    model = SDERNN(num_units=12, rank=2, observation="latent", diffusion=diffusion)
    params = _draw(model)
    starts = jnp.array([[0.3, -0.2], [1.0, 0.5]])
    J = np.asarray(model.connectivity(params))
    latent, off = simulate_units(model, params, J, starts, 0.05, 40, seed=3, substeps=4)
    keys = jax.random.split(jax.random.key(3), 2)
    direct = jax.vmap(
        lambda z0, k: euler_maruyama_path(
            partial(model.drift(params), u=None),
            z0,
            model.noise_factor(params),
            k,
            num_points=40,
            interval=0.05,
            substeps=4,
        )
    )(starts, keys)
    np.testing.assert_allclose(latent, direct, atol=1e-8)
    assert off.max() < 1e-8
    # Silencing units keeps the subspace invariant; removing J_a does not.
    _, off_silenced = simulate_units(
        model, params, ablated_connectivity(J, silence=[0, 1, 2]), starts, 0.05, 40, seed=3
    )
    assert off_silenced.max() < 1e-8
    _, off_symmetric = simulate_units(
        model, params, ablated_connectivity(J, remove="antisymmetric"), starts, 0.05, 40, seed=3
    )
    assert off_symmetric.max() > 1e-3


def test_simulate_units_refuses_mismatched_shapes():
    model = SDERNN(num_units=5, rank=2, observation="latent")
    params = _draw(model)
    with pytest.raises(ConfigError, match="units"):
        simulate_units(model, params, np.eye(4), np.zeros((1, 2)), 0.1, 5, seed=0)
    with pytest.raises(ConfigError, match="starts"):
        simulate_units(model, params, np.eye(5), np.zeros((1, 3)), 0.1, 5, seed=0)
