"""Short NUTS runs for statistical tests, with their diagnostics checked explicitly."""

import warnings

from probdyn.inference import DiagnosticWarning, nuts, svi


def short_nuts(
    model,
    data,
    *,
    seed: int,
    num_warmup: int,
    num_samples: int,
    num_chains: int = 2,
    warm_start: int = 0,
):
    """NUTS with no divergence and R-hat below 1.05 asserted.

    Two short chains: R-hat's own sampling noise is about 0.01, so probdyn's warning at 1.01
    (meant for final analyses) fires by chance; these tests state their criterion instead.
    ``warm_start``: SVI steps of a full-rank guide that starts the chains and gives their
    dense mass matrix (0: NUTS from the prior's median, adapting its own diagonal mass).
    """
    init = None
    if warm_start:
        init = svi(model, data, num_steps=warm_start, seed=seed, guide="mvn", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiagnosticWarning)
        result = nuts(
            model,
            data,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            seed=seed,
            init=init,
            dense_mass=init is not None,
            progress=False,
        )
    diagnostics = result.diagnostics()
    assert diagnostics["divergences"] == 0 and diagnostics["max_rhat"] < 1.05, diagnostics
    return result
