"""The suite installed from its wheel into a fresh virtualenv outside the repository, with a copy of features/
in a folder of its own: `pytest features --lab --plan` runs there through the `pytest11` entry point.

The project comes only from the wheel (installed with --no-deps). Its third-party dependencies are the
repository virtualenv's own, seen through a path line in a .pth file: the same versions, without downloading
and unpacking some 60 distributions on every run. A path line does not run that folder's own .pth files, so
the repository's editable install (its import finder) stays inactive; the test checks that every project
package is imported from the fresh virtualenv and that the wheel holds the data files the suite reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SOURCES = ("pyproject.toml", "README.md", "gpu_conformance", "provision", "steps", "lab")
PACKAGES = ("gpu_conformance.plugin", "provision", "steps", "lab")
DATA = ("provision/cuda/vector_add.cu", "lab/specs/default.yaml")


def _sh(*cmd: str | Path, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> str:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of its sources (the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name,
                                                                      **({"ignore": ignore} if (REPO / name).is_dir() else {}))
    out = tmp_path_factory.mktemp("dist")
    # No build isolation: the repository's virtualenv has setuptools; isolation would download it each time.
    _sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, src)
    (found,) = out.glob("gpu_node_conformance-*.whl")
    return found


def test_wheel_holds_the_packages_and_their_data(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in DATA:
        assert data in names, f"{data} is not in the wheel: add it to [tool.setuptools.package-data]"
    for pkg in PACKAGES:
        assert pkg.replace(".", "/") + (".py" if "." in pkg else "/__init__.py") in names, f"{pkg} is not in the wheel"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "[pytest11]\ngpu_conformance.plugin = gpu_conformance.plugin" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_suite_plans_against_the_lab_from_any_folder(wheel: Path, lab, tmp_path: Path):
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _sh(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    site = Path(_sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "repo_venv_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = json.loads(_sh(python, "-c", "import importlib, json; print(json.dumps({m: importlib.import_module(m)"
                           f".__file__ for m in {list(PACKAGES)!r}}}))", cwd=tmp_path))
    for module, path in where.items():
        assert Path(path).is_relative_to(site), f"{module} was imported from {path}, not from the wheel in {site}"

    work = tmp_path / "work"
    shutil.copytree(REPO / "features", work / "features", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "PYTHON", "KUBECONFIG"))}
    env["LAB_STATE_DIR"] = str(lab.paths.root)
    res = subprocess.run([python, "-m", "pytest", "features", "--lab", "--plan", "-q", "-p", "no:cacheprovider",
                          "--report-dir", "reports"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "--plan: the changes --provision would make (nothing was changed)" in out, out[-3000:]
    summary = json.loads((work / "reports" / "latest" / "summary.json").read_text())
    assert summary["mode"] == "plan"
    assert summary["gpu_nodes"] == sorted(n["name"] for n in lab.status["nodes"] if n["gpus"]), summary["gpu_nodes"]
    assert summary["results"] and all(r["outcome"] in ("passed", "skipped") for r in summary["results"])
    plan = (work / "reports" / "latest" / "plan.txt").read_text()
    assert "operator-release:" in plan, plan
