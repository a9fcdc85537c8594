"""The CronJob's entry point (provision/reporting/nightly.py) without a cluster: its in-cluster kubeconfig, read
back by the kubernetes client, and the history it keeps. Against a lab: tests/reporting/test_lab_run_reports.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client, config

from provision.reporting.nightly import REPO, in_cluster_kubeconfig, prune, run_folders


def test_in_cluster_kubeconfig_reads_the_mounted_token(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok-1")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    path = in_cluster_kubeconfig(tmp_path / "kubeconfig", sa_dir=sa,
                                 env={"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert path is not None and path.stat().st_mode & 0o077 == 0
    assert "tok-1" not in path.read_text()  # the file names the token, the rotating token is read from the mount
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == "https://10.96.0.1:443" and cfg.api_key["BearerToken"] == "Bearer tok-1"
    assert cfg.ssl_ca_cert == str(sa / "ca.crt")
    v6 = in_cluster_kubeconfig(tmp_path / "k6", sa_dir=sa, env={"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert v6 is not None and "https://[fd00::1]:443" in v6.read_text()
    assert in_cluster_kubeconfig(tmp_path / "k", sa_dir=sa, env={}) is None  # not in a pod
    assert in_cluster_kubeconfig(tmp_path / "k", sa_dir=tmp_path / "none", env={"KUBERNETES_SERVICE_HOST": "h"}) is None


def _run(root: Path, name: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "summary.json").write_text(json.dumps({"run_id": name}))
    return root / name


def test_prune_keeps_the_newest_runs_and_the_latest(tmp_path: Path) -> None:
    names = [f"20261{i:03d}T031700Z-audit-{i}" for i in range(6)]
    for n in names:
        _run(tmp_path, n)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "latest").symlink_to(names[0])  # an odd latest (a clock that went back) is never removed
    removed = prune(tmp_path, 3)
    assert [p.name for p in removed] == names[1:3]
    assert [p.name for p in run_folders(tmp_path)] == [names[0], *names[3:]]
    assert (tmp_path / "not-a-run").is_dir()
    with pytest.raises(ValueError, match="at least 1"):
        prune(tmp_path, 0)


def test_entry_point_refuses_keep_zero(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "provision.reporting.nightly", "--reports", str(tmp_path),
                           "--keep", "0"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "--keep must be at least 1" in proc.stderr
