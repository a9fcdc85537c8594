"""Access to the shared real-world fixtures (/work/shared/fixtures) for the observe/* unit tests.

The shared checkout sits next to the repository (``<repo>/../shared``). When it is absent the tests that need
it are skipped with a reason that says so; a fixture missing from a present checkout is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures"
DATA = Path(__file__).resolve().parent / "data"

_ABSENT = f"shared fixtures not available: {FIXTURES} does not exist (no /work/shared checkout next to the repo)"


def fixture_path(relative: str) -> Path:
    """Path of a shared fixture; skips the test when the shared checkout is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(_ABSENT)
    path = FIXTURES / relative
    if not path.is_file():
        pytest.fail(f"shared fixture {relative} is missing from {FIXTURES}")
    return path


def fixture_text(relative: str) -> str:
    return fixture_path(relative).read_text(encoding="utf-8")


def fixture_params(subdir: str, pattern: str) -> list[object]:
    """Parametrize values (paths relative to the fixtures dir) for every file matching ``subdir/pattern``."""
    if not FIXTURES.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=_ABSENT), id="shared-fixtures-absent")]
    paths = sorted((FIXTURES / subdir).glob(pattern))
    return [pytest.param(str(path.relative_to(FIXTURES)), id=path.name) for path in paths]


def data_text(name: str) -> str:
    """A file of tests/unit/data (kept in this repository)."""
    return (DATA / name).read_text(encoding="utf-8")
