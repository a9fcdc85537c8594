"""Bad input is refused with an exact message, before the suite touches a cluster or a host. None of these
needs a lab: a run that gets this far fails before it connects. (Bad input that needs a running fleet -
a daemon.json or containerd TOML that does not parse, an unknown chart version, a GPU node that does not
exist, a selector that matches nothing - is in test_fleet.py.)"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.reliability.support import PYTEST, REPO, Run, run_suite

USAGE_ERROR = 4  # pytest's exit code for a usage error: the run did not start
REPLICAS_FIX = "replicas must be an integer >= 2 (time-slicing shares each GPU between that many pods)"


def _refused(tmp_path: Path, *args: str, timeout: float = 60, settings_error: bool = True) -> Run:
    """The run stops with a usage error; one refused by its settings stops before it even makes its folder."""
    r = run_suite(None, *args, report_dir=tmp_path / "reports", timeout=timeout)
    assert r.rc == USAGE_ERROR, r.output[-3000:]
    if settings_error:
        assert not list((tmp_path / "reports").glob("2*-*")), "a run folder was made for a run that was refused"
    return r


def _error_line(r: Run) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.startswith("ERROR: ")]
    assert len(lines) == 1, r.output[-3000:]
    return lines[0].removeprefix("ERROR: ")


@pytest.mark.parametrize(("value", "message"), [
    ("0", f"invalid setting replicas='0': {REPLICAS_FIX}; got '0'"),
    ("1", f"invalid setting replicas='1': {REPLICAS_FIX}; got '1'"),
    ("-1", f"invalid setting replicas='-1': {REPLICAS_FIX}; got '-1'"),
    ("four", f"invalid setting replicas='four': {REPLICAS_FIX}; got 'four'"),
    (str(10**9), "invalid setting replicas='1000000000': replicas must be at most 1024 (each replica is one pod "
                 "slot on one GPU, so more is almost certainly a typo); got '1000000000'"),
], ids=["0", "1", "-1", "four", "1e9"])
def test_bad_replicas_are_refused_before_anything_runs(tmp_path: Path, value: str, message: str) -> None:
    assert _error_line(_refused(tmp_path, "--provision", "--replicas", value)) == message


def test_bad_replicas_in_pyproject_are_refused_too(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.gpu-conformance]\nreplicas = 1000000000\n")
    r = run_suite(None, "--provision", report_dir=tmp_path / "reports", cwd=tmp_path)
    assert r.rc == USAGE_ERROR
    assert _error_line(r) == ("invalid setting replicas=1000000000: replicas must be at most 1024 (each replica is one "
                              "pod slot on one GPU, so more is almost certainly a typo); got 1000000000")


def test_unknown_kubeconfig_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    assert _error_line(_refused(tmp_path, "--kubeconfig", str(missing))) == (
        f"invalid setting kubeconfig='{missing}': no such file; pass --kubeconfig PATH or set KUBECONFIG")


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "someone", "user": {"token": "not-a-real-token-0123456789"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "someone"}}],
    }))
    return path


def test_unknown_context(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443")
    assert _error_line(_refused(tmp_path, "--kubeconfig", str(kc), "--context", "prod-east", settings_error=False)) == (
        "invalid setting context='prod-east': the kubeconfig has no such context (list them with "
        "`kubectl config get-contexts`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung apiserver or a dead load balancer)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(timeout=2)
    for c in held:
        c.close()
    srv.close()


@pytest.mark.parametrize("kind", ["refused", "never-answers"])
def test_unreachable_apiserver_is_a_clear_and_quick_error(tmp_path: Path, kind: str, request) -> None:
    port = _free_port() if kind == "refused" else request.getfixturevalue("silent_server")
    server = f"https://127.0.0.1:{port}"
    kc = _kubeconfig(tmp_path / "kubeconfig", server)
    t0 = time.monotonic()
    line = _error_line(_refused(tmp_path, "--kubeconfig", str(kc), settings_error=False))
    elapsed = time.monotonic() - t0
    assert line.startswith(f"cannot reach the Kubernetes API at {server}: ")
    assert line.endswith("; check the kubeconfig's server address, that the cluster is up, and your network/VPN")
    assert ("Connection refused" if kind == "refused" else "Read timed out") in line, line
    assert elapsed < 20, f"{kind}: {elapsed:.1f}s is a hang, not an error"  # a bound, not a benchmark


@pytest.mark.parametrize("name", [
    "gpu-a;touch {canary}", "gpu-a && touch {canary}", "$(touch {canary})", "`touch {canary}`",
    "gpu-a|touch {canary}", "gpu-a\ntouch {canary}", "../../etc/passwd", "GPU-A",
])
def test_node_names_with_shell_metacharacters_are_refused_before_any_command(tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    value = name.format(canary=canary)
    line = _error_line(_refused(tmp_path, "--gpu-nodes", value))
    assert line == (f"invalid setting gpu_nodes={value!r}: a node name must be a DNS-1123 subdomain: lowercase letters, "
                    "digits, '-' and '.', starting and ending with a letter or digit (shell metacharacters are never "
                    "accepted)")
    assert not canary.exists(), "a command ran"


def test_node_names_with_metacharacters_in_expected_gpus_are_refused(tmp_path: Path) -> None:
    line = _error_line(_refused(tmp_path, "--expected-gpus", "gpu-a;reboot=1"))
    assert line.startswith("invalid setting expected_gpus='gpu-a;reboot': a node name must be a DNS-1123 subdomain")


@pytest.mark.parametrize("version", ["26.3.0", "v26.3", "latest", "v26.3.0-rc1;x"])
def test_an_invalid_chart_version_is_refused(tmp_path: Path, version: str) -> None:
    assert _error_line(_refused(tmp_path, "--provision", "--chart-version", version)) == (
        f"invalid setting chart_version={version!r}: GPU Operator chart versions look like v26.3.0")


@pytest.mark.parametrize(("suffix", "text", "detail"), [
    ("yml", "all:\n  hosts:\n    gpu-a: {ansible_host: 10.0.0.1\n  children: [\n",
     "YAML parsing failed: While parsing a flow mapping did not find expected ',' or '}'."),
    ("ini", "[gpus\ngpu-a ansible_host=\n", "ini: Failed to parse inventory: "),
])
def test_an_inventory_that_does_not_parse_is_refused_up_front(tmp_path: Path, suffix: str, text: str,
                                                                detail: str) -> None:
    inv = tmp_path / f"inventory.{suffix}"
    inv.write_text(text)
    line = _error_line(_refused(tmp_path, "--ansible-inventory", str(inv)))
    assert line.startswith(f"inventory {inv} does not parse: "), line
    assert detail in line, line
    # The same file named in pyproject.toml (a team's pinned settings) is refused the same way.
    (tmp_path / "pyproject.toml").write_text(f'[tool.gpu-conformance]\nansible_inventory = "{inv}"\n'
                                             'host_backend = "ansible"\n')
    r = run_suite(None, report_dir=tmp_path / "pyproject-reports", cwd=tmp_path)
    assert r.rc == USAGE_ERROR
    line = _error_line(r)
    assert line.startswith(f"invalid setting ansible_inventory='{inv}': inventory {inv} does not parse: "), line
    assert detail in line and line.endswith("; fix the file"), line


def test_a_feature_file_with_an_unknown_step_names_the_step(tmp_path: Path) -> None:
    """A typo in a Given step of a new feature file: pytest-bdd's StepDefinitionNotFoundError names the step,
    its line, scenario and feature; the scenario fails, nothing else is attempted for it."""
    import subprocess

    features = tmp_path / "features"
    features.mkdir()
    (features / "typo.feature").write_text(
        "Feature: A feature with a typo in a step\n"
        "  Scenario: The operator is installed\n"
        "    Given the GPU Operator is instaled\n"
        "    Then the Helm release is deployed at the expected chart version\n")
    (features / "test_typo.py").write_text(
        "from pytest_bdd import scenarios\n\nfrom steps.given import *  # noqa: F403\n"
        "from steps.then import *  # noqa: F403\n\nscenarios('.')\n")
    # Without a cluster to talk to: the installed plugin would stop first at "no kubeconfig" (a usage error,
    # as it should for a real run); this test is about pytest-bdd's message for the typo itself.
    res = subprocess.run([str(PYTEST), str(features), "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "-p", "no:gpu_conformance.plugin"],
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout[-3000:]
    assert ('pytest_bdd.exceptions.StepDefinitionNotFoundError: Step definition is not found: Given "the GPU Operator '
            f'is instaled". Line 3 in scenario "The operator is installed" in the feature "{features / "typo.feature"}"'
            ) in res.stdout, res.stdout[-3000:]
