"""Clusters someone else installed (issue 21): the audit observes and reports drift apart from breakage, and one
`--provision` takes the install over; `--rollback` returns to that install, not to an empty cluster.

Two labs: one installed as the original playbooks leave it (tests/suite/playbooks.py), one with the chart's
defaults (`helm install` with only driver.enabled=false)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.suite import playbooks
from tests.suite.runner import run_suite, suite_writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

GPU_NODES = {"gpu-a": "NVIDIA H200", "spark-1": "NVIDIA GB10"}
SPEC = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "spark-1", "gpus": 1, "product": "NVIDIA GB10", "driver": "580.95.05", "compute_cap": "12.1",
     "memory_mib": None, "docker": True, "files": {"/etc/docker/daemon.json": "daemon.json"}},
]}
SNAP_DROPIN = f"{playbooks.SNAP}/etc/containerd/conf.d/99-nvidia.toml"
SPARK_DAEMON_JSON = {"log-driver": "json-file", "data-root": "/var/lib/docker"}


def _lab(tmp_path_factory, name: str):
    from tests.conftest import start_lab

    folder = tmp_path_factory.mktemp(name)
    (folder / "daemon.json").write_text(json.dumps(SPARK_DAEMON_JSON))
    (folder / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    return start_lab(folder / "spec.yaml", folder / "state"), folder


@pytest.fixture(scope="module")
def playbook_lab(tmp_path_factory):
    from lab import cluster

    lab, folder = _lab(tmp_path_factory, "playbooks")
    try:
        playbooks.install_like_playbooks(lab, GPU_NODES, folder)
        yield lab
    finally:
        cluster.down(lab.paths)


# What the audit of the playbooks' install observes, per scenario and node: "ok" = the real state is right and only
# drift fails it; "failed" = the observation fails; None = nothing observed (broken, skipped). spark-1 (Docker) is
# NotReady: the playbooks' toolkit copied Docker's containerd config, whose CRI section has no runc.
PLAYBOOKS_AUDIT = {
    (None, "The discovery ConfigMap describes the GPU Operator"): {"failed"},
    # The real operator says ready when no operand pod reached NotReady spark-1 before its not-ready taint (the
    # DaemonSets then do not count it), notReady [state-dcgm-exporter] when a DCGM pod got there first.
    (None, "ClusterPolicy is ready"): {"ok", "failed"},
    (None, "Every operand runs on every GPU node"): {"failed"},
    (None, "The gpu-operator release is deployed at the expected chart version"): {"ok"},
    (None, "The nvidia RuntimeClass exists"): {"ok"},
    (None, "The operator Deployment is available"): {"ok"},
    (None, "The time-slicing config is valid and wired into ClusterPolicy"): {"failed"},
    ("gpu-a", "The node is Ready"): {"ok"},
    ("gpu-a", "The NVIDIA driver works and is at least the minimum version"): {"ok"},
    ("gpu-a", "The node advertises physical GPUs times replicas"): {"failed"},   # the playbooks' 2 replicas
    ("gpu-a", "containerd's effective configuration has runc as default and nvidia"): {"ok"},
    ("gpu-a", "The runc and nvidia drop-ins are where containerd imports them"): {"ok"},
    ("spark-1", "The node is Ready"): {"failed"},
    ("spark-1", "containerd's effective configuration has runc as default and nvidia"): {"failed"},
    ("spark-1", "Docker knows the nvidia runtime"): {"failed"},   # containerd-restart observes containerd broken
    ("spark-1", "The DCGM exporter reports every GPU of the node"): {None, "failed"},  # its pod never started
}


def _by(run, scenario: str, node: str | None) -> dict:
    found = [r for r in run.results() if r["scenario"] == scenario and r["node"] == node]
    assert found, f"no result for {scenario!r} on {node}: {[r['scenario'] for r in run.results()]}"
    return found[0]


def _release(lab) -> dict:
    rel = json.loads(lab.helm("list", "-n", "gpu-operator", "-o", "json").stdout)[0]
    values = json.loads(lab.helm("get", "values", "gpu-operator", "-n", "gpu-operator", "-o", "json").stdout)
    return {"revision": int(rel["revision"]), "chart": rel["chart"], "values": values}


def _cluster_state(lab) -> dict:
    api = lab.api()
    core = client.CoreV1Api(api)
    cms = {c.metadata.name: c.data for c in core.list_namespaced_config_map("gpu-operator").items
           if c.metadata.name in ("time-slicing-config", "thinkube-service-config")}
    labels = {n: (core.read_node(n).metadata.labels or {}).get(playbooks.CONFIG_LABEL) for n in GPU_NODES}
    cp = client.CustomObjectsApi(api).get_cluster_custom_object("nvidia.com", "v1", "clusterpolicies", "cluster-policy")
    return {"configmaps": cms, "labels": labels, "device_plugin_config": cp["spec"]["devicePlugin"].get("config")}


def _host_files(lab) -> dict[str, dict[str, str | None]]:
    out = {}
    for node in GPU_NODES:
        root = Path(lab.host_root(node))
        out[node] = {p: (root / p).read_text() if (root / p).exists() else None for p in (
            "etc/containerd/conf.d/00-k8s-runc.toml", f"etc/systemd/system/{playbooks.UNIT}", "etc/docker/daemon.json")}
    return out


def test_playbooks_install_audit_plan_provision_audit_rollback(playbook_lab, tmp_path):
    lab = playbook_lab
    before = {"release": _release(lab), "cluster": _cluster_state(lab), "hosts": _host_files(lab)}

    # 1. Audit: every scenario observes; the message leads with the observation, then the drift.
    audit = run_suite(lab, tmp_path / "audit")
    assert audit.rc == 10, audit.output[-3000:]
    ready = _by(audit, "The node is Ready", "gpu-a")
    assert ready["outcome"] == "failed" and ready["observation"] == "ok", ready
    assert ready["message"].startswith("Observed (as desired): node gpu-a is Ready (Ready=True"), ready["message"]
    assert any("nvidia-host-driver-ready.service" in d for d in ready["drift"]), ready["drift"]
    docker = _by(audit, "Docker knows the nvidia runtime", "spark-1")   # its Background: containerd is broken
    assert docker["observation"] == "failed" and docker["message"].startswith("Observed: "), docker
    runtimes = _by(audit, "containerd's effective configuration has runc as default and nvidia", "gpu-a")
    assert runtimes["message"].startswith("Observed"), runtimes["message"]
    assert "containerd's effective runtimes on gpu-a" in runtimes["message"] or runtimes["observation"] == "failed"
    assert any("restart containerd on gpu-a" in d for d in runtimes["drift"]), runtimes["drift"]
    advertised = _by(audit, "The node advertises physical GPUs times replicas", "gpu-a")
    assert advertised["observation"] == "failed", advertised     # 1 GPU x the playbooks' 2 replicas, not 4
    assert "found" in advertised["message"] and advertised["drift"], advertised
    assert all("drift" in r and "observation" in r for r in audit.results())
    seen = {(node, scenario): _by(audit, scenario, node)["observation"] for node, scenario in PLAYBOOKS_AUDIT}
    assert all(seen[k] in want for k, want in PLAYBOOKS_AUDIT.items()), {
        k: (seen[k], want) for k, want in PLAYBOOKS_AUDIT.items() if seen[k] not in want}
    for r in audit.results():
        if r["observation"] == "ok" and r["outcome"] != "passed":
            assert r["outcome"] == "failed" and r["drift"] and "Drift only from the desired state" in r["message"], r
        if r["observation"] == "failed" and r["drift"]:
            assert r["message"].startswith("Observed: ") and "Drift from the desired state" in r["message"], r
    assert [e for e in suite_writes(lab, audit) if e["objectRef"].get("resource") != "pods"] == []

    # 2. --plan lists the adoption: merged values, and each leftover kept or removed.
    plan = run_suite(lab, tmp_path / "plan", "--plan")
    assert plan.rc == 0, plan.output[-3000:]
    text = (plan.run_dir / "plan.txt").read_text()
    for expected in (
            "upgrade helm release gpu-operator/gpu-operator: adopt: ",
            f"toolkit.env RUNTIME_DROP_IN_CONFIG: unset -> '{SNAP_DROPIN}'",
            "toolkit.env RUNTIME_CONFIG_SOURCE: unset -> 'file'",
            "keep helm release gpu-operator/gpu-operator revision 1",
            "keep value toolkit.env CONTAINERD_SET_AS_DEFAULT='true' (no effect while cdi.enabled=true",
            "keep value toolkit.env RUNTIME_DROP_IN_CONFIG_HOST_PATH=",
            "[gpu-a] delete /etc/containerd/conf.d/00-k8s-runc.toml on gpu-a: the playbooks' runc drop-in",
            f"keep [gpu-a] /etc/systemd/system/{playbooks.UNIT} on gpu-a",
            "keep [spark-1] /etc/docker/daemon.json on spark-1: has the nvidia runtime and nothing else",
            "[gpu-a] label node gpu-a label nvidia.com/device-plugin.config: gpu -> unset",
            "[gpu-a] delete /etc/containerd/conf.d/99-nvidia.toml on gpu-a: the previous toolkit configuration's",
            f"restart containerd on gpu-a: after the toolkit writes {SNAP_DROPIN}",
            "keep ConfigMap gpu-operator/time-slicing-config keys ['default', 'dgx-spark', 'gpu']"):
        assert expected in text, f"{expected!r} not in the plan:\n{text}"
    assert "driver.enabled" not in text.split("adopt: ")[1].splitlines()[0], text  # already false: no change

    # 3. One --provision converges it; the audit after it passes.
    prov = run_suite(lab, tmp_path / "provision", "--provision")
    assert prov.rc == 0, prov.output[-5000:]
    after = _release(lab)
    env = {e["name"]: e["value"] for e in after["values"]["toolkit"]["env"]}
    assert env["CONTAINERD_SET_AS_DEFAULT"] == "true" and "RUNTIME_DROP_IN_CONFIG_HOST_PATH" in env, env  # kept
    assert env["RUNTIME_CONFIG_SOURCE"] == "file", env
    assert not (Path(lab.host_root("gpu-a")) / "etc/containerd/conf.d/00-k8s-runc.toml").exists()
    audit2 = run_suite(lab, tmp_path / "audit2")
    assert audit2.rc == 0, "\n".join(f"{r['node']} {r['scenario']}: {r['message']}" for r in audit2.results()
                                      if r["outcome"] != "passed" and r["outcome"] != "skipped")

    # 4. --rollback returns to the playbooks' install.
    back = run_suite(lab, tmp_path / "rollback", "--rollback")
    assert back.rc == 0, back.output[-3000:]
    now = {"release": _release(lab), "cluster": _cluster_state(lab), "hosts": _host_files(lab)}
    assert now["release"]["values"] == before["release"]["values"], now["release"]
    assert now["release"]["chart"] == before["release"]["chart"]
    assert now["cluster"] == before["cluster"]
    assert now["hosts"] == before["hosts"]


@pytest.fixture(scope="module")
def defaults_lab(tmp_path_factory):
    from lab import cluster

    lab, _ = _lab(tmp_path_factory, "defaults")
    try:
        lab.install_operator()   # helm install with only driver.enabled=false
        yield lab
    finally:
        cluster.down(lab.paths)


def test_chart_defaults_install_is_adopted_in_one_run_and_rolled_back_to(defaults_lab, tmp_path):
    lab = defaults_lab
    before = {"release": _release(lab), "labels": _cluster_state(lab)["labels"]}

    audit = run_suite(lab, tmp_path / "audit")
    assert audit.rc == 10, audit.output[-3000:]
    ready = _by(audit, "The node is Ready", "spark-1")
    assert ready["observation"] == "ok" and ready["drift"], ready           # nothing broken: drift only
    runtimes = _by(audit, "containerd's effective configuration has runc as default and nvidia", "gpu-a")
    assert runtimes["observation"] == "failed", runtimes                    # the chart's defaults miss k8s-snap's paths
    assert runtimes["message"].startswith("Observed: ") and "no nvidia runtime" in runtimes["message"], runtimes
    assert runtimes["message"].index("no nvidia runtime") < runtimes["message"].index("Drift from the desired state")

    plan = run_suite(lab, tmp_path / "plan", "--plan")
    assert plan.rc == 0, plan.output[-3000:]
    text = (plan.run_dir / "plan.txt").read_text()
    for expected in ("upgrade helm release gpu-operator/gpu-operator: adopt: toolkit.env CONTAINERD_CONFIG: unset -> ",
                     "keep helm release gpu-operator/gpu-operator revision 1",
                     f"restart containerd on spark-1: after the toolkit writes {SNAP_DROPIN}"):
        assert expected in text, f"{expected!r} not in the plan:\n{text}"
    assert "keep value" not in text, text   # the release has no values of its own beyond the suite's

    prov = run_suite(lab, tmp_path / "provision", "--provision")
    assert prov.rc == 0, prov.output[-5000:]
    audit2 = run_suite(lab, tmp_path / "audit2")
    assert audit2.rc == 0, "\n".join(f"{r['node']} {r['scenario']}: {r['message']}" for r in audit2.results()
                                      if r["outcome"] not in ("passed", "skipped"))

    back = run_suite(lab, tmp_path / "rollback", "--rollback")
    assert back.rc == 0, back.output[-3000:]
    now = _release(lab)
    assert now["values"] == before["release"]["values"] == {"driver": {"enabled": False}}, now
    assert _cluster_state(lab)["labels"] == before["labels"]
    cms = {c.metadata.name for c in lab.core.list_namespaced_config_map("gpu-operator").items}
    assert "time-slicing-config" not in cms and "thinkube-service-config" not in cms, cms
