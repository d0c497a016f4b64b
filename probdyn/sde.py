r"""The Euler-Maruyama transition density of an observed SDE path, as a NumPyro distribution.

For :math:`dz = g(z, u)\,dt + L\,dW` recorded at bins :math:`h` apart, the Euler-Maruyama
approximation of the path density is

.. math::
    p(z_{0:T-1}) = N(z_0;\ 0,\ I)\ \prod_{t=0}^{T-2}
        N\big(z_{t+1};\ z_t + h\,g(z_t, u_t),\ h\,L L^\top\big),

exact as :math:`h \to 0` and the likelihood through which drift-diffusion matching fits a model
to observed trajectories of a target SDE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints


class EulerMaruyamaPath(dist.Distribution):
    r"""Density of whole paths (event shape (time, dim)) under the Euler-Maruyama scheme.

    Parameters
    ----------
    drift
        ``g(z, u) -> dz/dt`` at one state (``u`` is None without inputs).
    scale_tril
        :math:`L` (dim, dim), lower triangular: the noise per unit time is :math:`L\,dW`.
    dt
        Time between recorded states.
    num_steps
        Number of recorded states :math:`T` per path.
    inputs
        (batch..., time, input) or None; :math:`u_t` is held over the step from :math:`t`.
    batch_shape
        Leading shape (e.g. the number of trials).

    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("scale_tril", "inputs")
    pytree_aux_fields = ("drift", "dt", "num_steps")

    def __init__(
        self,
        drift: Callable[[Array, Array | None], Array],
        scale_tril: Array,
        dt: float,
        num_steps: int,
        *,
        inputs: Array | None = None,
        batch_shape: tuple[int, ...] = (),
        validate_args=None,
    ):
        self.drift, self.scale_tril, self.dt, self.num_steps = drift, scale_tril, dt, num_steps
        self.inputs = inputs
        dim = scale_tril.shape[-1]
        super().__init__(batch_shape, (num_steps, dim), validate_args=validate_args)

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
        mean = value[..., :-1, :] + self.dt * self._drifts(value)
        step = dist.MultivariateNormal(mean, scale_tril=jnp.sqrt(self.dt) * self.scale_tril)
        start = dist.Normal(0.0, 1.0).log_prob(value[..., 0, :]).sum(-1)
        return start + step.log_prob(value[..., 1:, :]).sum(-1)

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
                z = z + self.dt * self.drift(z, ut) + jnp.sqrt(self.dt) * self.scale_tril @ xi
                return z, z

            steps = (eps[1:], None if u is None else u[:-1])
            _, rest = jax.lax.scan(advance, eps[0], steps)
            return jnp.concatenate([eps[:1], rest])

        if inputs is None:
            paths = jax.vmap(lambda eps: path(eps, None))(flat)
        else:
            paths = jax.vmap(path)(flat, inputs)
        return paths.reshape(*shape, self.num_steps, dim)
