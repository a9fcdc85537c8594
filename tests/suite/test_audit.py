"""`pytest features/` (the read-only audit) against labs: every twin fault fails or breaks exactly its own
node's scenarios with a useful message while the other nodes pass; zero GPU nodes fails; a named node that
does not exist fails; the audit writes nothing but its test pods; serial and xdist runs agree."""

from __future__ import annotations

import json

import pytest

from gpu_conformance.xdist_nodes import partition
from lab.spec import Fault
from tests.suite.runner import run_suite, suite_writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# node -> (faults, text that must appear in a failed/broken message of that node)
FAULTY = {
    "f-driver": ([Fault.DRIVER_BROKEN], "NVIDIA-SMI has failed"),
    "f-dcgm": ([Fault.DCGM_DOWN], "DCGM exporter"),
    "f-missing": ([Fault.GPU_MISSING], "No devices were found"),
    "f-plugin": ([Fault.DEVICE_PLUGIN_CRASH], "allocatable 0 -> 4"),
    "f-vector": ([Fault.VECTORADD_FAILS], "Failed to allocate device vector A"),
    "zz-breaks": ([Fault.CONTAINERD_BREAKS], 'default_runtime_name = "runc"'),
    "f-xid": ([Fault.XID_79], "DCGM exporter DCGM_FI_DEV_XID_ERRORS=79"),  # GPU health, through the exporter too
}
HEALTHY = ("ok-1", "f-slow")


@pytest.fixture(scope="module")
def faulty(module_lab_factory, tmp_path_factory):
    nodes: list[dict] = [{"name": "cp-1", "control_plane": True}, {"name": "ok-1", "gpus": 1},
                         {"name": "f-slow", "gpus": 2, "faults": [Fault.SLOW_ADVERTISE]}]
    nodes += [{"name": n, "gpus": 1, "faults": f} for n, (f, _) in FAULTY.items()]
    lab = module_lab_factory({"nodes": nodes, "timing": {"slow_advertise_s": 2.0}}, "faulty")
    # zz-breaks sorts last, so the rolling containerd restart reaches every other node before it stops there.
    prov = run_suite(lab, tmp_path_factory.mktemp("prov"), "--provision", "--timeouts", "advertise=20,workload=20")
    assert prov.summary, prov.output[-3000:]
    return lab


def test_faults_fail_exactly_their_nodes_and_the_rest_pass(faulty, tmp_path):
    run = run_suite(faulty, tmp_path, "--timeouts", "workload=20")
    assert run.rc == 10, run.output[-3000:]  # non-conformant
    for node in HEALTHY:
        bad = [(r["scenario"], r["message"][:200]) for r in run.results(node) if r["outcome"] not in ("passed", "skipped")]
        assert not bad, f"{node} should pass: {bad}"
        assert any(r["outcome"] == "passed" for r in run.results(node))
    for node, (_, text) in FAULTY.items():
        results = run.results(node)
        bad = [r for r in results if r["outcome"] in ("failed", "broken")]
        assert bad, f"{node}: expected failures, got {[(r['scenario'], r['outcome']) for r in results]}"
        assert any(text in r["message"] for r in bad), f"{node}: {text!r} not in {[r['message'][:300] for r in bad]}"
        assert all("Fix" in r["message"] or "fix" in r["message"] for r in bad if r["outcome"] == "failed"), \
            [r["message"] for r in bad]
    assert suite_writes(faulty, run) == [] or all(
        e["objectRef"].get("resource") == "pods" and e["objectRef"].get("namespace") == "gpu-conformance"
        for e in suite_writes(faulty, run))


def test_serial_and_xdist_give_identical_results(faulty, tmp_path):
    trips = {k: tmp_path / f"host-trips-{k}.jsonl" for k in ("serial", "xdist")}
    serial = run_suite(faulty, tmp_path / "serial", "--no-workload", env={"GPU_CONFORMANCE_HOST_LOG": str(trips["serial"])})
    parallel = run_suite(faulty, tmp_path / "xdist", "--no-workload", "-n", "2",
                         env={"GPU_CONFORMANCE_HOST_LOG": str(trips["xdist"])})
    assert serial.summary["results"], serial.output[-2000:]

    # one host round trip per GPU node (the gather), serial and with xdist; with xdist each worker gathers exactly
    # the nodes NodeScheduling dealt it (gpu_conformance/xdist_nodes.py), all of whose scenarios it runs
    gpu_nodes = sorted([*FAULTY, *HEALTHY])
    per_node: dict[str, dict[str, int]] = {k: {} for k in trips}
    per_worker: dict[str, set[str]] = {}
    not_gathered: dict[str, list[str]] = {}
    for kind, path in trips.items():
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            for node, n in doc["round_trips"].items():
                per_node[kind][node] = per_node[kind].get(node, 0) + n
                if kind == "xdist" and n:
                    per_worker.setdefault(doc["worker"], set()).add(node)
            if kind == "serial":
                for node, calls in (doc.get("not_gathered") or {}).items():
                    not_gathered.setdefault(node, []).extend(calls)
    assert per_node["serial"] == dict.fromkeys(gpu_nodes, 1), (per_node["serial"], not_gathered)
    assert per_node["xdist"] == dict.fromkeys(gpu_nodes, 1), per_node
    assert per_worker == {f"gw{i}": set(mine) for i, mine in enumerate(partition(gpu_nodes, 2))}, per_worker

    def comparable(run):
        return sorted((r["node"] or "", r["feature"], r["scenario"], r["outcome"]) for r in run.summary["results"])

    assert comparable(serial) == comparable(parallel)
    assert serial.rc == parallel.rc


def test_no_write_at_all_without_workload(faulty, tmp_path):
    run = run_suite(faulty, tmp_path, "--no-workload")
    assert run.summary["results"]
    assert suite_writes(faulty, run) == []
    vectoradd = [r for r in run.results() if "CUDA" in r["feature"]]
    assert vectoradd and all(r["outcome"] == "skipped" for r in vectoradd)


def test_zero_gpu_nodes_is_a_failure(module_lab_factory, tmp_path):
    lab = module_lab_factory({"nodes": [{"name": "cp-1", "control_plane": True}]}, "empty")
    run = run_suite(lab, tmp_path, "--no-workload")
    assert run.rc == 10, run.output[-2000:]
    found = [r for r in run.results(None) if r["scenario"] == "GPU nodes are found in the cluster"]
    assert found and found[0]["outcome"] == "failed" and "no GPU nodes found" in found[0]["message"]
    per_node = [r for r in run.results() if r["node"] == "no-gpu-nodes" and r["outcome"] != "skipped"]
    assert per_node and all(r["outcome"] == "failed" for r in per_node), per_node


def test_a_named_node_that_does_not_exist_fails(faulty, tmp_path):
    run = run_suite(faulty, tmp_path, "--no-workload", "--gpu-nodes", "ok-1,nope-7")
    assert run.rc == 10
    messages = " ".join(r["message"] for r in run.results() if r["outcome"] == "failed")
    assert "nope-7" in messages and "do not exist" in messages


def test_host_checks_turned_off_skip_the_host_scenarios_with_the_reason(faulty, tmp_path):
    """--host-backend none: an API-only audit. The scenarios that need a host are skipped with that reason (not
    broken: an API-only nightly audit of a conformant fleet must be able to exit 0); the cluster side is still
    checked, and a fault the API shows (f-plugin advertises nothing) still fails its node."""
    run = run_suite(faulty, tmp_path, "--no-workload", "--host-backend", "none")
    off = [r for r in run.results() if "host checks are off" in r["message"]]
    assert off, run.output[-2000:]
    assert all(r["outcome"] == "skipped" for r in off), [(r["node"], r["scenario"], r["outcome"]) for r in off]
    assert {r["node"] for r in off} >= {"ok-1", "f-driver", "f-plugin"}
    ok = run.results("ok-1")
    assert any(r["outcome"] == "passed" for r in ok), ok
    assert all(r["outcome"] in ("passed", "skipped") for r in ok), [(r["scenario"], r["message"][:200]) for r in ok]
    xid = [r for r in run.results("f-xid") if r["outcome"] == "failed"]  # the Xid check reads the exporter still
    assert [r["scenario"] for r in xid] == ["No GPU of the node reported a critical Xid error"], run.results("f-xid")
    plugin = [r for r in run.results("f-plugin") if r["outcome"] == "failed"]
    assert plugin and run.rc == 10, [(r["scenario"], r["outcome"], r["message"][:200]) for r in run.results("f-plugin")]


def test_reports_are_the_same_with_and_without_the_library_caches(faulty, tmp_path):
    """The caches of pytest-bdd's step lookup and of allure's step tracebacks (gpu_conformance/step_lookup.py,
    provision/reporting/allure_trace.py; docs/performance.md) change no report: Allure results with their
    attachments, JUnit and summary.json say the same as a run with the libraries as shipped, for a lab whose
    faulty nodes fail, break and skip."""
    from gpu_conformance.step_lookup import PLAIN_ENV
    from tests.suite.report_identity import first_difference, reports

    plain = run_suite(faulty, tmp_path / "plain", "--no-workload", env={PLAIN_ENV: "1"})
    cached = run_suite(faulty, tmp_path / "cached", "--no-workload")
    outcomes = {r["outcome"] for r in cached.summary.get("results", [])}
    assert {"passed", "failed", "skipped"} <= outcomes, (outcomes, cached.output[-2000:])
    assert first_difference(reports(plain.run_dir), reports(cached.run_dir)) is None
