"""Small LDS problems with independently computed evidence, shared by the inference tests."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr
from scipy import integrate

from probdyn.algorithms.kalman import kalman_log_marginal
from probdyn.models import LDS

Q_SCALE, R_SCALE = 0.3, 0.3


def ou_dataset(seed: int, num_timesteps: int = 100, a_true: float = 0.8) -> xr.Dataset:
    """One trial of a 1-D LDS observed in Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros(num_timesteps)
    x[0] = rng.normal()
    for t in range(1, num_timesteps):
        x[t] = a_true * x[t - 1] + Q_SCALE * rng.normal()
    y = x + R_SCALE * rng.normal(size=num_timesteps)
    return xr.Dataset({"y": (("trial", "time", "neuron"), y[None, :, None])}, attrs={"dt": 1.0})


def ou_model(marginal: str = "exact") -> LDS:
    """A ~ Uniform(0, 1); b, q, C, d, r fixed by Delta priors."""
    fixed = {
        "b": dist.Delta(jnp.zeros(1)),
        "q": dist.Delta(jnp.array([Q_SCALE])),
        "C": dist.Delta(jnp.ones((1, 1))),
        "d": dist.Delta(jnp.zeros(1)),
        "r": dist.Delta(jnp.array([R_SCALE])),
    }
    return LDS(
        parameterisation="redundant",
        latent_dim=1,
        marginal=marginal,
        priors={"A": dist.Uniform(0.0, 1.0), **fixed},
    )


def ou_log_likelihood(a, ds: xr.Dataset):
    y = jnp.asarray(ds["y"].values[0])
    return kalman_log_marginal(
        jnp.array([[a]]),
        jnp.zeros(1),
        jnp.array([[Q_SCALE**2]]),
        jnp.ones((1, 1)),
        jnp.zeros(1),
        jnp.array([R_SCALE**2]),
        y,
    )


def ou_exact(ds: xr.Dataset):
    """log p(y) = log int_0^1 p(y | A) dA by adaptive quadrature (SciPy), and the grid posterior."""
    grid = np.linspace(0.0, 1.0, 4001)
    log_lik = np.asarray(jax.jit(jax.vmap(lambda a: ou_log_likelihood(a, ds)))(jnp.asarray(grid)))
    peak = log_lik.max()
    value, _ = integrate.quad(
        lambda a: np.exp(float(ou_log_likelihood(a, ds)) - peak),
        0.0,
        1.0,
        points=[grid[np.argmax(log_lik)]],
        epsabs=1e-13,
        epsrel=1e-10,
        limit=200,
    )
    density = np.exp(log_lik - peak)
    cdf = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    return peak + np.log(value), grid, cdf / cdf[-1]
