"""The operator build names the missing source archive, and a version the lab has no source for."""

from __future__ import annotations

import pytest

from lab import build_operator
from lab.build import BuildError


def test_a_missing_archive_is_named_with_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_UPSTREAM_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(BuildError) as exc:
        build_operator.ensure("v26.3.0")
    assert str(tmp_path / "gpu-operator-v26.3.0.tar.gz") in str(exc.value)
    assert "LAB_UPSTREAM_DIR" in str(exc.value)


def test_an_unknown_version_is_refused():
    with pytest.raises(BuildError, match=r"no operator source for v1\.0\.0"):
        build_operator.ensure("v1.0.0")
