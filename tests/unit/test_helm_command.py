"""Which helm the suite runs: the setting, else (a bare name not on PATH) the one next to the running Python."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from provision.helm import helm_command


@pytest.fixture
def python_beside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return bin_dir


def test_bare_helm_not_on_path_is_found_next_to_python(python_beside: Path):
    helm = python_beside / "helm"
    helm.write_text("#!/bin/sh\n")
    helm.chmod(0o755)
    assert helm_command("helm") == str(helm)


def test_nothing_beside_keeps_the_setting_for_the_clear_error(python_beside: Path):
    (python_beside / "helm").write_text("not executable")
    assert helm_command("helm") == "helm"


def test_a_path_or_a_helm_on_path_is_used_as_given(python_beside: Path, tmp_path: Path, monkeypatch):
    assert helm_command("/opt/helm/bin/helm") == "/opt/helm/bin/helm"
    on_path = tmp_path / "on-path"
    on_path.mkdir()
    (on_path / "helm").write_text("#!/bin/sh\n")
    (on_path / "helm").chmod(0o755)
    (python_beside / "helm").write_text("#!/bin/sh\n")
    (python_beside / "helm").chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    assert helm_command("helm") == "helm"   # PATH first: the user's own helm wins over the venv's link
