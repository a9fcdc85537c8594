"""canonical/k8s-snap#1991 for real, held by real code only: a lab whose GPU Operator was installed with the
original playbooks' values (../shared/reference/original-playbooks.md). The toolkit pod runs the real installer's
containerd setup on each node; the DGX Spark-style node (Docker, GB10) gets a drop-in copied from Docker's
containerd, the snap's real containerd 1.7 refuses its CRI plugin, the node goes NotReady; the audit reports that
node with containerd's own text, the drop-in and the dumped source; the node without Docker passes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.kwok import RUNTIME_DOWN_ANNOTATION
from lab.spec import DEFAULT_SPEC
from tests.suite.playbooks import RUNC_DROPIN  # the playbooks' own runc drop-in
from tests.suite.runner import run_suite

pytestmark = [pytest.mark.lab, pytest.mark.slow]

B = "/var/lib/k8s-containerd/k8s-containerd"
NO_RUNC = 'no corresponding runtime configured in `containerd.runtimes` for `containerd` `default_runtime_name = "runc"'
SCENARIO = "containerd's effective configuration has runc as default and nvidia"
PLAYBOOK_ENV = {"CONTAINERD_CONFIG": f"{B}/etc/containerd/config.toml",
                "CONTAINERD_SOCKET": f"{B}/run/containerd/containerd.sock",
                "CONTAINERD_SET_AS_DEFAULT": "true"}


def _ready(lab, node: str) -> tuple[bool, str]:
    n = lab.core.read_node(node)
    cond = next((c for c in n.status.conditions or [] if c.type == "Ready"), None)
    note = (n.metadata.annotations or {}).get(RUNTIME_DOWN_ANNOTATION, "")
    return (cond is not None and cond.status == "True" and not note), note or (cond.message if cond else "")


@pytest.fixture(scope="module")
def playbook_lab(module_lab_factory):
    spark = {"name": "spark-1", "gpus": 1, "product": "NVIDIA GB10", "driver": "580.95.05", "compute_cap": "12.1",
             "memory_mib": None, "arch": "arm64", "docker": True,
             "files": {"/etc/docker/daemon.json": str(DEFAULT_SPEC.parent / "spark-daemon.json")}}
    lab = module_lab_factory({"nodes": [{"name": "cp-1", "control_plane": True}, {"name": "gpu-a", "gpus": 1}, spark]},
                             "playbook")
    for node in ("gpu-a", "spark-1"):   # the playbooks' k8s install side: the runc drop-in
        f = Path(lab.host_root(node)) / "etc/containerd/conf.d/00-k8s-runc.toml"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(RUNC_DROPIN)
    args: list[str] = []
    for i, (k, v) in enumerate(PLAYBOOK_ENV.items()):
        args += ["--set", f"toolkit.env[{i}].name={k}", "--set-string", f"toolkit.env[{i}].value={v}"]
    lab.helm("repo", "add", "lab", lab.status["chart_repo"], "--force-update")
    lab.helm("upgrade", "--install", "gpu-operator", "lab/gpu-operator", "--version", "v26.3.0", "-n", "gpu-operator",
             "--create-namespace", "--set", "driver.enabled=false", *args)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _ready(lab, "spark-1")[0]:
        time.sleep(0.5)
    return lab


def test_1991_the_spark_node_goes_not_ready_with_containerds_own_error(playbook_lab, tmp_path):
    ready, why = _ready(playbook_lab, "spark-1")
    assert not ready and NO_RUNC in why, why
    assert _ready(playbook_lab, "gpu-a")[0], _ready(playbook_lab, "gpu-a")

    run = run_suite(playbook_lab, tmp_path, "--no-workload")
    spark = {r["scenario"]: r for r in run.results("spark-1")}
    msg = spark[SCENARIO]["message"]
    assert spark[SCENARIO]["outcome"] == "failed", spark[SCENARIO]
    for part in (NO_RUNC, "/etc/containerd/conf.d/99-nvidia.toml", "Docker's /usr/bin/containerd",
                 "asked: the node's containerd"):
        assert part in msg, (part, msg)
    # gpu-a (no Docker): the toolkit fell back to the snap's config file, its containerd runs runc and nvidia.
    # Its containerd is observed as desired; what remains is drift (the suite did not restart it for the drop-in,
    # and the playbooks' drop-in in /etc/containerd/conf.d is still imported) - never containerd's error.
    gpu_a = {r["scenario"]: r for r in run.results("gpu-a")}
    msg_a = gpu_a[SCENARIO]["message"]
    assert NO_RUNC not in msg_a and msg_a.startswith("Observed (as desired):") and "Drift only" in msg_a, msg_a
    assert gpu_a[SCENARIO]["observation"] == "ok" and gpu_a[SCENARIO]["drift"], gpu_a[SCENARIO]
