"""Faults that need a lab of their own: each test starts one (fresh_lab), provisions it while the fault
happens, and checks that the run says what went wrong while the rest of the fleet is still converged and
checked. Outcomes and messages are listed in docs/reliability.md."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from lab.spec import Fault
from provision.record import HOST_RECORD, HOST_STATE, RECORD_CONFIGMAP
from tests.conftest import Lab
from tests.reliability.support import (
    SUITE_NS,
    audit_stream,
    configmap_or_none,
    describe,
    interrupt,
    read_summary,
    restart_apiserver,
    run_suite,
    start_suite,
    wait_until,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]
CP = {"name": "cp-1", "control_plane": True, "gpus": 0}
NOT_APPLICABLE = "not applicable"  # the suite's skip reason for a check that does not apply (no Docker, not asked for)


def _spec(*nodes: dict, **timing: float) -> dict:
    return {"nodes": [CP, *nodes], **({"timing": timing} if timing else {})}


def _twin_events(lab: Lab, kind: str, since: float) -> list[dict]:
    f = lab.paths.root / "twin-events.jsonl"
    evs = [json.loads(ln) for ln in f.read_text().splitlines() if ln] if f.exists() else []
    return [e for e in evs if e["kind"] == kind and e["t"] >= since]


def _outcomes(summary: dict, node: str | None) -> dict[str, tuple[str, str]]:
    return {r["scenario"]: (r["outcome"], r["message"]) for r in summary["results"] if r["node"] == node}


def _all_pass(summary: dict, node: str | None) -> list[str]:
    """Scenarios of `node` that neither passed nor were skipped as not applicable."""
    return [f"{s}: {o} {m[:200]}" for s, (o, m) in _outcomes(summary, node).items()
            if o != "passed" and not (o == "skipped" and NOT_APPLICABLE in m)]


# ----------------------------------------------------------------------------------------------- apiserver
# The time-slicing converger watches the plugin pods of the new template become ready, then the nodes advertise.
WATCHED = ("pods", "nodes")


def test_apiserver_restarted_in_the_middle_of_a_watch_the_wait_resumes(fresh_lab, tmp_path: Path) -> None:
    """The kube-apiserver process is stopped and started again (same argv) while --provision watches the nodes
    for gpu-a's GPUs (slow-advertise): the wait resumes from its resourceVersion and the run passes."""
    lab = fresh_lab(_spec({"name": "gpu-a", "gpus": 1, "faults": [Fault.SLOW_ADVERTISE]}, {"name": "gpu-b", "gpus": 1},
                            slow_advertise_s=30), "apiserver")
    user = lab.status["suite_user"]
    t0 = time.time()
    proc = start_suite(lab, "--provision", "--timeouts", "advertise=120", report_dir=tmp_path / "reports",
                       log=tmp_path / "output.txt")
    try:
        def plugin_restarted() -> dict | None:  # the time-slicing converger restarts the device plugin ...
            return next((e for e in audit_stream(lab, user, t0) if e["verb"] in ("delete", "patch")
                         and (e.get("objectRef") or {}).get("name", "").startswith("nvidia-device-plugin-daemonset")),
                        None)

        marker = wait_until("the suite to restart the device plugin", plugin_restarted, timeout=300, every=0.2)
        since = marker_time = _received(marker)

        def watching() -> dict | None:  # ... then watches its pods roll out, then the nodes until they advertise
            return next((e for e in audit_stream(lab, user, since) if e["verb"] == "watch"
                         and (e.get("objectRef") or {}).get("resource") in WATCHED), None)

        wait_until("the suite to watch the plugin pods or the nodes", watching, timeout=60, every=0.1)
        stopped, back = restart_apiserver(lab)
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            interrupt(proc)
    output = (tmp_path / "output.txt").read_text()
    summary = read_summary(tmp_path / "reports")
    bad = [x for node in (None, "gpu-a", "gpu-b") for x in _all_pass(summary, node)]
    assert rc == 0 and not bad, f"rc={rc} {bad}\n{output[-3000:]}"
    # gpu-a's GPUs came after the restart, so the wait really spanned it, and it went on by watching again
    # from where it was (a watch with the last resourceVersion), not by starting over with a fresh LIST only.
    adv = [e for e in _twin_events(lab, "gpus-advertised", marker_time) if e["node"] == "gpu-a" and e["count"] == 4]
    assert adv and adv[-1]["t"] > back, (adv, stopped, back)
    resumed = [e for e in audit_stream(lab, user, stopped) if e["verb"] == "watch"
               and (e.get("objectRef") or {}).get("resource") in WATCHED and "resourceVersion=" in e["requestURI"]]
    assert resumed, "no watch of the pods or nodes after the apiserver came back"
    assert "timed out" not in output


def _received(e: dict) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


# ----------------------------------------------------------------------------------------------- containerd
def test_node_not_ready_after_its_containerd_restart_is_reverted_and_the_others_are_not_touched(
        fresh_lab, tmp_path: Path) -> None:
    """containerd-breaks on gpu-a (the toolkit's drop-in lacks runc, canonical/k8s-snap#1991): the rolling
    restart stops at gpu-a, puts its previous containerd files back, restarts it (Ready again) and reports
    it; gpu-b, next in line, is never restarted."""
    lab = fresh_lab(_spec({"name": "gpu-a", "gpus": 1, "faults": [Fault.CONTAINERD_BREAKS]}, {"name": "gpu-b", "gpus": 1}),
                      "containerd")
    gpu_b_before = _containerd_state(lab, "gpu-b")
    r = run_suite(lab, "--provision", report_dir=tmp_path / "reports")
    assert r.rc != 0, r.describe()
    a = _outcomes(r.summary, "gpu-a")
    assert a["The node is Ready"][0] == "passed", a["The node is Ready"]  # reverted: Ready again
    msg = a["containerd's effective configuration has runc as default and nvidia"]
    assert msg[0] == "failed", msg
    for part in ("containerd on gpu-a did not come back after loading the NVIDIA drop-in",
                 'no corresponding runtime configured in `containerd.runtimes` for `containerd` '
                 '`default_runtime_name = "runc"',
                 "its previous containerd files were restored and it is Ready again",
                 "Other nodes were not restarted", "canonical/k8s-snap#1991"):
        assert part in msg[1], (part, msg[1])
    # gpu-a's containerd files are exactly the baseline kept before the first change; it runs again.
    host = lab.host_root("gpu-a")
    baseline = json.loads((host / HOST_STATE.lstrip("/")).read_text())["containerd_baseline"]
    conf_d = next(Path(p).parent for p in baseline if p.endswith("config.toml")) / "conf.d"
    now = {str(Path("/") / f.relative_to(host)): f.read_text()
           for f in [host / p.lstrip("/") for p in baseline] + sorted((host / str(conf_d).lstrip("/")).glob("*.toml"))}
    assert now == baseline
    assert _containerd_state(lab, "gpu-a")["running"] is True
    # gpu-b: reported as not restarted, and its containerd never was.
    b = _outcomes(r.summary, "gpu-b")
    assert b["The node advertises physical GPUs times replicas"] == (
        "broken", "containerd not restarted: the rolling restart stopped at gpu-a (fix that node, then run --provision "
                  "again)")
    # (The twin counts `snap restart k8s.containerd` per host; its events also log the first look at a host.)
    assert _containerd_state(lab, "gpu-b")["restarts"] == gpu_b_before["restarts"] == 0
    assert _containerd_state(lab, "gpu-a")["restarts"] == 2  # the restart that broke it, the one after the revert


def _containerd_state(lab: Lab, node: str) -> dict:
    return json.loads((lab.host_root(node) / ".twin" / "containerd.json").read_text())


# ----------------------------------------------------------------------------------------------- device plugin
def test_device_plugin_that_never_advertises_times_out_with_diagnostics(fresh_lab, tmp_path: Path) -> None:
    """device-plugin-crash on gpu-b and --timeouts advertise=5: the wait ends after 5 s, gpu-b's scenarios say
    what is missing with the plugin pod's state and log; gpu-a is converged and passes."""
    lab = fresh_lab(_spec({"name": "gpu-a", "gpus": 1}, {"name": "gpu-b", "gpus": 1, "faults": [Fault.DEVICE_PLUGIN_CRASH]}),
                      "plugin")
    r = run_suite(lab, "--provision", "--timeouts", "advertise=5", report_dir=tmp_path / "reports")
    assert r.rc != 0
    assert _all_pass(r.summary, "gpu-a") == [], r.describe()
    outcome, msg = _outcomes(r.summary, "gpu-b")["The node advertises physical GPUs times replicas"]
    assert outcome == "failed", msg
    for part in ("timed out after 5s waiting for gpu-b to advertise its GPUs: advertises 0, want 4",
                 "device-plugin pod nvidia-device-plugin-daemonset-",
                 "CrashLoopBackOff", "log: panic: runtime error: invalid memory address",
                 "Fix: check the device-plugin pod's log on the node"):
        assert part in msg, (part, msg)
    # GFD may or may not have labelled the node before the wait ended (its pod races the crashing plugin's): the
    # message names the label either way, and never as if time-slicing had been applied.
    assert re.search(r"GFD label gpu\.replicas=(None|1), want 4", msg), msg
    ts = next(c for c in r.summary["convergers"] if c["name"] == "time-slicing")
    assert ts["error"] is None and ts["seconds"] < 60, ts  # the 5 s timeout held; the converger itself went on


# ----------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_provisioning_leaves_a_consistent_record_and_a_rerun_converges(fresh_lab, tmp_path: Path) -> None:
    """SIGINT to the run's process group (what Ctrl-C in a terminal does) while helm installs the operator:
    the run stops, the change record in the cluster and on every host is whole and names what was changed,
    helm marks the release failed (not stuck pending-install), and a new --provision completes."""
    lab = fresh_lab(_spec({"name": "gpu-a", "gpus": 1}, {"name": "gpu-b", "gpus": 1}), "ctrlc")
    user = lab.status["suite_user"]
    t0 = time.time()
    proc = start_suite(lab, "--provision", report_dir=tmp_path / "first", log=tmp_path / "first.txt")
    try:
        def helm_installing() -> dict | None:
            return next((e for e in audit_stream(lab, user, t0) if e["verb"] == "create"
                         and (e.get("objectRef") or {}).get("resource") == "secrets"
                         and e["objectRef"].get("name", "").startswith("sh.helm.release.v1.gpu-operator.")), None)

        marker = wait_until("helm to start installing the operator", helm_installing, timeout=300, every=0.2)
        time.sleep(1.0)  # in the middle of the install
        assert proc.poll() is None, f"the run ended before it could be interrupted ({describe(marker)})"
    finally:
        rc = interrupt(proc)
    output = (tmp_path / "first.txt").read_text()
    assert rc != 0 and "KeyboardInterrupt" in output, output[-2000:]
    # The cluster record: whole JSON; every entry has the state from before; the release is in it.
    cm = configmap_or_none(lab.core, RECORD_CONFIGMAP, SUITE_NS)
    assert cm is not None, "no change record although the run changed things"
    entries = json.loads(cm.data["entries"])
    assert all(set(e) == {"kind", "target", "before", "at"} for e in entries), entries
    assert {"kind": "helm-release", "target": "gpu-operator/gpu-operator", "before": None} in [
        {k: e[k] for k in ("kind", "target", "before")} for e in entries], entries
    # Every host record is whole JSON and its backups exist.
    for node in ("gpu-a", "gpu-b"):
        f = lab.host_root(node) / HOST_RECORD.lstrip("/")
        if f.exists():
            rec = json.loads(f.read_text())
            for path, entry in rec["files"].items():
                assert entry["created"] or (lab.host_root(node) / entry["backup"].lstrip("/")).exists(), (node, path)
    # helm was allowed to cancel: the release is failed, not pending-install.
    listing = json.loads(lab.helm("list", "-a", "-n", "gpu-operator", "-o", "json").stdout)
    assert [r["status"] for r in listing] == ["failed"], listing
    # A new --provision completes.
    again = run_suite(lab, "--provision", report_dir=tmp_path / "second")
    bad = [x for node in (None, "gpu-a", "gpu-b") for x in _all_pass(again.summary, node)]
    assert again.rc == 0 and not bad, again.describe()
