r"""Continuous-time RNN driven by noise, with asymmetric connectivity (family 2).

Nartallo-Kaluarachchi, Lambiotte & Goriely (2026), *Drift-diffusion matching: embedding dynamics
in latent manifolds of asymmetric neural networks*.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr
from jax import Array

from probdyn.algorithms.canonical import (
    INITIAL_SCALE,
    LowerTrapezoidalNormal,
    lq,
    require_trapezoidal_prior,
    whitening,
)
from probdyn.algorithms.sde import EulerMaruyamaPath
from probdyn.errors import DataError, PriorError
from probdyn.model import ModelData
from probdyn.schema import Count, NonNegativeInt, Positive
from probdyn.state_space import StateSpaceModel, linear_readout

NONLINEARITIES = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "linear": lambda x: x,
}
#: The built-in Euler-Maruyama ("euler") or a diffrax solver for the non-centred latent path.
Solver = Literal["euler", "Euler", "Heun", "ReversibleHeun"]
DIFFRAX_SOLVERS = typing.get_args(Solver)[1:]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SDERNN(StateSpaceModel):
    r"""Noise-driven continuous-time RNN, observed through a readout or directly in its latents.

    Units :math:`x \in \mathbb{R}^n` follow

    .. math::
        \tau\,dx = \big(-x + J\,\phi(x) + B u(t) + b\big)\,dt + \Sigma\,dW,

    with :math:`J` full (``rank=None``) or low rank, :math:`J = M N^\top / n`
    (:math:`M, N \in \mathbb{R}^{n \times R}`). ``symmetric=True`` restricts :math:`J` to
    :math:`J^\top = J`, the equilibrium baseline: full rank uses :math:`(J + J^\top)/2` of the
    site ``J``; low rank sets :math:`N = M\,\mathrm{diag}(s)` (site ``s`` replaces ``N``).
    With linear units and isotropic noise a symmetric network obeys detailed balance, so the
    evidence for ``symmetric=False`` over ``True`` weighs the data's nonequilibrium currents.

    **Latent coordinates.** With full :math:`J` the latent state is the unit state
    (:math:`z = x`, dimension :math:`n`). With low rank the affine subspace
    :math:`x = M z + b_\perp` (:math:`b = M c + b_\perp`, :math:`b_\perp \perp \mathrm{span}(M)`)
    is invariant when inputs and noise enter along :math:`M` (:math:`B = M B_z`,
    :math:`\Sigma = M \Sigma_z`), and on it the network is exactly the :math:`R`-dimensional SDE

    .. math::
        \tau\,dz = \big(-z + N^\top \phi(M z + b_\perp)/n + c + B_z u\big)\,dt + \Sigma_z\,dW.

    Every fixed point of the network lies on that subspace (:math:`x^* = M N^\top\phi(x^*)/n + b`),
    and the unit-space Jacobian has the latent Jacobian's eigenvalues plus :math:`-1/\tau`
    (n - R times), so fixed points and their classes are found exactly in :math:`z`. The sites
    ``B`` and ``sigma`` (and ``F``) are therefore given in latent coordinates.

    **Diffusion** (latent coordinates, :math:`D` = latent dim): ``"isotropic"``
    :math:`\Sigma_z\Sigma_z^\top = \sigma^2 I`; ``"diagonal"`` :math:`\mathrm{diag}(\sigma^2)`;
    ``"lowrank"`` :math:`\mathrm{diag}(\sigma^2) + F F^\top` (:math:`F` is D x ``diffusion_rank``);
    ``"state"``: state-dependent (multiplicative) noise read out of the same units that carry
    the drift, :math:`\Sigma_z(z) = \mathrm{tril}\big(g + K^\top\phi(x(z))/n\big)` with
    :math:`x(z)` the unit state, the :math:`D(D+1)/2` entries of a lower-triangular factor
    (its diagonal through softplus, so every factor is a Cholesky factor and every covariance
    :math:`\Sigma_z\Sigma_z^\top` has exactly one), integrated in the Ito sense.

    **Observations.** ``"gaussian"`` :math:`y_t \sim N(C z_t + d, \mathrm{diag}(r^2))`,
    ``"poisson"`` :math:`y_t \sim \mathrm{Poisson}(\exp(C z_t + d))` (counts per bin), both with
    :math:`z_0 \sim N(0, I)` and ``substeps`` Euler-Maruyama steps per bin, the path sampled
    non-centred (``marginal="sample"``, site ``latent_noise``) or filtered (``"particle"``,
    :mod:`probdyn.state_space`); or ``"latent"``: the latent path itself is observed (variable ``y``
    with one neuron per latent dim, ``marginal="observed"``) and enters through the Euler-Maruyama
    transition density (:class:`probdyn.algorithms.sde.EulerMaruyamaPath`), which is how
    drift-diffusion matching fits the network to trajectories of a target SDE.

    **Parameterisation** (low rank with a readout). Any invertible :math:`T` with
    :math:`z \to Tz`, :math:`M \to MT^{-1}`, :math:`N \to NT^\top`, :math:`c \to Tc`,
    :math:`B_z \to TB_z`, :math:`C \to CT^{-1}` leaves the network (:math:`J`, :math:`b`, the
    unit-space path) and its readout unchanged; it carries the latent noise covariance
    :math:`\Sigma_z\Sigma_z^\top \to T\,\cdot\,T^\top` and the initial one alike. Two forms
    pick the coordinates:

    - ``"canonical"`` (the default where it exists): the latent noise is the identity
      (:math:`\Sigma_z = I`, no site ``sigma`` or ``F``), :math:`z_0 \sim N(0, \Sigma_0)`
      carries the scale, and :math:`C` is lower trapezoidal with a positive diagonal (fixing
      the rotation, :mod:`probdyn.algorithms.canonical`). :math:`\Sigma_0 = L_0L_0^\top` is
      free (site ``initial_chol``) for diagonal and low-rank diffusion, whose redundant forms
      cover every :math:`\Sigma_0` once the noise is made the identity, and
      :math:`s_0^2 I` (site ``initial_scale``, :math:`s_0 = 1/\sigma`) for isotropic diffusion.
      ``symmetric=True`` keeps :math:`N = M\,\mathrm{diag}(s)`, which only diagonal
      :math:`T` preserve: :math:`C` stays free and :math:`\Sigma_0 = \mathrm{diag}(s_0^2)`
      (site ``initial_scale``, one per latent axis with diagonal diffusion); with low-rank
      diffusion a symmetric network has no canonical form and keeps the redundant one.
    - ``"redundant"``: :math:`z_0 \sim N(0, I)` and the diffusion sites as listed below, the
      form of earlier releases: rotations of :math:`z` are an exact ridge of its likelihood and
      the scale is pinned down only by the first bin of each trial.

    Both describe the same likelihoods; :meth:`canonical_form` and :meth:`redundant_form` map
    draws between them (runs written before the option read as ``"redundant"``). Where the
    latent coordinates are already fixed (full rank, whose units the nonlinearity pins, or
    ``observation="latent"``, which observes them) the two forms are one and the same.

    ============  ======================  ==================================================
    site          shape                   default prior
    ============  ======================  ==================================================
    ``J``         (n, n)                  Normal(0, 1/sqrt(n)) (full rank)
    ``M``         (n, R)                  Normal(0, 1) (low rank)
    ``N``         (n, R)                  Normal(0, sqrt(n)): overlaps :math:`N^\top M/n`
                                          are O(1) a priori
    ``s``         (R,)                    Normal(0, 2) (low rank, ``symmetric``)
    ``b``         (n,)                    Normal(0, 1)
    ``B``         (D, input)              Normal(0, 1) (with inputs)
    ``sigma``     () or (D,)              HalfNormal(1) (not in the canonical form)
    ``F``         (D, diffusion_rank)     Normal(0, 0.5) (``"lowrank"``; not canonical)
    ``K``         (n, D(D+1)/2)           Normal(0, sqrt(n)) (``"state"``)
    ``g``         (D(D+1)/2,)             Normal(0, 1) (``"state"``)
    ``initial_    (D, D)                  canonical: lower triangular, Normal(0, 2),
    chol``                                half-normal diagonal
    ``initial_    () or (D,)              canonical, isotropic or symmetric: HalfNormal(2)
    scale``
    ``C``         (emission, D)           Normal(0, 1) (readout); canonical and not
                                          symmetric: lower trapezoidal, half-normal diagonal
    ``d``         (emission,)             Normal(0, 1) (readout)
    ``r``         (emission,)             HalfNormal(1) (Gaussian readout)
    ============  ======================  ==================================================

    The units are exchangeable (a permutation of units leaves the likelihood unchanged); fixed
    points, eigenvalues, drift and diffusion are invariant to it and are what summaries report.
    """

    kind: ClassVar[str] = "flow"
    site_dims: ClassVar[dict[str, list[str]]] = {
        "J": ["unit", "unit_from"],
        "M": ["unit", "rank"],
        "N": ["unit", "rank"],
        "s": ["rank"],
        "b": ["unit"],
        "B": ["latent", "input"],
        "F": ["latent", "diffusion_rank"],
        "K": ["unit", "diffusion_entry"],
        "g": ["diffusion_entry"],
        "initial_chol": ["latent", "latent_from"],
        "C": ["neuron", "latent"],
        "d": ["neuron"],
        "r": ["neuron"],
        "latent_noise": ["trial", "step", "latent"],
        "latents": ["trial", "time", "latent"],
    }
    num_units: Count
    rank: Count | None = None
    symmetric: bool = False
    nonlinearity: Literal["tanh", "relu", "softplus", "linear"] = "tanh"
    diffusion: Literal["isotropic", "diagonal", "lowrank", "state"] = "isotropic"
    diffusion_rank: Count = 1
    observation: Literal["gaussian", "poisson", "latent"] = "gaussian"
    emission_dim: Count | None = None
    input_dim: NonNegativeInt = 0
    tau: Positive = 1.0
    substeps: Count = 1
    solver: Solver = "euler"
    marginal: str | None = None
    num_particles: Count = 64
    parameterisation: Literal["canonical", "redundant"] | None = None
    priors: Mapping[str, dist.Distribution] | None = None

    def _check_hyperparameters(self):
        if self.marginal is None:
            default = "observed" if self.observation == "latent" else "sample"
            object.__setattr__(self, "marginal", default)
        if self.rank is not None and self.rank > self.num_units:
            raise PriorError(f"SDERNN rank={self.rank} exceeds num_units={self.num_units}")
        symmetric_lowrank = self.symmetric and self.diffusion == "lowrank"
        without = (symmetric_lowrank or self.diffusion == "state") and self._free_coordinates
        if self.parameterisation is None:
            object.__setattr__(self, "parameterisation", "redundant" if without else "canonical")
        elif without and self.parameterisation == "canonical":
            why = (
                "only diagonal maps keep N = M diag(s), and they cannot make diag(sigma^2) + "
                "F F^T the identity"
                if symmetric_lowrank
                else "no fixed map of the latent space makes a state-dependent noise the identity"
            )
            raise PriorError(
                f"SDERNN(symmetric={self.symmetric}, diffusion={self.diffusion!r}) has no "
                f"canonical form ({why}); give parameterisation='redundant'"
            )
        self._check_parameterised_priors()

    def _check_parameterised_priors(self):
        """A prior on a site the chosen form does not have is refused with what to do."""
        priors = self.priors if isinstance(self.priors, Mapping) else {}
        if not self._canonical:
            wrong = sorted({"initial_chol", "initial_scale"} & set(priors))
            if wrong:
                raise PriorError(
                    f"SDERNN(parameterisation='redundant') has z_0 ~ N(0, I) and no site "
                    f"{wrong[0]!r}; give parameterisation='canonical' to put a prior on it"
                )
            return
        wrong = sorted({"sigma", "F"} & set(priors))
        if wrong:
            raise PriorError(
                f"SDERNN(parameterisation='canonical') has no site {wrong[0]!r}: the latent "
                f"noise is the identity there and the coordinates' scale is in "
                f"{self._initial_site!r}; give parameterisation='redundant' to put a prior "
                f"on the diffusion"
            )
        if not self.symmetric:
            require_trapezoidal_prior(
                self.priors, "C", "SDERNN", "LowerTrapezoidalNormal(emission_dim, rank, scale)"
            )

    @property
    def _free_coordinates(self) -> bool:
        """Whether invertible maps of the latent space leave the likelihood unchanged."""
        return self.rank is not None and self.observation != "latent"

    @property
    def _canonical(self) -> bool:
        """Whether the sites are the canonical form's (not the same as the redundant's)."""
        return self.parameterisation == "canonical" and self._free_coordinates

    @property
    def _initial_site(self) -> str:
        """The canonical form's initial-state site: ``initial_scale`` or ``initial_chol``."""
        scaled = self.diffusion == "isotropic" or self.symmetric
        return "initial_scale" if scaled else "initial_chol"

    @property
    def latent_dim(self) -> int:
        """:math:`R` for low rank, :math:`n` for full connectivity."""
        return self.rank or self.num_units

    def marginals(self) -> dict[str, str | None]:
        """Sampled or filtered paths through a readout; the transition density when observed."""
        if self.observation == "latent":
            through = "observation='latent' observes the path itself"
            return super().marginals() | {
                "sample": through,
                "particle": through,
                "observed": None,
            }
        allowed = super().marginals()
        if self.solver != "euler":
            allowed["particle"] = (
                f"the filter steps by Euler-Maruyama; solver={self.solver!r} paths are only sampled"
            )
        return allowed

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Connectivity, bias, inputs, diffusion and (unless ``"latent"``) readout sites."""
        n, D, E = self.num_units, self.latent_dim, emission_dim
        if self.rank is None:
            priors = {"J": dist.Normal(jnp.zeros((n, n)), 1.0 / math.sqrt(n))}
        elif self.symmetric:
            priors = {
                "M": dist.Normal(jnp.zeros((n, self.rank)), 1.0),
                "s": dist.Normal(jnp.zeros(self.rank), 2.0),
            }
        else:
            priors = {
                "M": dist.Normal(jnp.zeros((n, self.rank)), 1.0),
                "N": dist.Normal(jnp.zeros((n, self.rank)), math.sqrt(n)),
            }
        priors["b"] = dist.Normal(jnp.zeros(n), 1.0)
        if self.input_dim:
            priors["B"] = dist.Normal(jnp.zeros((D, self.input_dim)), 1.0)
        if self.diffusion == "state":
            entries = D * (D + 1) // 2
            priors["K"] = dist.Normal(jnp.zeros((n, entries)), math.sqrt(n))
            priors["g"] = dist.Normal(jnp.zeros(entries), 1.0)
        elif not self._canonical:
            priors["sigma"] = dist.HalfNormal(jnp.ones(() if self.diffusion == "isotropic" else D))
        elif self._initial_site == "initial_chol":
            priors["initial_chol"] = LowerTrapezoidalNormal(D, D, INITIAL_SCALE)
        else:
            shape = () if self.diffusion == "isotropic" else (D,)
            priors["initial_scale"] = dist.HalfNormal(jnp.full(shape, INITIAL_SCALE))
        if self.diffusion == "lowrank" and not self._canonical:
            priors["F"] = dist.Normal(jnp.zeros((D, self.diffusion_rank)), 0.5)
        if self._canonical and not self.symmetric:
            priors["C"] = LowerTrapezoidalNormal(E, D, 1.0)
            priors["d"] = dist.Normal(jnp.zeros(E), 1.0)
        elif self.observation != "latent":
            priors["C"] = dist.Normal(jnp.zeros((E, D)), 1.0)
            priors["d"] = dist.Normal(jnp.zeros(E), 1.0)
        if self.observation == "gaussian":
            priors["r"] = dist.HalfNormal(jnp.ones(E))
        return priors

    # -- dynamics ----------------------------------------------------------------------------
    def _bias_split(self, params: Mapping[str, Array]) -> tuple[Array, Array]:
        r"""(:math:`c`, :math:`b_\perp`) with :math:`b = M c + b_\perp` (low rank)."""
        M = params["M"]
        c = jnp.linalg.solve(M.T @ M, M.T @ params["b"])
        return c, params["b"] - M @ c

    def unit_states(self, params: Mapping[str, Array], z: Array) -> Array:
        r"""Unit activations :math:`x` (..., n) at latent states ``z`` (..., D)."""
        return self._unit_map(params)(z)

    def _right_vectors(self, params: Mapping[str, Array]) -> Array:
        r""":math:`N`: the site, or :math:`M\,\mathrm{diag}(s)` when ``symmetric``."""
        return params["M"] * params["s"] if self.symmetric else params["N"]

    def connectivity(self, params: Mapping[str, Array]) -> Array:
        r"""The unit-space :math:`J` (n, n).

        The site ``J`` (its symmetric part when ``symmetric``), or :math:`M N^\top / n`.
        """
        if self.rank is None:
            J = params["J"]
            return (J + J.T) / 2 if self.symmetric else J
        return params["M"] @ self._right_vectors(params).T / self.num_units

    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r"""The latent drift :math:`g` at one state.

        :math:`g(z) = (-z + N^\top\phi(Mz + b_\perp)/n + c + B_z u)/\tau` (low rank) or
        :math:`(-x + J\phi(x) + b + B u)/\tau` (full).
        """
        return self.drift(params)(x, u)

    def drift(self, params: Mapping[str, Array]):
        """:meth:`vector_field` as a function ``g(z, u=None)`` of the state.

        Work that depends only on the parameters (the split of the bias) is done once here,
        outside the loops over states and time.
        """
        phi = NONLINEARITIES[self.nonlinearity]
        if self.rank is None:
            J, bias = self.connectivity(params), params["b"]

            def recurrent(z):
                return J @ phi(z) + bias
        else:
            M, N = params["M"], self._right_vectors(params)
            c, offset = self._bias_split(params)

            def recurrent(z):
                return N.T @ phi(M @ z + offset) / self.num_units + c

        def g(z, u=None):
            value = recurrent(z)
            if self.input_dim and u is not None:
                value = value + params["B"] @ u
            return (value - z) / self.tau

        return g

    def drift_parts(self, params: Mapping[str, Array], by="symmetry"):
        r"""The autonomous latent drift as a sum of forces: ``(names, parts)``, parts (part, D).

        ``by="symmetry"``: the leak and bias :math:`(-z + c)/\tau`, then the recurrent drift
        through :math:`J_s = (J + J^\top)/2` and through :math:`J_a = (J - J^\top)/2`, each
        read in latent coordinates (low rank: :math:`M^+ J_{s,a}\phi(x)/\tau`, with
        :math:`M^+ = (M^\top M)^{-1}M^\top`; the two sum to :math:`N^\top\phi(x)/(n\tau)`).
        ``by`` an array of one label per unit: the leak, then each population's outputs
        (:math:`\sum_{u \in P} n_u\phi(x_u)/(n\tau)`, full rank
        :math:`J_{:,P}\phi(x_P)/\tau`), in the order of ``np.unique(by)``. The parts always
        sum to :meth:`drift` without input; the leak is a gradient force.
        """
        phi, n, tau = self.nonlinearity_function, self.num_units, self.tau
        to_units = self._unit_map(params)
        J = self.connectivity(params) / tau
        if self.rank is None:
            bias = params["b"]
            leak = lambda z: (bias - z) / tau  # noqa: E731
            outputs = J  # column u: unit u's output weights
        else:
            M = params["M"]
            c, _ = self._bias_split(params)
            leak = lambda z: (c - z) / tau  # noqa: E731
            outputs = self._right_vectors(params).T / (n * tau)
        if isinstance(by, str):
            if by != "symmetry":
                raise PriorError(f"by={by!r}; expected 'symmetry' or one label per unit")
            sym, anti = (J + J.T) / 2, (J - J.T) / 2
            if self.rank is not None:
                pullback = jnp.linalg.solve(M.T @ M, M.T)
                sym, anti = pullback @ sym, pullback @ anti
            names = ["leak", "symmetric", "antisymmetric"]

            def parts(z):
                rates = phi(to_units(z))
                return jnp.stack([leak(z), sym @ rates, anti @ rates])

            return names, parts
        labels = np.asarray(by)
        if labels.shape != (n,):
            raise PriorError(f"by has shape {labels.shape}; expected one label per unit ({n},)")
        groups, index = np.unique(labels, return_inverse=True)
        membership = jnp.asarray(np.eye(len(groups))[index])  # (unit, group)

        def parts(z):
            rates = phi(to_units(z))
            populations = ((outputs * rates) @ membership).T  # (group, D)
            return jnp.concatenate([leak(z)[None], populations])

        return ["leak", *[str(g) for g in groups]], parts

    def diffusion_tril(self, params: Mapping[str, Array]) -> Array:
        r"""Cholesky factor :math:`L` of the latent noise covariance per unit time.

        :math:`L L^\top = \Sigma_z \Sigma_z^\top / \tau^2` (:math:`\Sigma_z = I` in the
        canonical form). Any leading axes of the parameters are kept. Constant diffusion only;
        :meth:`noise_factor` gives the factor at a state for every diffusion.
        """
        if self.diffusion == "state":
            raise PriorError(
                "SDERNN(diffusion='state') has no constant noise factor; use "
                "noise_factor(params)(z), the factor at a latent state z"
            )
        if self._canonical:
            return jnp.eye(self.latent_dim) / self.tau
        return _noise_factor(self.diffusion, params, self.latent_dim) / self.tau

    def noise_factor(self, params: Mapping[str, Array]):
        r"""The latent noise factor as a function ``L(z)`` of one state: (D, D), lower triangular.

        :math:`L(z)L(z)^\top dt` is the covariance of one step's noise. Constant
        (:meth:`diffusion_tril`) unless ``diffusion="state"``, where
        :math:`L(z) = \mathrm{tril}(g + K^\top\phi(x(z))/n)/\tau`, diagonal through softplus.
        """
        if self.diffusion != "state":
            tril = self.diffusion_tril(params)
            return lambda z: tril
        D, phi = self.latent_dim, self.nonlinearity_function
        rows, cols = np.tril_indices(D)
        on_diagonal = rows == cols
        readout, offset = params["K"] / self.num_units, params["g"]
        to_units = self._unit_map(params)

        def factor(z):
            entries = offset + phi(to_units(z)) @ readout
            entries = jnp.where(on_diagonal, jax.nn.softplus(entries), entries)
            return jnp.zeros((D, D), entries.dtype).at[rows, cols].set(entries) / self.tau

        return factor

    def with_constant_noise(self, params: Mapping[str, Array], factor: Array) -> dict[str, Array]:
        r"""``params`` with the noise sites set so that :meth:`noise_factor` is ``factor``.

        ``factor`` (D, D) is a lower-triangular factor with a positive diagonal. ``"state"``:
        :math:`K = 0` and :math:`g` its entries (the diagonal through the inverse softplus);
        ``"diagonal"``/``"isotropic"``: :math:`\sigma` from its diagonal (the mean for
        isotropic); ``"lowrank"``: the diagonal and :math:`F = 0`. What a constant factor of
        the chosen diffusion can carry of ``factor`` is kept, the rest dropped. Drift-diffusion
        matching starts here (:func:`probdyn.inference.match_sde`).
        """
        if self._canonical:
            raise PriorError(
                "the canonical form fixes the latent noise to the identity; give "
                "parameterisation='redundant' to set it"
            )
        scaled = jnp.asarray(factor) * self.tau
        diagonal = jnp.diagonal(scaled)
        out = dict(params)
        if self.diffusion == "state":
            rows, cols = np.tril_indices(self.latent_dim)
            entries = scaled[rows, cols]
            inverse_softplus = jnp.log(jnp.expm1(jnp.maximum(entries, 1e-6)))
            out["g"] = jnp.where(rows == cols, inverse_softplus, entries)
            out["K"] = jnp.zeros_like(params["K"])
        elif self.diffusion == "isotropic":
            out["sigma"] = jnp.mean(diagonal)
        else:
            out["sigma"] = diagonal
            if self.diffusion == "lowrank":
                out["F"] = jnp.zeros_like(params["F"])
        return out

    def _unit_map(self, params: Mapping[str, Array]):
        """:meth:`unit_states` as a function of latent states (..., D), the bias split done once."""
        if self.rank is None:
            return lambda z: z
        M, offset = self.latent_subspace(params)
        return lambda z: z @ M.T + offset

    def latent_subspace(self, params: Mapping[str, Array]) -> tuple[Array, Array]:
        r"""The affine subspace the latent state lives on: :math:`x = Ez + o`, as ``(E, o)``.

        :math:`(M, b_\perp)` for low rank; :math:`(I, 0)` for full rank (the units are the
        latents).
        """
        if self.rank is None:
            n = self.num_units
            return jnp.eye(n), jnp.zeros(n)
        _, offset = self._bias_split(params)
        return params["M"], offset

    @property
    def nonlinearity_function(self):
        r""":math:`\phi`, the units' nonlinearity, as a function."""
        return NONLINEARITIES[self.nonlinearity]

    def initial_spread(self, params: Mapping[str, Array]) -> np.ndarray:
        r"""The prior standard deviation of :math:`z_0` per latent axis (any leading axes).

        From ``initial_scale`` or :math:`\sqrt{\mathrm{diag}(L_0L_0^\top)}` in the canonical
        form, ones otherwise: the fixed-point search places its default starts within three.
        """
        leading = np.shape(params["b"])[:-1]
        ones = np.ones((*leading, self.latent_dim))
        if self._canonical and "initial_chol" in params:
            return np.sqrt(np.sum(np.asarray(params["initial_chol"]) ** 2, axis=-1))
        if self._canonical and "initial_scale" in params:
            scale = np.asarray(params["initial_scale"])
            return ones * (scale[..., None] if self.diffusion == "isotropic" else scale)
        return ones

    def canonical_form(self, params: Mapping[str, Array]) -> dict[str, np.ndarray]:
        r"""Redundant draws (any leading axes) in the canonical form.

        :math:`T = U L_\Sigma^{-1}`, with :math:`L_\Sigma` the Cholesky factor of
        :math:`\Sigma_z\Sigma_z^\top` (which :math:`L_\Sigma^{-1}` makes the identity) and
        :math:`U` the rotation of the LQ decomposition :math:`C L_\Sigma = L U`, so that
        :math:`C \to L`; symmetric networks take :math:`T = \mathrm{diag}(1/\sigma)` and
        :math:`s \to s/\sigma^2`. Then :math:`\Sigma_0 = TT^\top`.
        """
        self._require_free_coordinates()
        p = {name: jnp.asarray(value) for name, value in params.items()}
        noise = _noise_factor(self.diffusion, p, self.latent_dim)
        p.pop("F", None)
        sigma = p.pop("sigma")
        if self.symmetric:
            scale = jnp.diagonal(noise, axis1=-2, axis2=-1)
            T = _diag(1.0 / scale)
            p["s"] = p["s"] / scale**2
            p = self._transform(p, T, _diag(scale))
            p["initial_scale"] = 1.0 / sigma
        else:
            L, U = lq(p["C"] @ noise)
            T = U @ jnp.linalg.inv(noise)
            p = self._transform(p, T, noise @ jnp.swapaxes(U, -1, -2))
            p["C"] = L  # exactly zero above the diagonal
            if self.diffusion == "isotropic":
                p["initial_scale"] = 1.0 / sigma
            else:
                p["initial_chol"] = jnp.linalg.cholesky(T @ jnp.swapaxes(T, -1, -2))
        return {name: np.asarray(value) for name, value in p.items()}

    def redundant_form(self, params: Mapping[str, Array]) -> dict[str, np.ndarray]:
        r"""Canonical draws (any leading axes) in the redundant form.

        With :math:`\Sigma_0 = V\Lambda V^\top` the map :math:`T = \Lambda^{-1/2}V^\top`
        makes the initial covariance the identity and the noise :math:`TT^\top = \Lambda^{-1}`
        diagonal: :math:`\sigma = \Lambda^{-1/2}` (one value when isotropic), ``F`` zero for
        low-rank diffusion. One of the redundant form's signed permutations of the latent axes.
        """
        self._require_free_coordinates()
        p = {name: jnp.asarray(value) for name, value in params.items()}
        D = self.latent_dim
        if "initial_scale" in p:
            scale = p.pop("initial_scale")
            full = jnp.broadcast_to(
                scale[..., None] if self.diffusion == "isotropic" else scale,
                (*p["b"].shape[:-1], D),
            )
            T, T_inv = _diag(1.0 / full), _diag(full)
            if self.symmetric:
                p["s"] = p["s"] / full**2
            sigma = 1.0 / scale
        else:
            T, T_inv, root = whitening(p.pop("initial_chol"))
            sigma = 1.0 / root
        p = self._transform(p, T, T_inv)
        p["sigma"] = sigma
        if self.diffusion == "lowrank":
            p["F"] = jnp.zeros((*p["b"].shape[:-1], D, self.diffusion_rank))
        return {name: np.asarray(value) for name, value in p.items()}

    def _transform(self, p: dict[str, Array], T: Array, T_inv: Array) -> dict[str, Array]:
        r"""New latent coordinates :math:`z' = Tz`.

        :math:`M \to MT^{-1}`, :math:`N \to NT^\top` (symmetric: :math:`M` alone),
        :math:`B \to TB`, :math:`C \to CT^{-1}`.
        """
        p["M"] = p["M"] @ T_inv
        if not self.symmetric:
            p["N"] = p["N"] @ jnp.swapaxes(T, -1, -2)
        if "B" in p:
            p["B"] = T @ p["B"]
        p["C"] = p["C"] @ T_inv
        return p

    def _require_free_coordinates(self):
        if self.diffusion == "state":
            raise PriorError(
                "SDERNN(diffusion='state') has one form, the redundant one: no fixed map of "
                "the latent space makes a state-dependent noise the identity"
            )
        if not self._free_coordinates:
            raise PriorError(
                "SDERNN's canonical and redundant forms differ only with low rank and a readout "
                "(rank=R, observation='gaussian' or 'poisson'); this model has one form"
            )

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        r""":math:`C z + d`, the rate :math:`\exp(C z + d)`, or :math:`z` itself (``"latent"``)."""
        if self.observation == "latent":
            return x
        mean = params["C"] @ x + params["d"]
        return jnp.exp(mean) if self.observation == "poisson" else mean

    # -- the program -------------------------------------------------------------------------
    def prepare(self, ds: xr.Dataset) -> ModelData:
        """As :meth:`probdyn.Model.prepare`, plus the checks this family needs."""
        data = super().prepare(ds)
        if self.observation == "latent":
            if data.emission_dim != self.latent_dim:
                raise DataError(
                    f"observation='latent' reads y as the latent path: y has "
                    f"{data.emission_dim} neurons but the latent dim is {self.latent_dim}"
                )
            if data.mask is not None:
                raise DataError(
                    "observation='latent' needs every bin of y (the transition density links "
                    "consecutive states); y has missing (NaN) bins"
                )
        if self.input_dim and (data.inputs is None or data.inputs.shape[-1] != self.input_dim):
            have = "no inputs" if data.inputs is None else f"{data.inputs.shape[-1]} inputs"
            raise DataError(f"the model expects input_dim={self.input_dim}; the data have {have}")
        return data

    # -- the state-space statement -------------------------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int]:
        """``substeps`` standard-normal vectors per bin."""
        return self.substeps, self.latent_dim

    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        r""":math:`z_0 = \xi_0 \sim N(0, I)`; canonical: :math:`s_0\xi_0` or :math:`L_0\xi_0`."""
        if not self._canonical:
            return noise
        if self._initial_site == "initial_chol":
            return params["initial_chol"] @ noise
        return params["initial_scale"] * noise

    def transition(self, params: Mapping[str, Array], dt: float):
        r"""``substeps`` Euler-Maruyama steps of :math:`h = dt/\text{substeps}` over one bin.

        :math:`z \leftarrow z + h\,g(z, u) + \sqrt{h}\,L(z)\xi`, the input held over the bin.
        """
        factor, drift = self.noise_factor(params), self.drift(params)
        h = dt / self.substeps

        def advance(x, noise, u):
            def substep(z, xi):
                return z + h * drift(z, u) + math.sqrt(h) * factor(z) @ xi, None

            return jax.lax.scan(substep, x, noise)[0]

        return advance

    def emission(self, params: Mapping[str, Array], x: Array) -> dist.Distribution:
        r""":math:`N(Cz + d, \mathrm{diag}(r^2))` or :math:`\mathrm{Poisson}(\exp(Cz + d))`."""
        return linear_readout(params, x, self.observation)

    def exact_marginal(
        self, params: Mapping[str, Array], batch: ModelData, num_trials: int
    ) -> dist.Distribution:
        """The observed path's Euler-Maruyama transition density (``observation='latent'``)."""
        state = self.diffusion == "state"
        return EulerMaruyamaPath(
            self.drift(params),
            self.noise_factor(params) if state else self.diffusion_tril(params),
            batch.dt,
            batch.num_timesteps,
            inputs=batch.inputs if self.input_dim else None,
            batch_shape=(num_trials,),
            dim=self.latent_dim,
        )

    def latent_path(
        self, params: Mapping[str, Array], noise: Array, dt: float, inputs: Array | None = None
    ) -> Array:
        """The non-centred path (:meth:`probdyn.state_space.StateSpaceModel.latent_path`).

        By the built-in Euler-Maruyama scheme, or by the diffrax ``solver`` on the same noise.
        """
        if self.solver == "euler":
            return super().latent_path(params, noise, dt, inputs)
        return self._diffrax_path(self.drift(params), self.noise_factor(params), noise, dt, inputs)

    def _diffrax_path(self, drift, factor, noise, dt, inputs):
        r"""The same path by a diffrax solver.

        The Brownian motion is the piecewise-linear path through
        :math:`W(t_j) = \sqrt{h}\sum_{i \le j} \xi_i` on the substep grid, so ``solver="Euler"``
        reproduces the built-in scheme and ``"Heun"`` integrates the same noise with a
        second-order drift step.
        """
        import diffrax

        k = self.substeps
        h = dt / k
        num_bins = (noise.shape[0] - 1) // k
        grid = jnp.arange(num_bins * k + 1) * h
        brownian = jnp.concatenate(
            [jnp.zeros((1, noise.shape[1])), jnp.cumsum(math.sqrt(h) * noise[1:], axis=0)]
        )
        control = diffrax.LinearInterpolation(ts=grid, ys=brownian)

        def field(t, y, args):
            if inputs is None:
                return drift(y, None)
            held = jnp.clip(jnp.floor(t / dt + 1e-6).astype(int), 0, num_bins - 1)
            return drift(y, inputs[held])

        terms = diffrax.MultiTerm(
            diffrax.ODETerm(field), diffrax.ControlTerm(lambda t, y, args: factor(y), control)
        )
        solution = diffrax.diffeqsolve(
            terms,
            getattr(diffrax, self.solver)(),
            t0=0.0,
            t1=grid[-1],
            dt0=h,
            y0=noise[0],
            saveat=diffrax.SaveAt(ts=jnp.arange(num_bins + 1) * dt),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=num_bins * k + 1,
        )
        return solution.ys


def _diag(vector: Array) -> Array:
    """Diagonal matrices (..., D, D) from vectors (..., D)."""
    return vector[..., :, None] * jnp.eye(vector.shape[-1])


def _noise_factor(diffusion: str, params: Mapping[str, Array], dim: int) -> Array:
    r""":math:`\Sigma_z` as a lower-triangular factor, from the redundant form's sites.

    :math:`\sigma I`, :math:`\mathrm{diag}(\sigma)` or
    :math:`\mathrm{chol}(\mathrm{diag}(\sigma^2) + FF^\top)`, leading axes kept.
    """
    sigma = jnp.asarray(params["sigma"])
    if diffusion == "isotropic":
        sigma = sigma[..., None]
    sigma = jnp.broadcast_to(sigma, (*sigma.shape[:-1], dim))
    if diffusion != "lowrank":
        return _diag(sigma)
    F = params["F"]
    return jnp.linalg.cholesky(_diag(sigma**2) + F @ jnp.swapaxes(F, -1, -2))
