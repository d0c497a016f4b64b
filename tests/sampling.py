"""Short NUTS runs for statistical tests, with their diagnostics checked explicitly."""

import warnings

from probdyn.inference import DiagnosticWarning, nuts


def short_nuts(model, data, *, seed: int, num_warmup: int, num_samples: int, num_chains: int = 2):
    """NUTS with no divergence and R-hat below 1.05 asserted.

    Two short chains: R-hat's own sampling noise is about 0.01, so probdyn's warning at 1.01
    (meant for final analyses) fires by chance; these tests state their criterion instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiagnosticWarning)
        result = nuts(
            model,
            data,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            seed=seed,
            progress=False,
        )
    diagnostics = result.diagnostics()
    assert diagnostics["divergences"] == 0 and diagnostics["max_rhat"] < 1.05, diagnostics
    return result
