"""Long steps show progress: SMC evidence and the fixed-point search; progress=False hides it."""

import numpy as np
from lds_cases import ou_dataset, ou_model

from probdyn.analysis.fixed_points import fixed_points
from probdyn.inference import log_evidence
from probdyn.models import LDS


def test_smc_shows_its_runs_and_tempering_and_stays_quiet_when_asked(capsys):
    ds = ou_dataset(seed=11)
    options = dict(method="smc", seed=0, num_particles=64, num_repeats=2, num_mcmc_steps=2)
    shown = log_evidence(ou_model(), ds, progress=True, **options)
    err = capsys.readouterr().err
    assert "smc" in err and "2/2" in err and "tempering 1 after" in err, err
    quiet = log_evidence(ou_model(), ds, progress=False, **options)
    assert capsys.readouterr().err == ""
    assert quiet.log_evidence == shown.log_evidence  # the bar changes nothing computed


def test_fixed_point_search_shows_its_draws_and_stays_quiet_when_asked(capsys):
    """A bar over 60 posterior draws of an LDS moves in chunks of at most a tenth of them."""
    rng = np.random.default_rng(0)
    draws = {
        "A": np.broadcast_to(0.5 * np.eye(2), (60, 2, 2)),
        "b": 0.1 * rng.normal(size=(60, 2)),
        "C": np.broadcast_to(rng.normal(size=(3, 2)), (60, 3, 2)),
        "d": np.zeros((60, 3)),
    }
    model = LDS(latent_dim=2)
    shown = fixed_points(model, draws, num_starts=8, progress=True)
    err = capsys.readouterr().err
    assert "fixed-point search" in err and "0/60" in err and "10/60" in err, err  # it moves
    quiet = fixed_points(model, draws, num_starts=8, progress=False)
    assert capsys.readouterr().err == ""
    assert shown.dataset.sizes["fixed_point"] == quiet.dataset.sizes["fixed_point"] == 1
