r"""The Euler-Maruyama transition density of an observed SDE path, as a NumPyro distribution.

For :math:`dz = g(z, u)\,dt + L(z)\,dW` (Ito; :math:`L` constant for additive noise)
recorded at bins :math:`h` apart, the Euler-Maruyama approximation of the path density is

.. math::
    p(z_{0:T-1}) = N(z_0;\ 0,\ I)\ \prod_{t=0}^{T-2}
        N\big(z_{t+1};\ z_t + h\,g(z_t, u_t),\ h\,L(z_t) L(z_t)^\top\big),

exact as :math:`h \to 0` and the likelihood through which drift-diffusion matching fits a model
to observed trajectories of a target SDE (:class:`EulerMaruyamaPath`); :func:`matching_errors`
measures how well a fit carries the target's drift and diffusion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints

from probdyn.errors import ConfigError


class EulerMaruyamaPath(dist.Distribution):
    r"""Density of whole paths (event shape (time, dim)) under the Euler-Maruyama scheme.

    Parameters
    ----------
    drift
        ``g(z, u) -> dz/dt`` at one state (``u`` is None without inputs).
    scale_tril
        :math:`L` (dim, dim), lower triangular with a nonzero diagonal: the noise per unit time
        is :math:`L\,dW`; or a function ``L(z)`` of one state for state-dependent noise (then
        ``dim`` is required).
    dt
        Time between recorded states.
    num_steps
        Number of recorded states :math:`T` per path.
    inputs
        (batch..., time, input) or None; :math:`u_t` is held over the step from :math:`t`.
    batch_shape
        Leading shape (e.g. the number of trials).
    dim
        The state dimension, when ``scale_tril`` is a function.

    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("scale_tril", "inputs")
    pytree_aux_fields = ("drift", "state_noise", "dt", "num_steps")

    def __init__(
        self,
        drift: Callable[[Array, Array | None], Array],
        scale_tril: Array,
        dt: float,
        num_steps: int,
        *,
        inputs: Array | None = None,
        batch_shape: tuple[int, ...] = (),
        dim: int | None = None,
        validate_args=None,
    ):
        self.drift, self.dt, self.num_steps, self.inputs = drift, dt, num_steps, inputs
        if callable(scale_tril):
            if dim is None:
                raise ConfigError("a state-dependent scale_tril needs dim= (the state dimension)")
            self.scale_tril, self.state_noise = None, scale_tril
        else:
            self.scale_tril, self.state_noise = scale_tril, None
            dim = scale_tril.shape[-1]
        super().__init__(batch_shape, (num_steps, dim), validate_args=validate_args)

    def _factor(self, z: Array) -> Array:
        """:math:`L` at one state."""
        return self.scale_tril if self.state_noise is None else self.state_noise(z)

    def _drifts(self, states: Array) -> Array:
        """:math:`g(z_t, u_t)` for every state but the last (batch..., time - 1, dim)."""
        heads = states[..., :-1, :]
        flat = heads.reshape(-1, states.shape[-1])
        if self.inputs is None:
            values = jax.vmap(lambda z: self.drift(z, None))(flat)
        else:
            u = jnp.broadcast_to(
                self.inputs[..., :-1, :], (*heads.shape[:-1], self.inputs.shape[-1])
            )
            values = jax.vmap(self.drift)(flat, u.reshape(flat.shape[0], -1))
        return values.reshape(heads.shape)

    def log_prob(self, value: Array) -> Array:
        """Initial N(0, I) plus the Gaussian transitions (summed over time and dims)."""
        dim = self.event_shape[-1]
        residual = value[..., 1:, :] - value[..., :-1, :] - self.dt * self._drifts(value)
        scaled = residual.reshape(-1, dim) / jnp.sqrt(self.dt)
        if self.state_noise is None:
            # One triangular solve for every transition at once: L w = r / sqrt(dt).
            white = jax.scipy.linalg.solve_triangular(self.scale_tril, scaled.T, lower=True).T
            log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.scale_tril))))
        else:
            factors = jax.vmap(self.state_noise)(value[..., :-1, :].reshape(-1, dim))
            white = jax.vmap(lambda L, r: jax.scipy.linalg.solve_triangular(L, r, lower=True))(
                factors, scaled
            )
            diagonals = jnp.abs(jnp.diagonal(factors, axis1=-2, axis2=-1))
            log_det = jnp.sum(jnp.log(diagonals), -1).reshape(residual.shape[:-1])
        white = white.reshape(residual.shape)
        log_det = log_det + 0.5 * dim * jnp.log(self.dt)
        steps = -0.5 * jnp.sum(white**2, -1) - log_det - 0.5 * dim * jnp.log(2 * jnp.pi)
        start = dist.Normal(0.0, 1.0).log_prob(value[..., 0, :]).sum(-1)
        return start + steps.sum(-1)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Paths by the same scheme (one Euler-Maruyama step per recorded bin)."""
        shape = sample_shape + self.batch_shape
        dim = self.event_shape[-1]
        noise = jax.random.normal(key, (*shape, self.num_steps, dim))
        flat = noise.reshape(-1, self.num_steps, dim)
        inputs = None
        if self.inputs is not None:
            inputs = jnp.broadcast_to(
                self.inputs, (*shape, self.num_steps, self.inputs.shape[-1])
            ).reshape(flat.shape[0], self.num_steps, -1)

        def path(eps, u):
            def advance(z, step):
                xi, ut = step
                z = z + self.dt * self.drift(z, ut) + jnp.sqrt(self.dt) * self._factor(z) @ xi
                return z, z

            steps = (eps[1:], None if u is None else u[:-1])
            _, rest = jax.lax.scan(advance, eps[0], steps)
            return jnp.concatenate([eps[:1], rest])

        if inputs is None:
            paths = jax.vmap(lambda eps: path(eps, None))(flat)
        else:
            paths = jax.vmap(path)(flat, inputs)
        return paths.reshape(*shape, self.num_steps, dim)


def noise_covariance(noise, dim: int) -> Callable[[Array], Array]:
    r"""The diffusion covariance :math:`G(x)G(x)^\top` of a noise factor, as a function of ``x``.

    ``noise`` is :math:`G`: a scalar, a vector (diagonal), a (dim, k) matrix, or a function of
    one state returning one of those (state-dependent noise).
    """

    def as_matrix(value):
        value = jnp.asarray(value, dtype=jnp.result_type(float))
        if value.ndim == 2:
            if value.shape[0] != dim:
                raise ConfigError(f"the noise factor has shape {value.shape}; expected ({dim}, k)")
            return value
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != dim):
            raise ConfigError(
                f"the noise factor has shape {value.shape}; expected (), ({dim},) or ({dim}, k)"
            )
        return value * jnp.eye(dim)

    if callable(noise):
        return lambda x: (lambda G: G @ G.T)(as_matrix(noise(x)))
    constant = as_matrix(noise)
    covariance = constant @ constant.T
    return lambda x: covariance


def matching_errors(
    model,
    draws: dict[str, Array],
    target_drift: Callable[[Array], Array],
    target_noise,
    states: Array,
    *,
    points_per_dim: int = 15,
    on: str = "grid",
) -> dict[str, float]:
    r"""How well fitted latent dynamics carry a target SDE's drift and diffusion.

    The drift is compared on a grid spanning the 5-95% quantiles of ``states`` (..., D) per
    dimension (``points_per_dim`` per axis), or, with ``on="states"`` and always for D > 3, on
    2000 of the states themselves (for attractors, whose box holds mostly unvisited states):

    .. math::
        e_g = \frac{\|\bar g - f\|}{\|f\|},\qquad \bar g = \text{posterior mean drift},

    and per draw (``drift_error_median``, ``drift_error_q95``). The diffusion error compares
    covariances at the same points,

    .. math::
        e_D = \Big(\frac{\sum_x \|\overline{L(x)L(x)^\top} - G(x)G(x)^\top\|_F^2}
                        {\sum_x \|G(x)G(x)^\top\|_F^2}\Big)^{1/2},

    with ``target_noise`` :math:`G` as :func:`noise_covariance` reads it (constant or a function
    of the state). ``model`` needs ``vector_field`` and ``noise_factor``
    (:class:`probdyn.models.SDERNN`); ``draws`` have a leading draw axis.
    """
    if on not in ("grid", "states"):
        raise ConfigError(f"on={on!r}; expected 'grid' or 'states'")
    states = jnp.asarray(states).reshape(-1, jnp.shape(states)[-1])
    dim = states.shape[-1]
    if dim <= 3 and on == "grid":
        low, high = jnp.percentile(states, 5, axis=0), jnp.percentile(states, 95, axis=0)
        axes = [jnp.linspace(low[i], high[i], points_per_dim) for i in range(dim)]
        grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    elif states.shape[0] > 2000:
        grid = states[jax.random.choice(jax.random.key(0), states.shape[0], (2000,), False)]
    else:
        grid = states
    draws = {name: jnp.asarray(value) for name, value in draws.items()}
    target = jax.vmap(target_drift)(grid)
    fitted = jax.vmap(lambda p: jax.vmap(lambda x: model.vector_field(p, x))(grid))(draws)
    scale = jnp.sqrt(jnp.mean(target**2))
    per_draw = jnp.sqrt(jnp.mean((fitted - target) ** 2, axis=(1, 2))) / scale
    covariance = jax.vmap(noise_covariance(target_noise, dim))(grid)

    def draw_covariance(params):
        factors = jax.vmap(model.noise_factor(params))(grid)
        return factors @ jnp.swapaxes(factors, -1, -2)

    fitted_covariance = jnp.mean(jax.vmap(draw_covariance)(draws), axis=0)
    return {
        "drift_error": float(jnp.sqrt(jnp.mean((fitted.mean(0) - target) ** 2)) / scale),
        "drift_error_median": float(jnp.median(per_draw)),
        "drift_error_q95": float(jnp.percentile(per_draw, 95)),
        "diffusion_error": float(
            jnp.linalg.norm(fitted_covariance - covariance) / jnp.linalg.norm(covariance)
        ),
    }
