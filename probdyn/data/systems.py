r"""Named dynamical systems with their published parameters.

Chaotic flows follow the equations and parameters of the ``dysts`` database (Gilpin, "Chaos as an
interpretable benchmark for forecasting and data-driven modelling", NeurIPS Datasets and
Benchmarks 2021), which Sedler et al. (2023) used to build their benchmark:

- Lorenz: :math:`\dot x = \sigma (y - x),\ \dot y = x(\rho - z) - y,\ \dot z = xy - \beta z`
  (:math:`\sigma = 10, \rho = 28, \beta = 2.667`).
- Rossler: :math:`\dot x = -y - z,\ \dot y = x + a y,\ \dot z = b + z(x - c)`
  (:math:`a = b = 0.2, c = 5.7`).
- Arneodo: :math:`\dot x = y,\ \dot y = z,\ \dot z = -a x - b y - c z + d x^3`
  (:math:`a = -5.5, b = 4.5, c = 1, d = -1`).
- Thomas (dysts' scaled form): :math:`\dot x = -a x + b \sin y,\ \dot y = -a y + b \sin z,\
  \dot z = -a z + b \sin x` (:math:`a = 1.85, b = 10`).
- Lorenz-96 (Lorenz 1996) on six sites, :func:`lorenz96`: :math:`\dot x_i = (x_{i+1} -
  x_{i-2})x_{i-1} - x_i + F` (cyclic, :math:`F = 8`): chaotic, every coordinate coupled to its
  neighbours (the entangled counterpart of two independent 3-D systems).

Stochastic systems :math:`dx = f(x)\,dt + \sigma\,s(x)\,dW` (Ito; :math:`s = 1`, additive noise,
unless given) used for SDE data:

- ``double_well``: :math:`f(x) = (x_1 - x_1^3,\ -x_2)`; stable nodes at :math:`(\pm 1, 0)`, a
  saddle at the origin.
- ``double_well_multiplicative``: the same drift with state-dependent noise
  :math:`s(x) = \mathrm{diag}(\sqrt{0.1 + x_1^2},\ 1)`: the first coordinate is three times
  quieter at the saddle than in the wells.
- ``ou``: :math:`f(x) = -B x`, :math:`B = \begin{pmatrix} 1 & -w \\ w & 1 \end{pmatrix}`; the
  antisymmetric part :math:`w` drives a nonequilibrium rotational current.
- ``limit_cycle``: Hopf normal form
  :math:`f(x) = ((1 - r^2) x_1 - \omega x_2,\ (1 - r^2) x_2 + \omega x_1)`, :math:`r = |x|`.
- ``lorenz``: the Lorenz drift above with additive noise.
- ``cyclic_attractors``:
  :math:`f(x) = (1 - r^2)\,x + \big(\omega - a\,\mathrm{Im}(\zeta^3)/(1 + r^2)\big)(-x_2, x_1)`,
  :math:`\zeta = x_1 + i x_2`: on the unit circle
  :math:`\dot\theta = \omega - \tfrac a2 \sin 3\theta`, so for :math:`a > 2\omega` three stable
  nodes alternate with three saddles, and the origin is an unstable spiral. Noise carries the
  state from one node to the next, preferably in the direction of :math:`\omega` (a
  nonequilibrium current): a sequence of attractors visited by noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax.numpy as jnp
from jax import Array

VectorField = Callable[[Array, Mapping[str, float]], Array]


def lorenz(x: Array, p: Mapping[str, float]) -> Array:
    """Lorenz (1963) vector field."""
    return jnp.stack(
        [
            p["sigma"] * (x[1] - x[0]),
            x[0] * (p["rho"] - x[2]) - x[1],
            x[0] * x[1] - p["beta"] * x[2],
        ]
    )


def rossler(x: Array, p: Mapping[str, float]) -> Array:
    """Rossler (1976) vector field."""
    return jnp.stack([-x[1] - x[2], x[0] + p["a"] * x[1], p["b"] + x[2] * (x[0] - p["c"])])


def arneodo(x: Array, p: Mapping[str, float]) -> Array:
    """Arneodo, Coullet & Tresser (1981) vector field."""
    jerk = -p["a"] * x[0] - p["b"] * x[1] - p["c"] * x[2] + p["d"] * x[0] ** 3
    return jnp.stack([x[1], x[2], jerk])


def thomas(x: Array, p: Mapping[str, float]) -> Array:
    """Thomas (1999) cyclically symmetric vector field, in dysts' scaled form."""
    return -p["a"] * x + p["b"] * jnp.sin(jnp.roll(x, -1))


def lorenz96(x: Array, p: Mapping[str, float]) -> Array:
    """Lorenz (1996) ring of sites with forcing ``F``."""
    return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1) - x + p["F"]


def double_well(x: Array, p: Mapping[str, float]) -> Array:
    """Gradient flow of the double-well potential :math:`x_1^4/4 - x_1^2/2 + x_2^2/2`."""
    return jnp.stack([x[0] - x[0] ** 3, -x[1]])


def ornstein_uhlenbeck(x: Array, p: Mapping[str, float]) -> Array:
    """Linear drift :math:`-Bx` with a symmetric part :math:`I` and an antisymmetric part ``w``."""
    return -jnp.stack([x[0] - p["w"] * x[1], p["w"] * x[0] + x[1]])


def hopf(x: Array, p: Mapping[str, float]) -> Array:
    """Hopf normal form: a stable limit cycle of radius 1 and angular speed ``omega``."""
    radial = 1.0 - x[0] ** 2 - x[1] ** 2
    return jnp.stack([radial * x[0] - p["omega"] * x[1], radial * x[1] + p["omega"] * x[0]])


def cyclic_attractors(x: Array, p: Mapping[str, float]) -> Array:
    """Three stable nodes on the unit circle, visited in turn under noise (see the module)."""
    radius2 = x[0] ** 2 + x[1] ** 2
    cubic = 3 * x[0] ** 2 * x[1] - x[1] ** 3
    angular = p["omega"] - p["a"] * cubic / (1 + radius2)
    return (1 - radius2) * x + angular * jnp.stack([-x[1], x[0]])


@dataclass(frozen=True)
class Attractor:
    """A chaotic flow: vector field, parameters, period and a point on the attractor (dysts)."""

    vector_field: VectorField
    parameters: Mapping[str, float]
    period: float
    initial_condition: tuple[float, ...]
    points_per_period: int


ATTRACTORS: dict[str, Attractor] = {
    "Arneodo": Attractor(
        arneodo,
        {"a": -5.5, "b": 4.5, "c": 1.0, "d": -1.0},
        3.1641,
        (-2.7515698, 0.19079818, 3.4703629),
        35,
    ),
    "Lorenz": Attractor(
        lorenz,
        {"sigma": 10.0, "rho": 28.0, "beta": 2.667},
        1.5008,
        (-9.7869288, -15.03852, 20.533978),
        100,
    ),
    "Rossler": Attractor(
        rossler, {"a": 0.2, "b": 0.2, "c": 5.7}, 5.9086, (6.5134412, 0.4772013, 0.34164294), 35
    ),
    # Sedler et al. give no resampling rate for Thomas; 35 points per period, as for Rossler.
    "Thomas": Attractor(thomas, {"a": 1.85, "b": 10.0}, 4.969, (2.199442, 2.3634225, 3.220197), 35),
}


def well_noise_shape(x: Array) -> Array:
    r""":math:`s(x) = \mathrm{diag}(\sqrt{0.1 + x_1^2}, 1)` (``double_well_multiplicative``)."""
    return jnp.diag(jnp.stack([jnp.sqrt(0.1 + x[0] ** 2), jnp.ones_like(x[0])]))


@dataclass(frozen=True)
class SDESystem:
    r"""A stochastic system :math:`dx = f(x)\,dt + \sigma\,s(x)\,dW` with its defaults.

    ``noise_shape`` is :math:`s` (state -> (dim, dim) matrix), None for additive noise.
    """

    drift: VectorField
    parameters: Mapping[str, float] = field(default_factory=dict)
    dim: int = 2
    noise_scale: float = 0.5
    initial_mean: tuple[float, ...] = (0.0, 0.0)
    initial_scale: float = 1.0
    noise_shape: Callable[[Array], Array] | None = None

    def noise_factor(self, noise_scale: float | None = None):
        r"""The noise factor :math:`G = \sigma s`: a function of the state, or :math:`\sigma`.

        ``noise_scale`` replaces the default :math:`\sigma`.
        """
        sigma = self.noise_scale if noise_scale is None else float(noise_scale)
        if self.noise_shape is None:
            return sigma
        shape = self.noise_shape
        return lambda x: sigma * shape(x)


SDE_SYSTEMS: dict[str, SDESystem] = {
    "double_well": SDESystem(double_well, {}, 2, 0.5),
    "double_well_multiplicative": SDESystem(double_well, {}, 2, 0.5, noise_shape=well_noise_shape),
    "ou": SDESystem(ornstein_uhlenbeck, {"w": 1.0}, 2, 0.5),
    "limit_cycle": SDESystem(hopf, {"omega": 1.0}, 2, 0.2),
    "cyclic_attractors": SDESystem(cyclic_attractors, {"omega": 0.5, "a": 2.0}, 2, 0.4),
    "lorenz": SDESystem(
        lorenz, {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}, 3, 1.0, (0.0, 0.0, 25.0), 5.0
    ),
}
