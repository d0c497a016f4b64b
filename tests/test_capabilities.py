"""Every cell of families x path handling x inference method works, or is refused with its reason."""

import pytest
from capability_cases import EXPECTED, METHODS, recording, rows, run

ROWS = list(rows())


def test_expected_table_lists_exactly_the_allowed_handlings():
    allowed = {(name, marginal) for name, marginal, model, _ in ROWS if model is not None}
    assert allowed == set(EXPECTED)


@pytest.mark.parametrize(
    "name,marginal,reason",
    [(n, m, r) for n, m, model, r in ROWS if model is None],
    ids=lambda value: str(value)[:30],
)
def test_refused_handlings_say_why(name, marginal, reason):
    assert isinstance(reason, str) and len(reason) > 10


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,marginal,model",
    [(n, m, model) for n, m, model, _ in ROWS if model is not None],
    ids=lambda value: value if isinstance(value, str) else "",
)
@pytest.mark.parametrize("method", METHODS)
def test_cell(name, marginal, model, method):
    outcome = run(model, method, recording(model), full_smc=False)
    check(outcome, EXPECTED[(name, marginal)][METHODS.index(method)])


@pytest.mark.heavy
@pytest.mark.parametrize(
    "name,marginal,model",
    [(n, m, model) for n, m, model, _ in ROWS if model is not None],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_smc_cell_end_to_end(name, marginal, model):
    outcome = run(model, "smc evidence", recording(model))
    check(outcome, EXPECTED[(name, marginal)][METHODS.index("smc evidence")])


def check(outcome: str, expected: str) -> None:
    if expected == "works":
        assert outcome == "works", outcome
    else:
        assert expected in outcome, outcome
