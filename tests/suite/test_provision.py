"""`pytest features/ --provision` against a fresh 4-node lab: plan, provision, idempotence, audit, rollback;
bad values fail before any change; a node whose containerd breaks is reverted and reported alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from kubernetes import client

from lab.spec import Fault
from tests.suite.runner import run_suite, suite_writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DAEMON_JSON = {"log-driver": "json-file", "data-root": "/var/lib/docker", "registry-mirrors": ["https://m.example"],
               "runtimes": {"crun": {"path": "/usr/bin/crun"}}, "features": {"buildkit": True}}
SPEC = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "gpu-b", "gpus": 2},
    {"name": "spark-1", "gpus": 1, "product": "NVIDIA GB10", "driver": "580.95.05", "compute_cap": "12.1",
     "memory_mib": None, "docker": True, "files": {"/etc/docker/daemon.json": "daemon.json"}},
]}


def host_snapshot(root: Path) -> dict[str, str]:
    """Every file of a host view (the twin's own bookkeeping under .twin/ excluded)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not rel.startswith(".twin") and not rel.startswith("usr/bin"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def snapshot_diff(before: dict, after: dict) -> list[str]:
    out = []
    for key in before:
        if key == "labels":
            for node in before[key]:
                b, a = set(before[key][node].items()), set(after[key].get(node, {}).items())
                out += [f"{node}: label {k}={v} added" for k, v in sorted(a - b)]
                out += [f"{node}: label {k}={v} removed" for k, v in sorted(b - a)]
        else:
            out += [f"{key}: {x} added" for x in sorted(set(after[key]) - set(before[key]))]
            out += [f"{key}: {x} removed" for x in sorted(set(before[key]) - set(after[key]))]
    return out


def api_snapshot(lab) -> dict:
    api = lab.api()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    labels = {n.metadata.name: {k: v for k, v in (n.metadata.labels or {}).items()} for n in core.list_node().items}
    namespaces = sorted(n.metadata.name for n in core.list_namespace().items)
    cms = sorted(f"{c.metadata.namespace}/{c.metadata.name}" for c in core.list_config_map_for_all_namespaces().items
                 if c.metadata.name != "kube-root-ca.crt")
    ds = sorted(f"{d.metadata.namespace}/{d.metadata.name}" for d in apps.list_daemon_set_for_all_namespaces().items)
    crds = sorted(c.metadata.name for c in client.ApiextensionsV1Api(api).list_custom_resource_definition().items)
    return {"labels": labels, "namespaces": namespaces, "configmaps": cms, "daemonsets": ds, "crds": crds}


@pytest.fixture(scope="module")
def fresh(module_lab_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("spec")
    (folder / "daemon.json").write_text(json.dumps(DAEMON_JSON, indent=2))
    import yaml

    spec = dict(SPEC)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    # start_lab resolves files relative to the spec, so build the lab from this folder's spec.
    from tests.conftest import start_lab

    lab = start_lab(path, folder / "state")
    yield lab
    from lab import cluster

    cluster.down(lab.paths)


def test_plan_provision_idempotence_audit_and_rollback(fresh, tmp_path):
    lab = fresh
    before_api = api_snapshot(lab)
    before_hosts = {n["name"]: host_snapshot(Path(n["host_root"])) for n in lab.status["nodes"]}

    plan = run_suite(lab, tmp_path / "r1", "--plan")
    assert plan.rc == 0, plan.output[-3000:]
    text = (plan.run_dir / "plan.txt").read_text()
    for expected in ("install helm release gpu-operator/gpu-operator", "/etc/docker/daemon.json on spark-1",
                     "note: 00-k8s-runc.toml is not installed", "nvidia-host-driver-ready.service on gpu-b",
                     "RUNTIME_CONFIG_SOURCE=file on spark-1", "RUNTIME_RESTART_MODE, value: none",
                     "ConfigMap gpu-operator/time-slicing-config", "ConfigMap gpu-operator/thinkube-service-config"):
        assert expected in text, f"{expected!r} not in plan:\n{text}"
    assert "00-k8s-runc.toml on gpu-a" not in text      # it never helps with the real containerd (docs/containerd.md)
    assert suite_writes(lab, plan) == [], "a --plan run must not write"
    assert snapshot_diff(before_api, api_snapshot(lab)) == []

    first = run_suite(lab, tmp_path / "r2", "--provision")
    assert first.rc == 0, first.output[-4000:]
    assert first.summary["changes"] > 0
    assert {r["outcome"] for r in first.results()} <= {"passed", "skipped"}
    daemon = json.loads((Path(lab.host_root("spark-1")) / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "runtimeArgs": []}
    for key, value in DAEMON_JSON.items():
        if key != "runtimes":
            assert daemon[key] == value, f"daemon.json lost {key}"
    assert daemon["runtimes"]["crun"] == DAEMON_JSON["runtimes"]["crun"]
    # What --provision applied is what it planned, every change typed; and for the convergers whose plan no
    # earlier apply changes (hosts, then the release), what the --plan run showed: the same typed changes.
    results = {f.stem: json.loads(f.read_text()) for f in (first.run_dir / "converge").glob("*.json")}
    for name, doc in results.items():
        assert doc["applied"] == doc["planned"] and all(c["payload"] for c in doc["applied"]), (name, doc["applied"])
    for name in ("runc-dropin", "docker-runtime", "host-driver", "operator-release"):
        planned = json.loads((plan.run_dir / "converge" / f"{name}.json").read_text())["planned"]
        assert planned and results[name]["applied"] == planned, (name, planned, results[name]["applied"])

    second = run_suite(lab, tmp_path / "r3", "--provision")
    assert second.rc == 0, second.output[-3000:]
    assert second.summary["changes"] == 0, second.summary["convergers"]

    audit = run_suite(lab, tmp_path / "r4")
    assert audit.rc == 0, audit.output[-3000:]
    writes = [e for e in suite_writes(lab, audit) if e["objectRef"].get("resource") != "pods"]
    assert writes == [], [f"{e['verb']} {e['objectRef']}" for e in writes]

    back = run_suite(lab, tmp_path / "r5", "--rollback")
    assert back.rc in (0, 11), back.output[-3000:]
    assert back.summary["changes"] > 0
    assert all(r["outcome"] != "broken" for r in back.results()), back.output[-3000:]
    assert snapshot_diff(before_api, api_snapshot(lab)) == []
    after_hosts = {n["name"]: host_snapshot(Path(n["host_root"])) for n in lab.status["nodes"]}
    changed = [f"{node}:{path}" for node in before_hosts for path in
               sorted(set(before_hosts[node]) | set(after_hosts[node]))
               if before_hosts[node].get(path) != after_hosts[node].get(path)]
    assert changed == [], changed


@pytest.mark.parametrize("args, message", [
    (["--replicas", "0"], "replicas must be an integer >= 2"),
    (["--replicas", "1"], "replicas must be an integer >= 2"),
    (["--replicas", "-1"], "replicas must be an integer >= 2"),
    (["--replicas", "four"], "got 'four'"),
    (["--replicas", str(10**9)], "replicas must be at most 1024"),
    (["--chart-version", "26.3"], "GPU Operator chart versions look like v26.3.0"),
])
def test_bad_values_fail_before_any_change(lab, tmp_path, args, message):
    run = run_suite(lab, tmp_path, "--provision", *args)
    assert run.rc == 4, run.output[-2000:]
    assert message in run.output
    assert suite_writes(lab, run) == []


def test_unknown_chart_version_fails_before_any_change(lab, tmp_path):
    run = run_suite(lab, tmp_path, "--provision", "--chart-version", "v99.1.0")
    assert "unknown GPU Operator chart version v99.1.0" in json.dumps(run.summary) + run.output
    helm_writes = [e for e in suite_writes(lab, run) if e["objectRef"].get("namespace") == "gpu-operator"
                   and e["objectRef"].get("resource") in ("secrets", "deployments", "daemonsets")]
    assert helm_writes == []


def test_containerd_break_reverts_that_node_only(module_lab_factory, tmp_path):
    lab = module_lab_factory({"nodes": [
        {"name": "cp-1", "control_plane": True, "gpus": 0},
        {"name": "gpu-a", "gpus": 1},
        {"name": "gpu-m", "gpus": 1, "faults": [Fault.CONTAINERD_BREAKS]},
        {"name": "gpu-z", "gpus": 1},
    ]}, "breaks")
    run = run_suite(lab, tmp_path, "--provision")
    assert run.rc == 10, run.output[-3000:]
    broken = [r for r in run.results("gpu-m") if r["outcome"] == "failed"]
    assert broken and any("did not come back" in r["message"] and "restored" in r["message"] for r in broken), \
        [r["message"] for r in run.results("gpu-m")]
    # gpu-a came before it and was restarted; gpu-z comes after and was never touched.
    state_a = json.loads((lab.host_root("gpu-a") / ".twin/containerd.json").read_text())
    state_z = json.loads((lab.host_root("gpu-z") / ".twin/containerd.json").read_text())
    state_m = json.loads((lab.host_root("gpu-m") / ".twin/containerd.json").read_text())
    assert "nvidia" in state_a["runtimes"] and state_a["restarts"] == 1
    assert state_z["restarts"] == 0
    assert state_m["running"] and state_m["restarts"] == 2 and "nvidia" not in state_m["runtimes"]
    assert all(r["outcome"] in ("passed", "skipped") for r in run.results("gpu-a")), run.results("gpu-a")
    node = lab.core.read_node("gpu-m")
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def test_first_provisioning_without_workload_waits_for_the_operands(module_lab_factory, tmp_path):
    """Fresh nodes, `--provision --no-workload`: nothing but the suite's own checks gives the operator time, yet
    the operator's scenarios (which run before the containerd and time-slicing ones) pass: the run converges
    everything and waits, watching, for the operand pods and the ClusterPolicy before it verifies them."""
    lab = module_lab_factory({"nodes": [{"name": "cp-1", "control_plane": True, "gpus": 0},
                                        {"name": "gpu-a", "gpus": 1}, {"name": "gpu-b", "gpus": 2}]}, "settle")
    run = run_suite(lab, tmp_path, "--provision", "--no-workload")
    assert run.rc == 0, [(r["node"], r["scenario"], r["outcome"], r["message"][:300]) for r in run.results()
                         if r["outcome"] in ("failed", "broken")] or run.output[-3000:]
    operator = {r["scenario"]: r["outcome"] for r in run.results(None)}
    assert operator["ClusterPolicy is ready"] == "passed" and operator["Every operand runs on every GPU node"] == "passed"
    dcgm = [(r["scenario"], r["outcome"], r["message"][:400]) for r in run.results("gpu-b")
            if r["scenario"] == "The DCGM exporter reports every GPU of the node"]   # (not the MIG feature's)
    assert dcgm and all(outcome == "passed" for _s, outcome, _m in dcgm), dcgm
