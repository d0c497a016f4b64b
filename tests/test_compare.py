"""Model comparison: the table's arithmetic, its warnings, and choosing the generating model."""

import math
import warnings

import numpy as np
import pytest
import xarray as xr

from probdyn import ConfigError
from probdyn.inference import Evidence, MixedEvidenceWarning, compare
from probdyn.models import LDS


def _evidence(value, se, method="smc", bound=False):
    return Evidence(value, se, method, bound, "test", 1.0, 10)


MODELS = {"one": LDS(latent_dim=1), "two": LDS(latent_dim=2), "three": LDS(latent_dim=3)}


def test_bayes_factors_and_model_probabilities_follow_from_the_evidence():
    evidences = {
        "one": _evidence(-10.0, 0.1),
        "two": _evidence(-8.0, 0.2),
        "three": _evidence(-8.5, 0.3),
    }
    table = compare(MODELS, None, seed=0, evidences=evidences).set_index("model")
    assert list(table.index) == ["two", "three", "one"]
    z = {name: math.exp(e.log_evidence) for name, e in evidences.items()}
    for name in MODELS:
        assert table.loc[name, "posterior_probability"] == pytest.approx(z[name] / sum(z.values()))
        assert table.loc[name, "bayes_factor"] == pytest.approx(z[name] / z["two"])
    assert table.loc["one", "delta"] == pytest.approx(-2.0)
    assert table.loc["one", "delta_se"] == pytest.approx(math.hypot(0.1, 0.2))
    assert table.loc["two", "delta_se"] == 0.0
    # Prior model probabilities multiply the evidence.
    weighted = compare(
        MODELS,
        None,
        seed=0,
        evidences=evidences,
        prior_probabilities={"one": 8.0, "two": 1.0, "three": 1.0},
    )
    weighted = weighted.set_index("model")["posterior_probability"]
    total = 8 * z["one"] + z["two"] + z["three"]
    assert weighted["one"] == pytest.approx(8 * z["one"] / total)


def test_mixing_bounds_with_estimates_warns_and_notes_the_rows():
    evidences = {
        "one": _evidence(-10.0, 0.1),
        "two": _evidence(-8.0, 0.2, "iwae", True),
        "three": _evidence(-9.0, 0.1),
    }
    with pytest.warns(MixedEvidenceWarning):
        table = compare(MODELS, None, seed=0, evidences=evidences).set_index("model")
    assert table.loc["two", "note"].startswith("lower bound")
    assert table.loc["one", "note"] == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare(
            MODELS, None, seed=0, evidences={k: _evidence(-1.0, 0.1, "iwae", True) for k in MODELS}
        )


def test_bad_requests_are_named():
    with pytest.raises(ConfigError, match="at least one model"):
        compare({}, None, seed=0)
    with pytest.raises(ConfigError, match="prior_probabilities"):
        compare(
            MODELS,
            None,
            seed=0,
            evidences={k: _evidence(-1.0, 0.1) for k in MODELS},
            prior_probabilities={"one": 1.0},
        )


def _lds_recording(latent_dim: int, seed: int) -> xr.Dataset:
    """3 trials x 40 bins x 4 channels from an LDS with random slow dynamics of this dim."""
    rng = np.random.default_rng(seed)
    if latent_dim == 1:
        A = np.array([[0.9]])
    else:
        angle = rng.uniform(0.2, 0.5)
        A = 0.9 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    C = rng.normal(size=(4, latent_dim))
    x = np.zeros((3, 40, latent_dim))
    x[:, 0] = rng.normal(size=(3, latent_dim))
    for t in range(1, 40):
        x[:, t] = x[:, t - 1] @ A.T + 0.5 * rng.normal(size=(3, latent_dim))
    y = x @ C.T + 0.3 * rng.normal(size=(3, 40, 4))
    return xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 1.0})


@pytest.mark.heavy
def test_evidence_picks_the_generating_latent_dimension():
    # 40 evidence estimates. The IWAE bound (every row a bound of the same kind) costs about
    # 17 s each on 2 cores; tempered SMC about 200 s each with 200 particles (docs/evidence.md),
    # so SMC is for final numbers. About 13 minutes in all: too long for CI, hence heavy.
    candidates = {1: LDS(latent_dim=1), 2: LDS(latent_dim=2)}
    correct = {1: 0, 2: 0}
    for seed in range(10):
        for truth in (1, 2):
            table = compare(
                candidates,
                _lds_recording(truth, seed),
                seed=seed,
                method="iwae",
                svi_steps=1500,
                num_importance=500,
                num_batches=4,
            )
            correct[truth] += int(table["model"].iloc[0] == truth)
    assert correct[1] >= 9 and correct[2] >= 9, correct


def test_evidence_survives_a_netcdf_round_trip(tmp_path):
    original = Evidence(
        log_evidence=-12.5,
        standard_error=0.25,
        method="smc",
        is_bound=False,
        error_source="spread of 4 repeats",
        seconds=3.0,
        likelihood_evaluations=1000,
        diagnostics={"num_tempering_steps": 7},
    )
    original.to_dataset().to_netcdf(tmp_path / "evidence.nc")
    assert Evidence.from_dataset(xr.open_dataset(tmp_path / "evidence.nc")) == original
    with pytest.raises(ConfigError, match="evidence group lacks"):
        Evidence.from_dataset(xr.Dataset({"x": 1.0}))
