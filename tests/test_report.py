"""Report pieces that need no browser: the latent draws behind the credible bands."""

import json

import numpy as np
import xarray as xr

from probdyn.algorithms.kalman import kalman_smoother
from probdyn.app.report import latent_draws
from probdyn.models import LDS


def tree_with(posterior: dict, dims: dict, model, observed=None) -> xr.DataTree:
    ds = xr.Dataset({k: (dims[k], v) for k, v in posterior.items()})
    ds.attrs["model"] = json.dumps(model.spec())
    children = {"posterior": xr.DataTree(ds)}
    if observed is not None:
        children["observed_data"] = xr.DataTree(
            xr.Dataset({"y": (("trial", "time", "neuron"), observed)})
        )
    return xr.DataTree(children=children)


def test_recorded_latents_are_returned_for_the_chosen_trial():
    latents = np.random.default_rng(0).normal(size=(2, 3, 4, 5, 2))  # chain draw trial time latent
    model = LDS(latent_dim=2, observation="poisson")
    tree = tree_with(
        {"latents": latents}, {"latents": ("chain", "draw", "trial", "time", "l")}, model
    )
    np.testing.assert_array_equal(latent_draws(tree, trial=1), latents[:, :, 1].reshape(6, 5, 2))


def test_marginalised_lds_draws_follow_the_smoothed_marginals():
    rng = np.random.default_rng(1)
    D, N, T, S = 2, 3, 6, 4000
    params = {
        "A": 0.8 * np.eye(D),
        "b": np.zeros(D),
        "q": np.array([0.5, 0.4]),
        "C": rng.normal(size=(N, D)),
        "d": np.zeros(N),
        "r": np.array([0.3, 0.5, 0.4]),
    }
    dims = {"A": ("l", "l2"), "b": ("l",), "q": ("l",), "C": ("n", "l"), "d": ("n",), "r": ("n",)}
    posterior = {k: np.broadcast_to(v, (1, S, *v.shape)) for k, v in params.items()}
    dims = {k: ("chain", "draw", *v) for k, v in dims.items()}
    observed = rng.normal(size=(1, T, N))
    tree = tree_with(posterior, dims, LDS(latent_dim=D), observed)
    draws = latent_draws(tree, max_draws=S)
    mean, cov = kalman_smoother(
        params["A"], params["b"], np.diag(params["q"] ** 2), params["C"], params["d"],
        params["r"] ** 2, observed[0],
    )  # fmt: skip
    sd = np.sqrt(np.diagonal(np.asarray(cov), axis1=1, axis2=2))
    assert draws.shape == (S, T, D)
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=5 * (sd / np.sqrt(S)).max())
    np.testing.assert_allclose(draws.std(axis=0), sd, rtol=0.08)
