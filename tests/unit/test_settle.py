"""Which operand pods a --provision run still waits for before verifying (provision/converge/settle.py)."""

from __future__ import annotations

import datetime as dt

from provision.converge.settle import pending_pods

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC).timestamp()


def _pod(app: str, node: str, *, started_s_ago: float | None, ready: bool = False, ip: str | None = "10.0.0.9",
         deleting: bool = False) -> dict:
    status: dict = {"phase": "Running" if started_s_ago is not None else "Pending",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if started_s_ago is not None:
        status["startTime"] = dt.datetime.fromtimestamp(NOW - started_s_ago, dt.UTC).isoformat().replace("+00:00", "Z")
        if ip:
            status["podIP"] = ip
    meta: dict = {"name": f"{app}-{node}", "labels": {"app": app}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T11:59:00Z"
    return {"metadata": meta, "spec": {"nodeName": node}, "status": status}


def test_nothing_pending_when_every_pod_is_ready():
    pods = [_pod(a, n, started_s_ago=3, ready=True) for a in ("dcgm", "validator") for n in ("gpu-a", "gpu-b")]
    assert pending_pods(pods, ("dcgm", "validator"), ("gpu-a", "gpu-b"), NOW, 45) == []


def test_a_missing_or_unstarted_pod_is_waited_for():
    pods = [_pod("dcgm", "gpu-a", started_s_ago=3, ready=True), _pod("dcgm", "gpu-b", started_s_ago=None),
            _pod("validator", "gpu-b", started_s_ago=2, ip=None)]      # started, no IP yet
    assert pending_pods(pods, ("dcgm", "validator"), ("gpu-a", "gpu-b"), NOW, 45) == [
        "dcgm on gpu-b: not started", "validator on gpu-a: not started", "validator on gpu-b: not started"]


def test_a_started_pod_that_is_not_ready_is_waited_for_only_within_the_settle_time():
    young = [_pod("dcgm", "gpu-a", started_s_ago=10)]
    stuck = [_pod("dcgm", "gpu-a", started_s_ago=50)]
    assert pending_pods(young, ("dcgm",), ("gpu-a",), NOW, 45) == ["dcgm on gpu-a: starting"]
    assert pending_pods(stuck, ("dcgm",), ("gpu-a",), NOW, 45) == []   # a faulty node: the checks report it
    assert pending_pods(stuck, ("dcgm",), ("gpu-a",), NOW, float("inf")) == ["dcgm on gpu-a: starting"]


def test_a_terminating_pod_does_not_count_and_a_ready_replacement_wins():
    old = _pod("dcgm", "gpu-a", started_s_ago=100, ready=True, deleting=True)
    assert pending_pods([old], ("dcgm",), ("gpu-a",), NOW, 45) == ["dcgm on gpu-a: not started"]
    new_unready = _pod("dcgm", "gpu-a", started_s_ago=1)
    new_ready = _pod("dcgm", "gpu-a", started_s_ago=1, ready=True)
    assert pending_pods([old, new_unready, new_ready], ("dcgm",), ("gpu-a",), NOW, 45) == []


def test_a_crash_looping_pod_is_not_waited_for():
    pod = _pod("device-plugin", "gpu-b", started_s_ago=2)
    pod["status"]["containerStatuses"] = [{"name": "plugin", "ready": False, "restartCount": 3,
                                           "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
    assert pending_pods([pod], ("device-plugin",), ("gpu-b",), NOW, 45) == []
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    assert pending_pods([pod], ("device-plugin",), ("gpu-b",), NOW, 45) == ["device-plugin on gpu-b: starting"]
