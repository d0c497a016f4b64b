"""The dynamics whose fixed points are sought: a model's, or a known system's."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping

from jax import Array


@dataclasses.dataclass(frozen=True)
class Dynamics:
    r"""A known vector field with fixed parameters, searched without inference.

    ``vector_field(x, parameters)`` is :math:`f(x)` (``kind="flow"``) or :math:`F(x)`
    (``kind="map"``), e.g. ``Dynamics(probdyn.data.systems.lorenz, {"sigma": 10, ...}, 3)``. The
    observation space is the latent space itself.
    """

    field: Callable[[Array, Mapping[str, float]], Array]
    parameters: Mapping[str, float]
    latent_dim: int
    kind: str = "flow"

    def vector_field(self, params, x: Array, u: Array | None = None) -> Array:
        """The field at ``x`` (``params`` is empty: the parameters are the object's own)."""
        return self.field(x, self.parameters)

    def emission_mean(self, params, x: Array) -> Array:
        """The identity: points are matched in latent coordinates."""
        return x


def residual(model, params, x: Array, u: Array | None = None) -> Array:
    r"""The function whose roots are the fixed points.

    :math:`g(x) = f(x, u)` for a flow, :math:`g(x) = F(x, u) - x` for a map.
    """
    value = model.vector_field(params, x, u)
    return value if model.kind == "flow" else value - x


class StaticModel:
    """A model as a static jit argument: hashed and compared by identity (models hold dicts)."""

    __slots__ = ("model",)

    def __init__(self, model):
        self.model = model


_STATIC: collections.OrderedDict[int, StaticModel] = collections.OrderedDict()


def static_model(model) -> StaticModel:
    """The identity wrapper of ``model``: one per live model, so repeated searches reuse it.

    The cache holds the model, so its id cannot be reused by another object meanwhile.
    """
    key = id(model)
    if key not in _STATIC or _STATIC[key].model is not model:
        _STATIC[key] = StaticModel(model)
        while len(_STATIC) > 16:
            _STATIC.popitem(last=False)
    _STATIC.move_to_end(key)
    return _STATIC[key]
