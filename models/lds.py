r"""Linear dynamical system: the reference model, with an exact evidence for Gaussian emissions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array

from probdyn.algorithms.canonical import (
    INITIAL_SCALE,
    LowerTrapezoidalNormal,
    lq,
    require_trapezoidal_prior,
    whitening,
)
from probdyn.algorithms.kalman import LinearGaussianStateSpace, kalman_smoother
from probdyn.errors import PriorError
from probdyn.model import ModelData
from probdyn.schema import Count
from probdyn.state_space import StateSpaceModel, linear_readout


@dataclasses.dataclass(frozen=True, kw_only=True)
class LDS(StateSpaceModel):
    r"""Linear dynamical system with Gaussian or Poisson emissions.

    .. math::
        x_0 \sim N(0, \Sigma_0),\qquad x_{t+1} = A x_t + b + S\,\epsilon_t,\quad
        \epsilon_t \sim N(0, I),

        y_t \sim N(C x_t + d,\ \mathrm{diag}(r^2))\quad\text{or}\quad
        y_t \sim \mathrm{Poisson}(\exp(C x_t + d)).

    **Parameterisation.** Any invertible map :math:`x \mapsto Mx` of the latent space
    (:math:`A \to MAM^{-1}`, :math:`b \to Mb`, :math:`C \to CM^{-1}`, :math:`S S^\top \to
    M S S^\top M^\top`, :math:`\Sigma_0 \to M\Sigma_0M^\top`) leaves the likelihood unchanged.
    Two forms pick coordinates:

    - ``"canonical"`` (the default): :math:`S = I`, :math:`\Sigma_0 = L_0 L_0^\top` free
      (site ``initial_chol``, lower triangular with a positive diagonal) and :math:`C` lower
      trapezoidal with a positive diagonal (:mod:`probdyn.algorithms.canonical`). The
      process noise fixes the scale and shear of the coordinates, the readout their rotation,
      so every model has one point (where :math:`C` has full rank) and NUTS runs on a
      posterior without a ridge (docs/geometry.md measures it).
    - ``"redundant"``: :math:`\Sigma_0 = I` and :math:`S = \mathrm{diag}(q)` (site ``q``), the
      form of earlier releases. Its only exact symmetries are signed permutations, but
      scalings and shears are pinned down by the first bin of each trial alone: a near-ridge.

    Both describe the same set of likelihoods: :meth:`redundant_form` and
    :meth:`canonical_form` map draws between them (runs written before the option read as
    ``"redundant"``). Fixed points in observation space (:math:`C x^* + d`) and eigenvalues of
    :math:`A` are the same in either.

    ================  ====================  =====================================
    site              shape                 default prior
    ================  ====================  =====================================
    ``A``             (latent, latent)      Normal(0, 0.5) per entry
    ``b``             (latent,)             Normal(0, 1)
    ``C``             (emission, latent)    Normal(0, 1); canonical: lower
                                            trapezoidal, half-normal diagonal
    ``d``             (emission,)           Normal(0, 1)
    ``r``             (emission,)           HalfNormal(1) (Gaussian emissions only)
    ``initial_chol``  (latent, latent)      canonical: lower triangular, entries
                                            Normal(0, 2), half-normal diagonal
    ``q``             (latent,)             redundant: HalfNormal(1)
    ================  ====================  =====================================

    The latent path (``marginal``, :mod:`probdyn.state_space`): ``"exact"`` (the default with
    Gaussian emissions) integrates it out by a Kalman filter, so the program's log density is
    the exact marginal likelihood :math:`p(y \mid \theta)`; ``"sample"`` (the default with
    Poisson emissions) samples it non-centred: the site ``latent_noise`` (trial, time, latent)
    holds :math:`(\xi_0, \epsilon_{0:T-2})` with :math:`x_0 = L_0 \xi_0`, and ``latents``
    records the path; ``"particle"`` estimates :math:`p(y \mid \theta)` by a particle filter
    of ``num_particles`` states. The observation site is named after the data variable
    (``y`` or ``spikes``).

    As dynamics this is a map, :math:`F(x) = A x + b`.
    """

    kind: ClassVar[str] = "map"
    site_dims: ClassVar[dict[str, list[str]]] = {
        "A": ["latent", "latent_from"],
        "b": ["latent"],
        "q": ["latent"],
        "initial_chol": ["latent", "latent_from"],
        "C": ["neuron", "latent"],
        "d": ["neuron"],
        "r": ["neuron"],
        "latent_noise": ["trial", "time", "latent"],
        "latents": ["trial", "time", "latent"],
    }
    latent_dim: Count
    emission_dim: Count | None = None
    observation: Literal["gaussian", "poisson"] = "gaussian"
    marginal: str | None = None
    num_particles: Count = 64
    parameterisation: Literal["canonical", "redundant"] = "canonical"
    priors: Mapping[str, dist.Distribution] | None = None

    def _check_hyperparameters(self):
        if self.marginal is None:
            default = "exact" if self.observation == "gaussian" else "sample"
            object.__setattr__(self, "marginal", default)
        priors = self.priors if isinstance(self.priors, Mapping) else {}
        if self.parameterisation == "canonical":
            if "q" in priors:
                raise PriorError(
                    "LDS(parameterisation='canonical') has no site 'q': the process noise is "
                    "the identity there and the coordinates' scale is in 'initial_chol'; "
                    "give parameterisation='redundant' to put a prior on q"
                )
            require_trapezoidal_prior(
                priors, "C", "LDS", "LowerTrapezoidalNormal(emission_dim, latent_dim, scale)"
            )
        elif "initial_chol" in priors:
            raise PriorError(
                "LDS(parameterisation='redundant') has x_0 ~ N(0, I) and no site "
                "'initial_chol'; give parameterisation='canonical' to put a prior on it"
            )

    def marginals(self) -> dict[str, str | None]:
        """Exact (Kalman) with Gaussian emissions; sampled or filtered paths always."""
        exact = None if self.observation == "gaussian" else "Poisson emissions have no closed form"
        return super().marginals() | {"exact": exact}

    @property
    def noise_shape(self) -> tuple[int, int]:
        """One standard-normal vector per bin."""
        return 1, self.latent_dim

    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        r""":math:`x_0 = L_0 \xi_0` (canonical) or :math:`\xi_0` (redundant)."""
        if self.parameterisation == "canonical":
            return params["initial_chol"] @ noise
        return noise

    def transition(self, params: Mapping[str, Array], dt: float):
        r""":math:`x_t = A x_{t-1} + b + S \xi_t` (``u``, ``dt`` unused)."""
        scale = self._noise_scale(params)

        def advance(x, noise, u):
            return self.vector_field(params, x) + scale * noise[0]

        return advance

    def _noise_scale(self, params: Mapping[str, Array]) -> Array:
        """The diagonal of :math:`S`: ones (canonical) or ``q``."""
        if self.parameterisation == "canonical":
            return jnp.ones(self.latent_dim, params["A"].dtype)
        return params["q"]

    def emission(self, params: Mapping[str, Array], x: Array) -> dist.Distribution:
        r""":math:`N(C x + d, \mathrm{diag}(r^2))` or :math:`\mathrm{Poisson}(\exp(C x + d))`."""
        return linear_readout(params, x, self.observation)

    def exact_marginal(
        self, params: Mapping[str, Array], batch: ModelData, num_trials: int
    ) -> dist.Distribution:
        """Each trial's Kalman-filter marginal likelihood."""
        return LinearGaussianStateSpace(
            *self._system(params),
            batch.num_timesteps,
            mask=batch.mask,
            batch_shape=(num_trials,),
            initial_chol=params.get("initial_chol"),
        )

    def _system(self, p: Mapping[str, Array]) -> tuple[Array, ...]:
        """``(A, b, Q, C, d, R_diag)`` as the Kalman filter reads them."""
        Q = jnp.diag(self._noise_scale(p) ** 2)
        return p["A"], p["b"], Q, p["C"], p["d"], p["r"] ** 2

    def smoothed_latents(
        self, params: Mapping[str, Array], observations: Array, mask: Array | None = None
    ) -> tuple[Array, Array]:
        r"""Moments of :math:`p(x_t \mid y_{0:T-1}, \theta)` of one trial (time, emission).

        The Rauch-Tung-Striebel smoother (:func:`probdyn.algorithms.kalman.kalman_smoother`): means
        (time, latent), covariances (time, latent, latent). Gaussian emissions only.
        """
        if self.observation != "gaussian":
            raise PriorError(
                "smoothed_latents needs observation='gaussian' (a linear-Gaussian model)"
            )
        L0 = params.get("initial_chol")
        P0 = None if L0 is None else L0 @ L0.T
        return kalman_smoother(*self._system(params), observations, mask, P0)

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Sites ``A, b, initial_chol`` (or ``q``), ``C, d`` (and ``r``) with their defaults.

        ``initial_chol`` in the canonical form, ``q`` in the redundant one; ``r`` for
        Gaussian emissions only.
        """
        D, N = self.latent_dim, emission_dim
        priors = {"A": dist.Normal(jnp.zeros((D, D)), 0.5), "b": dist.Normal(jnp.zeros(D), 1.0)}
        if self.parameterisation == "canonical":
            priors["initial_chol"] = LowerTrapezoidalNormal(D, D, INITIAL_SCALE)
            priors["C"] = LowerTrapezoidalNormal(N, D, 1.0)
        else:
            priors["q"] = dist.HalfNormal(jnp.ones(D))
            priors["C"] = dist.Normal(jnp.zeros((N, D)), 1.0)
        priors["d"] = dist.Normal(jnp.zeros(N), 1.0)
        if self.observation == "gaussian":
            priors["r"] = dist.HalfNormal(jnp.ones(N))
        return priors

    def initial_spread(self, params: Mapping[str, Array]) -> np.ndarray:
        r"""The prior standard deviation of :math:`x_0` per latent axis (any leading axes).

        :math:`\sqrt{\mathrm{diag}(L_0 L_0^\top)}` in the canonical form, ones in the redundant
        one: the fixed-point search places its default starts within three of them.
        """
        if self.parameterisation == "canonical" and "initial_chol" in params:
            return np.sqrt(np.sum(np.asarray(params["initial_chol"]) ** 2, axis=-1))
        return np.ones(np.shape(params["A"])[:-1])  # redundant, or draws without x_0's spread

    def redundant_form(self, params: Mapping[str, Array]) -> dict[str, np.ndarray]:
        r"""Canonical draws (any leading axes) in the redundant form: ``q`` for ``initial_chol``.

        With :math:`\Sigma_0 = V \Lambda V^\top` the map :math:`M = \Lambda^{-1/2} V^\top`
        makes the initial covariance the identity and the process noise
        :math:`M M^\top = \Lambda^{-1}` diagonal: :math:`q = \Lambda^{-1/2}`,
        :math:`A \to M A M^{-1}`, :math:`b \to M b`, :math:`C \to C M^{-1}`. One of the
        redundant form's signed permutations of the latent axes (eigenvalues ascending).
        """
        p = {name: jnp.asarray(value) for name, value in params.items()}
        M, M_inv, root = whitening(p.pop("initial_chol"))
        p["A"] = M @ p["A"] @ M_inv
        p["b"] = jnp.einsum("...ij,...j->...i", M, p["b"])
        p["C"] = p["C"] @ M_inv
        p["q"] = 1.0 / root
        return {name: np.asarray(value) for name, value in p.items()}

    def canonical_form(self, params: Mapping[str, Array]) -> dict[str, np.ndarray]:
        r"""Redundant draws (any leading axes) in the canonical form: ``initial_chol`` for ``q``.

        :math:`M_1 = \mathrm{diag}(1/q)` makes the process noise the identity (and
        :math:`\Sigma_0 = M_1 M_1^\top`); the LQ decomposition :math:`C M_1^{-1} = L U`
        (:func:`probdyn.algorithms.canonical.lq`) then rotates by :math:`U`:
        :math:`A \to U M_1 A M_1^{-1} U^\top`, :math:`b \to U M_1 b`, :math:`C \to L`,
        :math:`L_0 = \mathrm{chol}(U M_1 M_1^\top U^\top)`.
        """
        p = {name: jnp.asarray(value) for name, value in params.items()}
        q = p.pop("q")
        C1 = p["C"] * q[..., None, :]
        L, U = lq(C1)
        M = U / q[..., None, :]
        M_inv = jnp.swapaxes(U, -1, -2) * q[..., :, None]
        p["A"] = M @ p["A"] @ M_inv
        p["b"] = jnp.einsum("...ij,...j->...i", M, p["b"])
        p["C"] = L
        p["initial_chol"] = jnp.linalg.cholesky(M @ jnp.swapaxes(M, -1, -2))
        return {name: np.asarray(value) for name, value in p.items()}

    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r"""The map :math:`F(x) = A x + b`."""
        return params["A"] @ x + params["b"]

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        r""":math:`C x + d` (Gaussian) or the rate per bin :math:`\exp(C x + d)` (Poisson)."""
        mean = params["C"] @ x + params["d"]
        return jnp.exp(mean) if self.observation == "poisson" else mean
