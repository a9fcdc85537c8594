"""The nightly CI templates (deploy/ci/, shown in docs/nightly.md), checked by real linters: actionlint (with
shellcheck) for the GitHub Actions workflow, GitLab's CI JSON schema (vendored by check-jsonschema) for the
GitLab job. Each linter is also shown to reject a broken copy."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.linters import actionlint_path

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "deploy" / "ci"
GITHUB = CI / "github-actions-nightly.yml"
GITLAB = CI / "gitlab-ci-nightly.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    path = actionlint_path()
    if not path.exists():
        pytest.skip(f"{path} is absent: `make linters` builds it")
    return path


def _actionlint(actionlint: Path, workflow: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(actionlint), "-no-color", str(workflow)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_github_workflow_passes_actionlint(actionlint: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck (Debian package) is needed for actionlint to check run: scripts"
    proc = _actionlint(actionlint, GITHUB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_rejects_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = GITHUB.read_text()
    text = text.replace('echo "rc=$?" >> "$GITHUB_OUTPUT"', "echo rc=$? >> $GITHUB_OUTPUT")  # shellcheck SC2086
    text = text.replace("steps.audit.outputs.rc", "steps.audit.outputs.rc ||")  # a broken expression
    broken.write_text(text)
    proc = _actionlint(actionlint, broken)
    assert proc.returncode == 1
    assert "SC2086" in proc.stdout and "expression" in proc.stdout, proc.stdout


def _gitlab_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.gitlab-ci", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_gitlab_job_is_yaml_and_passes_gitlabs_ci_schema(tmp_path: Path) -> None:
    doc = yaml.safe_load(GITLAB.read_text())
    job = doc["gpu-conformance-nightly"]
    assert job["artifacts"]["reports"]["junit"] == "junit.xml" and job["artifacts"]["when"] == "always"
    assert job["allow_failure"] == {"exit_codes": [11]}
    proc = _gitlab_schema(GITLAB)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yml"
    job["artifacts"]["when"] = "sometimes"
    broken.write_text(yaml.safe_dump(doc))
    proc = _gitlab_schema(broken)
    assert proc.returncode == 1 and "sometimes" in proc.stdout, proc.stdout


def test_docs_show_the_templates_as_they_are() -> None:
    doc = (REPO / "docs" / "nightly.md").read_text()
    for template in (GITHUB, GITLAB):
        assert f"```yaml\n{template.read_text()}```" in doc, f"docs/nightly.md does not hold {template.name} as is"


def _suite_options() -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    return {word.split("=")[0].rstrip(",") for word in proc.stdout.split() if word.startswith("--")}


def test_templates_pass_only_options_the_suite_has() -> None:
    known = _suite_options()
    assert "--fail-on" in known and "--metrics-file" in known  # the help was read
    used = set()
    steps = yaml.safe_load(GITHUB.read_text())["jobs"]["audit"]["steps"]
    scripts = [s["run"] for s in steps if "pytest features/" in s.get("run", "")]
    scripts += [" ".join(yaml.safe_load(GITLAB.read_text())["gpu-conformance-nightly"]["script"])]
    assert len(scripts) == 2
    for script in scripts:
        words = shlex.split(script.replace("\\\n", " "), comments=True)
        start = words.index("features/")
        used |= {w.split("=")[0] for w in words[start:] if w.startswith("--")}
    assert used and used <= known, used - known
    assert {"--no-workload", "--host-backend", "--fail-on", "--junit-xml"} <= used
