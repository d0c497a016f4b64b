r"""Ablations of a noise-driven network: remove its antisymmetric connectivity or a population.

Nartallo-Kaluarachchi, Lambiotte & Goriely (2026) argue that asymmetric populations of units carry
a network's nonequilibrium computations. To test it on a network :math:`\tau\,dx = (-x +
J\phi(x) + b)\,dt + \Sigma\,dW` (:class:`probdyn.models.SDERNN`):

- :func:`ablated_connectivity` removes :math:`J_a = (J - J^\top)/2` (or :math:`J_s`), all of
  it or only the couplings that touch a population, or silences a population (its units'
  outputs, the columns of :math:`J`, set to zero);
- :func:`asymmetry_populations` groups the units by their share of :math:`J_a`
  (:math:`a_u = \|J_{a,u:}\|^2 + \|J_{a,:u}\|^2`, ranked and cut into equal groups, group 0 the
  most asymmetric), so that the most and least asymmetric populations (and random ones of the
  same size, the control) can be silenced in turn;
- :func:`simulate_units` runs the network with a given connectivity in unit space, where an
  ablation that leaves the latent subspace of a low-rank network no longer invariant is still
  simulated exactly, and reads the latent coordinates :math:`z = M^+(x - b_\perp)` off the path.

What a computation loses is then measured on the latent paths
(:func:`probdyn.analysis.transitions.attractor_transitions`: switching rate, sequence order,
coarse-grained entropy production).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.data.integrate import euler_maruyama_path
from probdyn.errors import ConfigError


def _square(J) -> np.ndarray:
    J = np.asarray(J, dtype=float)
    if J.ndim != 2 or J.shape[0] != J.shape[1]:
        raise ConfigError(f"J has shape {J.shape}; expected a square (unit, unit) matrix")
    return J


def ablated_connectivity(J, *, remove: str | None = None, among=None, silence=None) -> np.ndarray:
    r"""``J`` without its antisymmetric or symmetric part, or with a population silenced.

    ``remove="antisymmetric"`` keeps :math:`J_s`, ``"symmetric"`` keeps :math:`J_a`; with
    ``among`` (indices or a boolean mask of units) only the part's entries that touch those
    units (their rows and columns) are removed, so that a population loses its asymmetric
    couplings and keeps its symmetric ones. The outputs of the units ``silence`` are set to zero.
    """
    J = _square(J).copy()
    if remove not in (None, "antisymmetric", "symmetric"):
        raise ConfigError(f"remove={remove!r}; expected 'antisymmetric', 'symmetric' or None")
    if among is not None and remove is None:
        raise ConfigError("among= names whose couplings to remove: give remove= as well")
    if remove is not None:
        part = (J - J.T) / 2 if remove == "antisymmetric" else (J + J.T) / 2
        touched = np.ones(len(J), bool)
        if among is not None:
            touched = np.zeros(len(J), bool)
            touched[np.arange(len(J))[np.asarray(among)]] = True
        J = J - part * (touched[:, None] | touched[None, :])
    if silence is not None:
        units = np.arange(len(J))[np.asarray(silence)]
        J[:, units] = 0.0
    return J


def asymmetry_populations(J, num_groups: int = 4) -> np.ndarray:
    r"""One group label per unit: 0 for the units with the largest share of :math:`J_a`.

    :math:`a_u = \|J_{a,u:}\|^2 + \|J_{a,:u}\|^2` (the unit's row and column of the
    antisymmetric part); units ranked by :math:`a_u` and cut into ``num_groups`` groups of equal
    size (the first groups one larger when the sizes do not divide).
    """
    J = _square(J)
    if not 1 <= num_groups <= len(J):
        raise ConfigError(f"num_groups={num_groups}; expected 1..{len(J)} (one unit at least)")
    anti = (J - J.T) / 2
    share = np.sum(anti**2, axis=1) + np.sum(anti**2, axis=0)
    ranked = np.argsort(-share, kind="stable")
    labels = np.empty(len(J), dtype=int)
    for group, units in enumerate(np.array_split(ranked, num_groups)):
        labels[units] = group
    return labels


def simulate_units(
    model,
    params: Mapping[str, Array],
    connectivity,
    starts,
    dt: float,
    num_bins: int,
    *,
    seed: int,
    burn_in: int = 0,
    substeps: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Latent paths of the network with ``connectivity`` in place of its own, run in unit space.

    :math:`dx = (-x + J'\phi(x) + b)/\tau\,dt + M L(z)\,dW` (low rank; full rank:
    :math:`L(x)\,dW`), from the unit states of the latent ``starts`` (trial, D), Euler-Maruyama
    with ``substeps`` steps per bin of width ``dt``, no input. Returns the latent readout
    :math:`z = M^+(x - b_\perp)` (trial, bin, D) after ``burn_in`` bins, and the distance of
    the unit state from the latent subspace (trial, bin): zero while the ablation keeps the
    subspace invariant.
    """
    params = {name: jnp.asarray(value) for name, value in params.items()}
    J = jnp.asarray(_square(connectivity))
    if J.shape[0] != model.num_units:
        raise ConfigError(f"connectivity has {J.shape[0]} units; the model {model.num_units}")
    starts = jnp.asarray(starts, dtype=J.dtype)
    if starts.ndim != 2 or starts.shape[1] != model.latent_dim:
        raise ConfigError(f"starts have shape {starts.shape}; expected (trial, {model.latent_dim})")
    phi = model.nonlinearity_function
    factor, bias, tau = model.noise_factor(params), params["b"], model.tau
    embed, offset = model.latent_subspace(params)
    readout = jnp.linalg.pinv(embed)

    def drift(x):
        return (-x + J @ phi(x) + bias) / tau

    def noise(x):
        return embed @ factor(readout @ (x - offset))

    def run(z0, key):
        x0 = embed @ z0 + offset
        return euler_maruyama_path(
            drift,
            x0,
            noise,
            key,
            num_points=burn_in + num_bins,
            interval=dt,
            substeps=substeps,
            noise_dim=model.latent_dim,
        )[burn_in:]

    keys = jax.random.split(jax.random.key(seed), starts.shape[0])
    units = jax.jit(jax.vmap(run))(starts, keys)
    latent = (units - offset) @ readout.T
    off = jnp.linalg.norm(units - latent @ embed.T - offset, axis=-1)
    return np.asarray(latent), np.asarray(off)
