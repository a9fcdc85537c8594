"""The suite's exit codes, read by the nightly CI audits (documented in docs/reports.md).

* 0  conformant: no check failed and none was broken (skipped checks are allowed);
* 10 non-conformant: at least one check failed;
* 11 could not check: at least one check broken (provisioning / reachability error) and none failed,
  or no check result at all;
* 2, 3, 4, 5: pytest's own codes (interrupted, internal error, usage error, no tests collected), passed through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONFORMANT = 0
NON_CONFORMANT = 10
COULD_NOT_CHECK = 11

PYTEST_PASSTHROUGH = {
    2: "interrupted (pytest)",
    3: "internal error (pytest)",
    4: "usage error (pytest)",
    5: "no tests collected (pytest)",
}

DESCRIPTIONS = {
    CONFORMANT: "conformant",
    NON_CONFORMANT: "non-conformant",
    COULD_NOT_CHECK: "could not check",
    **PYTEST_PASSTHROUGH,
}


def outcome_counts(summary: Mapping[str, Any]) -> dict[str, int]:
    """Results per outcome; an outcome other than passed / failed / skipped counts as broken."""
    counts = {"passed": 0, "failed": 0, "broken": 0, "skipped": 0}
    for result in summary.get("results") or ():
        outcome = result.get("outcome")
        counts[outcome if outcome in counts else "broken"] += 1
    return counts


def exit_code(summary: Mapping[str, Any]) -> int:
    """0 all conformant, 10 at least one failed, 11 at least one broken and none failed (or nothing checked)."""
    counts = outcome_counts(summary)
    if counts["failed"]:
        return NON_CONFORMANT
    if counts["broken"] or not any(counts.values()):
        return COULD_NOT_CHECK
    return CONFORMANT


def final_exit_code(pytest_exit: int, summary: Mapping[str, Any] | None) -> int:
    """The process exit code: pytest's 2-5 pass through; for 0 / 1 the summary decides.

    Without a summary (the run died before writing one) a pytest 0 / 1 becomes "could not check".
    """
    if int(pytest_exit) in PYTEST_PASSTHROUGH:
        return int(pytest_exit)
    if summary is None:
        return COULD_NOT_CHECK
    return exit_code(summary)


def describe(code: int) -> str:
    return DESCRIPTIONS.get(code, f"unknown exit code {code}")
