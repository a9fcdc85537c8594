from __future__ import annotations

from typing import Any

import pytest

from provision.reporting.exit_codes import (
    CONFORMANT,
    COULD_NOT_CHECK,
    NON_CONFORMANT,
    describe,
    exit_code,
    final_exit_code,
)

from .conftest import SampleRun


def _s(*outcomes: str) -> dict[str, Any]:
    return {"results": [{"node": "n", "outcome": o} for o in outcomes]}


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        (("passed",), CONFORMANT),
        (("passed", "skipped"), CONFORMANT),
        (("skipped",), CONFORMANT),
        (("passed", "failed"), NON_CONFORMANT),
        (("broken", "failed"), NON_CONFORMANT),
        (("passed", "broken"), COULD_NOT_CHECK),
        (("passed", "unknown"), COULD_NOT_CHECK),
        ((), COULD_NOT_CHECK),
    ],
)
def test_exit_code(outcomes: tuple[str, ...], code: int) -> None:
    assert exit_code(_s(*outcomes)) == code


def test_codes_values_are_the_documented_ones() -> None:
    assert (CONFORMANT, NON_CONFORMANT, COULD_NOT_CHECK) == (0, 10, 11)
    assert describe(10) == "non-conformant" and describe(4) == "usage error (pytest)"


@pytest.mark.parametrize("pytest_code", [2, 3, 4, 5])
def test_pytest_codes_pass_through(pytest_code: int) -> None:
    assert final_exit_code(pytest_code, _s("failed")) == pytest_code


def test_final_exit_code_from_summary() -> None:
    assert final_exit_code(1, _s("passed", "failed")) == NON_CONFORMANT
    assert final_exit_code(1, _s("broken")) == COULD_NOT_CHECK
    assert final_exit_code(0, _s("passed")) == CONFORMANT
    assert final_exit_code(1, None) == COULD_NOT_CHECK


def test_sample_run_is_non_conformant(sample_run: SampleRun) -> None:
    assert exit_code(sample_run.summary) == NON_CONFORMANT
