r"""Posterior over fixed points of inferred dynamics.

For every posterior draw :math:`\theta^{(s)}` the fixed points solve :math:`g_\theta(x) = 0` with

.. math::
    g_\theta(x) = f_\theta(x, u)\ \text{(flow)}\qquad\text{or}\qquad
    g_\theta(x) = F_\theta(x, u) - x\ \text{(map)},

for a constant input :math:`u` (zero by default). Each draw is searched from many starts (states
on its inferred latent trajectories plus jitter, or points of a box) by Levenberg-Marquardt on
:math:`q(x) = \tfrac12 \lVert g_\theta(x) \rVert^2`:

.. math::
    (J^\top J + \lambda I)\,\delta = -J^\top g,\qquad J = \partial g / \partial x,

with :math:`\lambda` shrunk after a step that lowers :math:`q` and grown after one that does not;
for small :math:`\lambda` this is Newton's method (quadratic convergence near a root), for large
:math:`\lambda` gradient descent on :math:`q` (the fallback far from one). A start counts when
:math:`\lVert g \rVert_\infty` < ``tol``; starts that reach the same point are merged. The solver is
vmapped over draws and starts and compiled once.

At each point the eigenvalues :math:`\lambda_i` of :math:`\partial f / \partial x` (flows) or
:math:`\partial F / \partial x` (maps) give the class. With the growth rate
:math:`\sigma_i = \mathrm{Re}\,\lambda_i` (flows) or :math:`\log|\lambda_i|` (maps) and the
margin ``marginal_tol``: any :math:`|\sigma_i| \le` margin is *marginal* (centre-like); otherwise
all negative is *stable*, all positive *unstable*, mixed signs a *saddle*; stable and unstable
points are *spirals* when an eigenvalue is complex, else *nodes*. Where the field has a kink at
the point (piecewise-linear units at zero input, e.g. the origin of a ReLU network without
biases) the Jacobian says nothing; there the class comes from the growth of perturbations
under the dynamics themselves (:mod:`probdyn.analysis.fixed_points.local`).

Latent coordinates are not identifiable across draws (an invertible map of the latents is
absorbed by the readout), so points of different draws are matched in observation space: the
predicted observation :math:`h_\theta(x^*)` (the model's ``emission_mean``), standardised per
channel. A reference draw (the first with the most common number of points) seeds one cluster
per point; every draw is then assigned to the clusters by an optimal one-to-one assignment
(Hungarian algorithm), and a point farther than its cluster's gate (``match_tol``, widened to
the cluster's own spread across draws where enough draws share it) opens a new one.
For the latent view each point is carried into the reference draw's coordinates through the
readouts: :math:`\tilde x = \arg\min_{x'} \lVert h_{\text{ref}}(x') - h_\theta(x^*) \rVert^2`
(the same Levenberg-Marquardt solver; for a linear readout this is the affine map
:math:`C_{\text{ref}}^{+}(C_\theta x^* + d_\theta - d_{\text{ref}})`).
"""

from probdyn.analysis.fixed_points.classification import CLASSES, classify
from probdyn.analysis.fixed_points.dynamics import Dynamics, residual
from probdyn.analysis.fixed_points.result import FixedPointPosterior
from probdyn.analysis.fixed_points.search import fixed_points
from probdyn.analysis.fixed_points.solver import levenberg_marquardt

__all__ = [
    "CLASSES",
    "Dynamics",
    "FixedPointPosterior",
    "classify",
    "fixed_points",
    "levenberg_marquardt",
    "residual",
]
