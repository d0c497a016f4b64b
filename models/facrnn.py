r"""Factorised low-rank RNNs (family 4): latent groups kept independent.

Li, Wang, Wang, Li, Jaeger & Wu (FacRNN, 2025) read a low-rank RNN as a variational autoencoder
and penalise the partial correlation between groups of latent dimensions, so that each group
evolves on its own while the dimensions inside a group may be entangled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax import Array

from probdyn.algorithms.canonical import (
    LowerTrapezoidalNormal,
    block_lq,
    require_trapezoidal_prior,
)
from probdyn.algorithms.independence import partial_correlation
from probdyn.errors import DataError, PriorError
from probdyn.model import ModelData
from probdyn.schema import Count, NonNegative, Positive
from probdyn.state_space import StateSpaceModel

NONLINEARITIES = {"tanh": jnp.tanh, "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FacRNN(StateSpaceModel):
    r"""A low-rank RNN whose :math:`K = GH` latent dimensions form G groups of H.

    .. math::
        z_t \mid x_{t-1} \sim N\big(B\,\phi(x_{t-1}) + b,\ s^2 I_K\big),\qquad
        x_t \mid z_t \sim N\big(A z_t + a,\ \mathrm{diag}\,\sigma^2\big),

    :math:`\phi` the ``nonlinearity``, so that the activity follows the rank-K network
    :math:`x_t = J\phi(x_{t-1}) + Ab + a + \text{noise}` with connectivity
    :math:`J = AB = \sum_g A_g B_g` (:math:`A_g` the columns, :math:`B_g` the rows of group g).
    ``decoder="relu"`` reads :math:`x_t \sim N(\mathrm{ReLU}(A z_t + a), \mathrm{diag}\,\sigma^2)`.
    Each transition :math:`x_{t-1} \to x_t` is scored given the recorded :math:`x_{t-1}` (the
    first bin of a trial is conditioned on). With the linear decoder :math:`z_t` is integrated
    out exactly,

    .. math::
        x_t \mid x_{t-1} \sim N\big(A(B\phi(x_{t-1}) + b) + a,\ s^2 A A^\top
        + \mathrm{diag}\,\sigma^2\big),

    so the log density is the marginal likelihood; with the ReLU decoder :math:`z_t` is the
    sampled site ``latents`` (trial, transition, latent).

    **Independence of groups.** ``correlation="pc"`` adds the seed's penalty,
    ``numpyro.factor("partial_correlation", -beta * N * PC)``, with PC the partial correlation of
    the codes' aggregated posterior :math:`\frac1N\sum_n N(\mu_n, s^2 I)`,
    :math:`\mu_n = B\phi(x_{n-1}) + b`, estimated on each minibatch
    (:func:`probdyn.algorithms.independence.partial_correlation`, N the fitted transitions, the
    draws :math:`\mu_n + s\epsilon_n` with fixed :math:`\epsilon` so that the log density stays a
    deterministic function of the parameters, as NUTS and SMC need). ``beta`` weighs PC against
    the log likelihood per transition, as the seed's loss (averaged over samples) does.
    ``correlation="block"`` is the seed's simpler baseline: ``-beta * N`` times the squared
    Frobenius norm of the cross-group blocks of :math:`BA` (the latent coupling of the
    linearised dynamics); ``None``: no penalty (a plain low-rank RNN of rank K).

    ``correlation="prior"`` makes independence a posterior statement instead of a penalty.
    :math:`B` is reparameterised by the latent coupling :math:`M = BA` it implies,

    .. math::
        B = M A^{+} + R\,(I - A A^{+}),\qquad A^{+} = (A^\top A)^{-1}A^\top,

    (so :math:`BA = M` exactly, :math:`R` the part of :math:`B` that :math:`A` does not see),
    with a horseshoe on the cross-group entries of :math:`M` (Carvalho, Polson & Scott 2010):
    :math:`M_{ij} = \tau\lambda_{ij}\tilde M_{ij}`, :math:`\lambda_{ij} \sim C^+(0, 1)`,
    :math:`\tau \sim C^+(0, \tau_0)` (``tau_scale``, 0.1), and :math:`M_{ij} = \tilde
    M_{ij} \sim N(0, 1)` within groups. The prior is proper, so ``compare`` can weigh G groups
    against one by evidence; the deterministic site ``cross_coupling``,
    :math:`\|M_\text{cross}\|_F / \|M\|_F`, is recorded under every variant, and its
    posterior says how sure the data make the independence.

    **Reading of the seed.** The seed's VAE has the prior :math:`p(z) = N(0, I)` and the
    transition as its encoder :math:`q(z_t \mid x_{t-1})`; its reconstruction term is the
    expected log likelihood above. Here the transition is the generative distribution of
    :math:`z_t` (a stochastic low-rank RNN, as in Pals et al. 2024), every weight has a prior,
    and the seed's :math:`KL(q \| N(0, I))`, a shrinkage of the codes, is left to those priors.
    ``bandwidth``: :math:`s`; None applies the seed's rule :math:`s = N^{-1/(K+4)}` (N the
    fitted transitions), ``"learned"`` makes it the site ``s``.

    **The seed's objective** (``objective="vae"``, Gaussian activity and the linear decoder):
    instead of the marginal likelihood each transition contributes the seed's evidence lower
    bound, the expected reconstruction under :math:`q(z_t \mid x_{t-1}) = N(\mu_t, s^2 I)`
    minus :math:`KL(q \,\|\, N(0, I))`, both in closed form,

    .. math::
        \log N(x_t;\ A\mu_t + a,\ \mathrm{diag}\,\sigma^2)
        - \frac{s^2}{2}\sum_{n,k}\frac{A_{nk}^2}{\sigma_n^2}
        - \frac12\sum_k\big(\mu_{tk}^2 + s^2 - 1 - 2\log s\big),

    the first term being the observed site ``y``, the rest the factor ``vae_terms``; the PC
    penalty is added as above. Maximised (MAP) this is the seed's training loss with weight
    priors; it is a bound, not a likelihood, so evidence and held-out likelihoods should be
    read from the default ``objective="marginal"``.

    **Parameterisation.** A rotation :math:`U` of the latents (:math:`z \to Uz`,
    :math:`A \to AU^\top`, :math:`B \to UB`, :math:`b \to Ub`) leaves every likelihood here
    unchanged (the latent noise :math:`s^2 I` and :math:`z_0 \sim N(0, I)` are isotropic);
    the PC and block penalties and the horseshoe are unchanged by rotations within a group,
    and only those are symmetries of the penalised models. ``"canonical"`` (the default)
    writes each group's columns :math:`A_g` lower trapezoidal with a positive diagonal (the
    whole of :math:`A` with ``correlation=None``, where every rotation is free;
    :func:`probdyn.algorithms.canonical.block_lq`), which removes those rotations; the
    rotation between groups stays free for the penalty or prior to decide. ``"redundant"``
    keeps :math:`A` free. A canonical draw is a redundant one; :meth:`canonical_form` maps
    back. With ``bandwidth="learned"`` and recorded activity the scale is a symmetry too
    (:math:`A \to cA`, :math:`B, b, s \to B/c, b/c, s/c`), which neither form removes.

    ============  ==============================  ==========================================
    site          shape                           default prior
    ============  ==============================  ==========================================
    ``A``         (N, K)                          Normal(0, 1/sqrt(K)); canonical: each
                                                  group lower trapezoidal
    ``a``         (N,)                            Normal(0, 1)
    ``B``         (K, N)                          Normal(0, 1/sqrt(N))
    ``b``         (K,)                            Normal(0, 1)
    ``sigma``     (N,)                            HalfNormal(1)
    ``s``         ()                              HalfNormal(1) (``bandwidth="learned"``)
    ``M_raw``     (K, K)                          Normal(0, 1) (``"prior"``, replaces ``B``)
    ``R``         (K, N)                          Normal(0, 1/sqrt(N)) (``"prior"``)
    ``tau``       ()                              HalfCauchy(tau_scale) (``"prior"``, G > 1)
    ``lam``       (cross entries,)                HalfCauchy(1) (``"prior"``, G > 1)
    ``latents``   (trial, transition, K)          the transition above (``decoder="relu"``)
    ============  ==============================  ==========================================

    **Spike counts** (``observation="poisson"``): the activity is latent, a Markov path in the
    latents (:mod:`probdyn.state_space`),

    .. math::
        z_0 \sim N(0, I),\qquad z_t \mid z_{t-1} \sim N\big(B\phi(Az_{t-1} + a) + b,\
        s^2 I\big),\qquad y_t \sim \mathrm{Poisson}\big(\exp(A z_t + a)\big),

    the log rates being the activity; the path is sampled (``marginal="sample"``, site
    ``latent_noise``) or filtered (``"particle"``), :math:`s` is learned unless a number is
    given, and ``correlation`` is ``"prior"`` or None (the penalties are defined on recorded
    activity).

    As dynamics this is a map on the latents, :math:`F(z) = B\phi(Az + a) + b` (the noise-free
    network seen through its low-rank subspace); :meth:`emission_mean` is :math:`Az + a` (its
    exponential, the rate per bin, for spike counts).
    Recordings must be complete (each bin is the next one's input): NaN bins are refused; leave
    bins out of the fit with ``fit_bins`` instead.
    """

    kind: ClassVar[str] = "map"
    site_dims: ClassVar[dict[str, list[str]]] = {
        "A": ["neuron", "latent"],
        "a": ["neuron"],
        "B": ["latent", "neuron_from"],
        "b": ["latent"],
        "sigma": ["neuron"],
        "M_raw": ["latent", "latent_from"],
        "R": ["latent", "neuron_from"],
        "lam": ["cross_entry"],
        "latents": ["trial", "transition", "latent"],
    }
    num_neurons: Count
    num_groups: Count
    group_rank: Count
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    decoder: Literal["linear", "relu"] = "linear"
    correlation: Literal["pc", "block", "prior"] | None = "pc"
    objective: Literal["marginal", "vae"] = "marginal"
    beta: NonNegative = 1.0
    tau_scale: Positive = 0.1
    bandwidth: Positive | Literal["learned"] | None = None
    observation: Literal["gaussian", "poisson"] = "gaussian"
    marginal: str | None = None
    num_particles: Count = 64
    parameterisation: Literal["canonical", "redundant"] = "canonical"
    priors: Mapping[str, dist.Distribution] | None = None

    def _check_hyperparameters(self):
        if self.parameterisation == "canonical":
            require_trapezoidal_prior(
                self.priors,
                "A",
                "FacRNN",
                f"LowerTrapezoidalNormal(num_neurons, latent_dim, scale, "
                f"blocks={self.rotation_blocks}): each group's columns",
            )
        if self.observation == "poisson" and self.correlation in ("pc", "block"):
            raise PriorError(
                f"FacRNN correlation={self.correlation!r} penalises the codes of recorded "
                "activity; with observation='poisson' the activity is latent: use "
                "correlation='prior' or None"
            )
        if self.objective == "vae" and (self.observation, self.decoder) != ("gaussian", "linear"):
            raise PriorError(
                "FacRNN objective='vae' is the seed's bound for recorded activity read through "
                "the linear decoder: observation='gaussian', decoder='linear'"
            )
        if self.observation == "poisson" and self.decoder != "linear":
            raise PriorError("FacRNN observation='poisson' reads log rates: decoder='linear'")
        if self.marginal is None:
            exact = self.observation == "gaussian" and self.decoder == "linear"
            default = "exact" if exact else "sample"
            object.__setattr__(self, "marginal", default)
        if self.correlation == "prior" and self.num_neurons < self.latent_dim:
            raise PriorError(
                f"FacRNN correlation='prior' needs num_neurons >= num_groups * group_rank; got "
                f"{self.num_neurons} < {self.latent_dim}"
            )

    @property
    def latent_dim(self) -> int:
        """:math:`K = GH`."""
        return self.num_groups * self.group_rank

    def marginals(self) -> dict[str, str | None]:
        """Spike counts: sampled or filtered paths. Activity: each transition's latent."""
        if self.observation == "poisson":
            return super().marginals()
        observed = "the activity is recorded, so each latent depends on observed bins only"
        linear = self.decoder == "linear"
        return super().marginals() | {
            "exact": None if linear else "decoder='relu' has no closed form",
            "sample": "the linear decoder integrates each latent exactly" if linear else None,
            "particle": f"{observed}: there is no latent path to filter",
        }

    @property
    def _learned_bandwidth(self) -> bool:
        """Whether :math:`s` is a site (``"learned"``, or unset with spike counts)."""
        return self.bandwidth == "learned" or (
            self.bandwidth is None and self.observation == "poisson"
        )

    @property
    def rotation_blocks(self) -> int:
        """Column blocks of A whose rotations are free: the groups, or one without a penalty."""
        return 1 if self.correlation is None else self.num_groups

    @property
    def groups(self) -> np.ndarray:
        """The group of each latent dimension: (0,)*H + (1,)*H + ..."""
        return np.repeat(np.arange(self.num_groups), self.group_rank)

    @property
    def emission_dim(self) -> int:
        """The neurons: the activity is both the input and the observation."""
        return self.num_neurons

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Loadings and biases, observation noise, and the bandwidth when learned."""
        K, N = self.latent_dim, emission_dim
        if self.parameterisation == "canonical":
            loadings = LowerTrapezoidalNormal(N, K, 1 / math.sqrt(K), self.rotation_blocks)
        else:
            loadings = dist.Normal(jnp.zeros((N, K)), 1 / math.sqrt(K))
        priors = {
            "A": loadings,
            "a": dist.Normal(jnp.zeros(N), 1.0),
            "B": dist.Normal(jnp.zeros((K, N)), 1 / math.sqrt(N)),
            "b": dist.Normal(jnp.zeros(K), 1.0),
        }
        if self.observation == "gaussian":
            priors["sigma"] = dist.HalfNormal(jnp.ones(N))
        if self.correlation == "prior":
            del priors["B"]
            priors["M_raw"] = dist.Normal(jnp.zeros((K, K)), 1.0)
            priors["R"] = dist.Normal(jnp.zeros((K, N)), 1 / math.sqrt(N))
            num_cross = int(self._cross_mask().sum())
            if num_cross:
                priors["tau"] = dist.HalfCauchy(self.tau_scale)
                priors["lam"] = dist.HalfCauchy(jnp.ones(num_cross))
        if self._learned_bandwidth:
            priors["s"] = dist.HalfNormal(1.0)
        return priors

    def prepare(self, ds: xr.Dataset) -> ModelData:
        """As every model, but a missing bin is refused (it would be the next bin's input)."""
        missing = np.isnan(np.asarray(ds["y"].values, dtype=float)) if "y" in ds else None
        if missing is not None and missing.any():
            first = np.argwhere(missing)[0]
            raise DataError(
                f"y[trial={first[0]}, time={first[1]}, neuron={first[2]}] is NaN: FacRNN reads "
                "each bin as the next bin's input, so recordings must be complete; drop or "
                "impute those trials, or leave bins out of the fit with fit_bins"
            )
        return super().prepare(ds)

    # -- dynamics ---------------------------------------------------------------------------
    def _cross_mask(self) -> np.ndarray:
        """(K, K) True where row and column dimensions lie in different groups."""
        return self.groups[:, None] != self.groups[None, :]

    def read_in(self, params: Mapping[str, Array]) -> Array:
        """:math:`B`: the site itself, or built from the coupling under ``"prior"``."""
        if "B" in params:
            return params["B"]
        A, M = jnp.asarray(params["A"]), jnp.asarray(params["M_raw"])
        if "lam" in params:
            rows, cols = np.nonzero(self._cross_mask())
            M = M.at[rows, cols].set(M[rows, cols] * params["tau"] * params["lam"])
        pseudo_inverse = jnp.linalg.solve(A.T @ A, A.T)
        return M @ pseudo_inverse + params["R"] @ (jnp.eye(A.shape[0]) - A @ pseudo_inverse)

    def coupling(self, params: Mapping[str, Array]) -> Array:
        """The latent coupling :math:`M = BA` (K, K) of the linearised dynamics."""
        return self.read_in(params) @ params["A"]

    def cross_coupling(self, params: Mapping[str, Array]) -> Array:
        r""":math:`\|M_\text{cross}\|_F / \|M\|_F` of the latent coupling :math:`M = BA`."""
        M = self.coupling(params)
        return jnp.sqrt(jnp.sum(jnp.where(self._cross_mask(), M**2, 0.0)) / jnp.sum(M**2))

    def canonical_form(self, params: Mapping[str, Array]) -> dict[str, np.ndarray]:
        r"""Draws (any leading axes) with free :math:`A` in the canonical form.

        :math:`A = LU` with :math:`U` block-diagonal orthogonal
        (:func:`probdyn.algorithms.canonical.block_lq`); the latents turn with it:
        :math:`A \to L`, :math:`B \to UB`, :math:`b \to Ub`, latent paths and noise
        :math:`\to Uz`, and under ``correlation="prior"`` :math:`R \to UR` and the coupling
        :math:`M \to UMU^\top` (its cross entries divided by the horseshoe's
        :math:`\tau\lambda`, which are kept).
        """
        p = {name: jnp.asarray(value) for name, value in params.items()}
        L, U = block_lq(p["A"], self.rotation_blocks)
        if self.correlation == "prior":
            M = U @ self.coupling(p) @ jnp.swapaxes(U, -1, -2)
            if "lam" in p:
                rows, cols = np.nonzero(self._cross_mask())
                shrink = p["tau"][..., None] * p["lam"]
                M = M.at[..., rows, cols].set(M[..., rows, cols] / shrink)
            p["M_raw"], p["R"] = M, U @ p["R"]
        if "B" in p:
            p["B"] = U @ p["B"]
        p["A"], p["b"] = L, jnp.einsum("...ij,...j->...i", U, p["b"])
        for path in ("latents", "latent_noise"):
            if path in p:
                turn = U.reshape(*U.shape[:-2], *(1,) * (p[path].ndim - U.ndim), *U.shape[-2:])
                p[path] = jnp.einsum("...ij,...j->...i", turn, p[path])
        return {name: np.asarray(value) for name, value in p.items()}

    def codes(self, params: Mapping[str, Array], activity: Array) -> Array:
        r""":math:`\mu_t = B\phi(x_{t-1}) + b` for activity (..., N): the latents it drives."""
        B = self.read_in(params)
        return NONLINEARITIES[self.nonlinearity](activity) @ B.T + params["b"]

    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r""":math:`F(z) = B\phi(Az + a) + b` (``u`` is ignored: no inputs)."""
        return self.codes(params, self.activity(params, x))

    def activity(self, params: Mapping[str, Array], x: Array) -> Array:
        r""":math:`Az + a`, or :math:`\mathrm{ReLU}(Az + a)` for the ReLU decoder."""
        mean = x @ params["A"].T + params["a"]
        return jax.nn.relu(mean) if self.decoder == "relu" else mean

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        r"""The activity :math:`Az + a` (its exponential, the rate per bin, for spike counts)."""
        activity = self.activity(params, x)
        return jnp.exp(activity) if self.observation == "poisson" else activity

    # -- the state-space statement (spike counts) -----------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int]:
        """One latent kick per bin."""
        return 1, self.latent_dim

    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        r""":math:`z_0 = \xi_0 \sim N(0, I)`."""
        return noise

    def transition(self, params: Mapping[str, Array], dt: float):
        r""":math:`z_t = B\phi(Az_{t-1} + a) + b + s\,\xi_t`."""
        scale = self._bandwidth(params, None)

        def advance(x, noise, u):
            return self.vector_field(params, x) + scale * noise[0]

        return advance

    def emission(self, params: Mapping[str, Array], x: Array) -> dist.Distribution:
        r""":math:`\mathrm{Poisson}(\exp(Az + a))`."""
        return dist.Poisson(self.emission_mean(params, x))

    def derived_sites(self, params: dict[str, Array]) -> dict[str, Array]:
        """Records :math:`B` (built under ``"prior"``) and the cross-group coupling."""
        if self.correlation == "prior":
            params["B"] = numpyro.deterministic("B", self.read_in(params))
        numpyro.deterministic("cross_coupling", self.cross_coupling(params))
        return params

    def connectivity(self, params: Mapping[str, Array]) -> tuple[Array, Array]:
        r""":math:`J = AB` (N, N) and the groups' :math:`A_g B_g` (G, N, N)."""
        A = params["A"].reshape(-1, self.num_groups, self.group_rank)
        B = self.read_in(params).reshape(self.num_groups, self.group_rank, -1)
        sub = jnp.einsum("ngh,ghm->gnm", A, B)
        return sub.sum(0), sub

    def unmixed_start(self, params: Mapping[str, Array], activity, *, seed: int = 0) -> dict:
        r"""Start values for a penalised fit: a plain fit's latents, unmixed and grouped.

        ``params`` are a fit of the same network without a penalty (``correlation=None``) and
        ``activity`` (..., N) the bins whose codes :math:`\mu = B\phi(x) + b` to unmix. The
        codes are unmixed by FastICA, :math:`u = U(\mu - m)`, the components split into the
        model's groups by least partial correlation, and the network rewritten in those
        coordinates, which leaves its connectivity and predicted activity unchanged (the latent
        noise :math:`s^2AA^\top` is rescaled): :math:`A \to AU^{-1}`, :math:`a \to a + Am`,
        :math:`B \to UB`, :math:`b \to U(b - m)` (components ordered by group). The
        partial-correlation landscape over rotations of the latents has local optima; starting
        the penalised fit from here avoids those a random start can fall in.
        """
        from probdyn.algorithms.independence import fastica, least_dependent_grouping

        codes = np.asarray(self.codes(params, jnp.asarray(activity))).reshape(-1, self.latent_dim)
        sources, unmixing = fastica(codes, seed=seed)
        labels = least_dependent_grouping(sources, self.num_groups)
        unmixing = unmixing[np.argsort(labels, kind="stable")]
        mean = codes.mean(axis=0)
        A, B = np.asarray(params["A"]), np.asarray(self.read_in(params))
        sites = self.default_priors(A.shape[0])
        start = {k: np.asarray(v) for k, v in params.items() if k in sites}
        start |= {
            "A": A @ np.linalg.inv(unmixing),
            "a": np.asarray(params["a"]) + A @ mean,
            "b": unmixing @ (np.asarray(params["b"]) - mean),
        }
        B = unmixing @ B
        if "B" in sites:
            return self._parameterised(start | {"B": B})
        # correlation="prior": the same B through (M, R), M = BA; the horseshoe's local scales
        # start at the cross entries' sizes, so that their raw values start at +-1.
        M, cross = B @ start["A"], self._cross_mask()
        raw = M.copy()
        if "lam" in sites:
            start["tau"] = np.asarray(self.tau_scale)
            start["lam"] = np.maximum(np.abs(M[cross]) / self.tau_scale, 1e-3)
            raw[cross] = M[cross] / (self.tau_scale * start["lam"])
        return self._parameterised(start | {"M_raw": raw, "R": B})

    def _parameterised(self, start: dict) -> dict:
        """A start with free :math:`A` in this model's form."""
        if self.parameterisation == "canonical":
            return self.canonical_form(start)
        return start

    def _bandwidth(self, params: Mapping[str, Array], population: Array) -> Array:
        if self._learned_bandwidth:
            return params["s"]
        if self.bandwidth is None:
            return population ** (-1.0 / (self.latent_dim + 4))
        return jnp.asarray(float(self.bandwidth))

    # -- the program ------------------------------------------------------------------------
    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """Weights, then each trial's transitions; the PC penalty over the minibatch.

        Spike counts go through the state-space program (:mod:`probdyn.state_space`).
        """
        if self.observation == "poisson":
            return super().program(data, batch_size)
        p = self.derived_sites(self.sample_parameters(data))
        if data.observations is None:
            return self._simulate(p, data, batch_size)
        fitted_all = (
            jnp.ones((data.num_trials, data.num_timesteps - 1))
            if data.mask is None
            else data.mask[:, 1:].all(-1).astype(float)
        )
        population = jnp.sum(fitted_all)
        scale = self._bandwidth(p, population)
        with self.trial_plate(data, batch_size) as index:
            x = data.observations if batch_size is None else data.observations[index]
            fitted = fitted_all if batch_size is None else fitted_all[index]
            codes = self.codes(p, x[:, :-1])
            if self.objective == "vae":
                emission = dist.Normal(self.emission_mean(p, codes), p["sigma"]).to_event(1)
                spread = 0.5 * scale**2 * jnp.sum(p["A"] ** 2 / p["sigma"][:, None] ** 2)
                kl = 0.5 * jnp.sum(codes**2 + scale**2 - 1 - 2 * jnp.log(scale), -1)
                numpyro.factor("vae_terms", -jnp.sum(fitted * (spread + kl), -1))  # per trial
            elif self.decoder == "linear":
                emission = dist.LowRankMultivariateNormal(
                    self.emission_mean(p, codes), scale * p["A"], p["sigma"] ** 2
                )
            else:
                z = numpyro.sample("latents", dist.Normal(codes, scale).to_event(2))
                emission = dist.Normal(self.emission_mean(p, z), p["sigma"]).to_event(1)
            if data.mask is not None:
                emission = emission.mask(fitted > 0)
            numpyro.sample("y", emission.to_event(1), obs=x[:, 1:])
        if self.correlation == "pc" and self.beta > 0:
            means = codes.reshape(-1, self.latent_dim)
            noise = jax.random.normal(jax.random.key(0), means.shape, means.dtype)
            pc = partial_correlation(
                means + scale * noise,
                means,
                scale,
                self.groups,
                population=population,
                weights=fitted.reshape(-1),
            )
            numpyro.deterministic("partial_correlation", pc)
            numpyro.factor("pc_penalty", -self.beta * population * pc)
        elif self.correlation == "block" and self.beta > 0:
            cross = self._cross_mask()
            numpyro.factor(
                "block_penalty", -self.beta * population * jnp.sum(cross * self.coupling(p) ** 2)
            )

    def _simulate(self, p: Mapping[str, Array], data: ModelData, batch_size: int | None):
        r"""Prior predictive: the network run from :math:`x_0 \sim N(0, I)` with its noise."""
        T, N, K = data.num_timesteps, data.emission_dim, self.latent_dim
        scale = self._bandwidth(p, jnp.asarray(float(data.num_trials * (T - 1))))
        with self.trial_plate(data, batch_size):
            x0 = numpyro.sample("initial_activity", dist.Normal(jnp.zeros(N), 1.0).to_event(1))
            kicks = numpyro.sample(
                "latent_noise", dist.Normal(jnp.zeros((T - 1, K)), 1.0).to_event(2)
            )
            jitter = numpyro.sample(
                "observation_noise", dist.Normal(jnp.zeros((T - 1, N)), 1.0).to_event(2)
            )

            def advance(x, noise):
                kick, wobble = noise
                x = self.emission_mean(p, self.codes(p, x) + scale * kick) + p["sigma"] * wobble
                return x, x

            def run(start, kick, wobble):
                return jnp.concatenate(
                    [start[None], jax.lax.scan(advance, start, (kick, wobble))[1]]
                )

            numpyro.deterministic("y", jax.vmap(run)(x0, kicks, jitter))
