"""Report pieces that need no browser: the latent draws and smoothed predictions behind the bands."""

import json

import numpy as np
import xarray as xr

from probdyn.algorithms.kalman import kalman_smoother
from probdyn.app.report import posterior_paths, smoothed_prediction
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
    np.testing.assert_array_equal(
        posterior_paths(tree, [1])[2][0], latents[:, :, 1].reshape(6, 5, 2)
    )


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
    tree = tree_with(posterior, dims, LDS(parameterisation="redundant", latent_dim=D), observed)
    draws = posterior_paths(tree, max_draws=S)[2][0]
    mean, cov = kalman_smoother(
        params["A"], params["b"], np.diag(params["q"] ** 2), params["C"], params["d"],
        params["r"] ** 2, observed[0],
    )  # fmt: skip
    sd = np.sqrt(np.diagonal(np.asarray(cov), axis1=1, axis2=2))
    assert draws.shape == (S, T, D)
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=5 * (sd / np.sqrt(S)).max())
    np.testing.assert_allclose(draws.std(axis=0), sd, rtol=0.08)


def test_the_smoothed_prediction_follows_its_own_trial_and_not_another():
    """The fit given a trial tracks that trial's rotating traces; given another trial it does not.

    The issue this answers: the fresh-path predictive of an LDS fitted to a rotating recording
    is flat near zero, so the report looked as if the model fitted nothing.
    """
    rng = np.random.default_rng(4)
    D, N, T, S = 2, 3, 60, 50
    angle = 0.3
    A = 0.98 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    params = {
        "A": A,
        "b": np.zeros(D),
        "q": np.array([0.15, 0.15]),
        "C": rng.normal(size=(N, D)),
        "d": np.zeros(N),
        "r": np.full(N, 0.2),
    }
    x = np.zeros((2, T, D))
    x[0, 0] = [2.0, 0.0]
    x[1, 0] = [0.0, 2.0]  # a quarter period apart: the two trials' traces are uncorrelated
    for t in range(1, T):
        x[:, t] = x[:, t - 1] @ A.T + params["q"] * rng.normal(size=(2, D))
    observed = x @ params["C"].T + params["r"] * rng.normal(size=(2, T, N))
    dims = {"A": ("l", "l2"), "b": ("l",), "q": ("l",), "C": ("n", "l"), "d": ("n",), "r": ("n",)}
    posterior = {k: np.broadcast_to(v, (1, S, *v.shape)) for k, v in params.items()}
    dims = {k: ("chain", "draw", *v) for k, v in dims.items()}
    tree = tree_with(posterior, dims, LDS(parameterisation="redundant", latent_dim=D), observed)

    def r2(trial_given, trial_scored):
        model, params, paths = posterior_paths(tree, [trial_given])
        smoothed = smoothed_prediction(model, params, paths[0]).mean(axis=0)
        target = observed[trial_scored]
        return 1 - ((target - smoothed) ** 2).sum() / ((target - target.mean(0)) ** 2).sum()

    assert r2(0, 0) > 0.8 and r2(1, 1) > 0.8
    assert r2(0, 1) < 0.2 and r2(1, 0) < 0.2  # control: another trial's fit explains nothing
