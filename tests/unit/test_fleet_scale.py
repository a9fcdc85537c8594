"""What keeps a 1000-node run cheap: pods indexed once per snapshot, listed objects slimmed while they are
parsed, fleet-wide messages that stay short, per-node plan attachments, a short RunState repr (Allure records
it for every step), and a heap that is frozen instead of walked."""

from __future__ import annotations

import gc
import json

from provision.checks import LISTED_PROBLEMS, listed
from provision.engine import Change, Result
from provision.heap import HeapSettler
from provision.kube import Snapshot, slim_node_dict, slim_pod_dict


def _pod(name: str, app: str, node: str | None, deleting: bool = False) -> dict:
    meta: dict = {"name": name, "labels": {"app": app}, "uid": name,
                  "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T10:00:00Z"
    spec: dict = {"containers": [{"name": "c", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.18.0",
                                  "env": [{"name": "X", "value": "1"}]}],
                  "volumes": [{"name": "v", "hostPath": {"path": "/var/lib/kubelet"}}],
                  "tolerations": [{"operator": "Exists"}], "restartPolicy": "Always"}
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec,
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0,
                                              "state": {"running": {}}}]}}


# ------------------------------------------------------------------------------------------------ snapshot index
def test_pod_on_finds_the_live_pod_of_an_app_on_a_node():
    snap = Snapshot(pods=[_pod("dp-old", "dp", "gpu-a", deleting=True), _pod("dp-1", "dp", "gpu-a"),
                          _pod("dp-2", "dp", "gpu-b"), _pod("gfd-1", "gfd", "gpu-a"), _pod("pending", "dp", None),
                          {"metadata": {"name": "no-labels"}, "spec": {"nodeName": "gpu-a"}}])
    assert snap.pod_on("dp", "gpu-a")["metadata"]["name"] == "dp-1"   # the terminating one is not it
    assert snap.pod_on("dp", "gpu-b")["metadata"]["name"] == "dp-2"
    assert snap.pod_on("gfd", "gpu-b") is None
    assert snap.pod_on("dcgm", "gpu-a") is None
    assert [p["metadata"]["name"] for p in snap.pods_of("dp")] == ["dp-old", "dp-1", "dp-2", "pending"]
    assert snap.pods_of("nothing") == []


def test_pods_of_returns_a_list_the_caller_may_change():
    snap = Snapshot(pods=[_pod("dp-1", "dp", "gpu-a")])
    snap.pods_of("dp").clear()
    assert len(snap.pods_of("dp")) == 1


def test_the_index_is_built_once_per_snapshot():
    snap = Snapshot(pods=[_pod(f"dp-{i}", "dp", f"gpu-{i}") for i in range(50)])
    assert snap.pod_on("dp", "gpu-7")["metadata"]["name"] == "dp-7"
    index = snap._by_app_node
    snap.pod_on("dp", "gpu-8")
    snap.pods_of("dp")
    assert snap._by_app_node is index


# ------------------------------------------------------------------------------------------------ slimming
def test_a_listed_pod_keeps_what_the_suite_reads_and_drops_the_rest():
    raw = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "7"},
                      "items": [_pod("dp-1", "dp", "gpu-a"), _pod("dp-2", "dp", None)]})
    items = json.loads(raw, object_hook=slim_pod_dict)["items"]
    first = items[0]
    assert first["spec"] == {"nodeName": "gpu-a", "restartPolicy": "Always"}
    assert "managedFields" not in first["metadata"]
    assert first["metadata"]["labels"] == {"app": "dp"} and first["metadata"]["uid"] == "dp-1"
    assert first["status"]["containerStatuses"][0]["state"] == {"running": {}}   # status untouched
    assert first["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert items[1]["spec"] == {"restartPolicy": "Always"}                       # not scheduled yet
    assert Snapshot(pods=items).pod_on("dp", "gpu-a") is first


def test_a_listed_node_loses_its_images_and_managed_fields_only():
    node = {"metadata": {"name": "gpu-a", "labels": {"nvidia.com/gpu.count": "2"}, "managedFields": [{"x": 1}]},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "capacity": {"nvidia.com/gpu": "8"},
                       "nodeInfo": {"containerRuntimeVersion": "containerd://1.7.27"},
                       "images": [{"names": [f"registry/image-{i}:v1"], "sizeBytes": i} for i in range(40)],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}}
    got = json.loads(json.dumps({"items": [node]}), object_hook=slim_node_dict)["items"][0]
    assert "images" not in got["status"] and "managedFields" not in got["metadata"]
    assert got["status"]["allocatable"] == {"nvidia.com/gpu": "8"}
    assert got["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://1.7.27"
    assert got["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"}]
    assert got["metadata"]["labels"] == {"nvidia.com/gpu.count": "2"}


# ------------------------------------------------------------------------------------------------ messages
def test_a_fleet_wide_finding_names_the_first_problems_and_counts_the_rest():
    problems = [f"dp: no pod on gpu-{i:04d}" for i in range(1000)]
    text = listed(problems)
    assert text.startswith("dp: no pod on gpu-0000; dp: no pod on gpu-0001")
    assert f"gpu-{LISTED_PROBLEMS - 1:04d}" in text and f"gpu-{LISTED_PROBLEMS:04d}" not in text
    assert text.endswith(f"... and {1000 - LISTED_PROBLEMS} more (1000 problems in all)")
    assert len(text) < 1000
    assert listed(problems[:3]) == "dp: no pod on gpu-0000; dp: no pod on gpu-0001; dp: no pod on gpu-0002"
    assert listed([]) == ""


def test_a_nodes_plan_shows_its_own_and_the_cluster_wide_changes():
    r = Result("time-slicing", "audit", planned=[
        Change("time-slicing", None, "ConfigMap gpu-operator/time-slicing-config", "create"),
        Change("time-slicing", "gpu-a", "node gpu-a", "label", "nvidia.com/device-plugin.config=any"),
        Change("time-slicing", "gpu-b", "node gpu-b", "label", "nvidia.com/device-plugin.config=any")])
    text = r.plan_text("gpu-a")
    assert text.splitlines()[0] == "time-slicing: 2 change(s) for gpu-a"
    assert "[gpu-a] label node gpu-a" in text and "gpu-b" not in text and "create ConfigMap" in text
    assert r.plan_text().splitlines()[0] == "time-slicing: 3 change(s)"
    assert r.touches("gpu-c")                       # the cluster-wide change concerns every node
    only_b = Result("docker-runtime", "audit", planned=[Change("docker-runtime", "gpu-b", "daemon.json", "update")])
    assert only_b.touches("gpu-b") and not only_b.touches("gpu-a")
    assert only_b.plan_text("gpu-a") == "docker-runtime: 0 change(s) for gpu-a\n  (no changes)"


def test_run_state_repr_does_not_list_the_fleet():
    from types import SimpleNamespace

    from steps.support import RunState

    ctx = SimpleNamespace(settings=SimpleNamespace(mode="audit"))
    state = RunState(ctx=ctx, engine=None, gpu_nodes=tuple(f"gpu-{i:04d}" for i in range(1000)))  # type: ignore[arg-type]
    assert repr(state) == "RunState(mode=audit, gpu_nodes=1000)"


# ------------------------------------------------------------------------------------------------ heap
def test_the_heap_is_collected_and_frozen_after_the_first_item_and_every_n_items():
    heap = HeapSettler(every=3)
    gc.unfreeze()
    try:
        heap.item_done()
        assert heap.settled == 1 and gc.get_freeze_count() > 0
        gc.unfreeze()
        heap.item_done()
        heap.item_done()          # 3rd item
        assert heap.settled == 2 and gc.get_freeze_count() > 0
        heap.item_done()
        heap.item_done()
        assert heap.settled == 2
    finally:
        gc.unfreeze()


def test_cycles_dead_before_a_settle_are_freed_not_frozen():
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a            # a cycle only the collector can free
    ref = weakref.ref(a)
    del a, b
    gc.unfreeze()
    try:
        HeapSettler().settle()
        assert ref() is None
    finally:
        gc.unfreeze()


# ------------------------------------------------------------------------------------------------ allure writer
def test_the_fast_allure_writer_writes_what_allure_commons_writes(tmp_path):
    """Same result object, written by allure-commons' own logger and by the fast writer: the same JSON."""
    from allure_commons.logger import AllureFileLogger
    from allure_commons.model2 import Label, Parameter, Status, StatusDetails, TestResult, TestStepResult

    from provision.reporting.allure_writer import _report_item

    result = TestResult(uuid="u-1", name="The node advertises physical GPUs times replicas", status=Status.FAILED,
                        statusDetails=StatusDetails(message="expected 8; found 0 — ünïcode", trace=""),
                        labels=[Label(name="node", value="gpu-a")], parameters=[Parameter(name="gpu_node", value="'gpu-a'")],
                        steps=[TestStepResult(name="Given a GPU node", status=Status.PASSED, start=1, stop=2)],
                        start=1, stop=3)
    theirs, ours = AllureFileLogger(tmp_path / "theirs"), AllureFileLogger(tmp_path / "ours")
    theirs.report_result(result)
    _report_item(ours, result)
    [a] = list((tmp_path / "theirs").iterdir())
    [b] = list((tmp_path / "ours").iterdir())
    assert b.name.endswith("-result.json") and not list((tmp_path / "ours").glob("*.tmp"))
    assert json.loads(a.read_text(encoding="utf8")) == json.loads(b.read_text(encoding="utf8"))
    assert "ünïcode" in b.read_text(encoding="utf8")


def test_use_fast_writer_switches_the_registered_file_logger(tmp_path, monkeypatch):
    import allure_commons
    from allure_commons.logger import AllureFileLogger

    from provision.reporting.allure_writer import use_fast_writer

    logger = AllureFileLogger(tmp_path)
    allure_commons.plugin_manager.register(logger, name="test-fast-writer")
    try:
        assert use_fast_writer() >= 1
        assert logger._report_item.__func__.__module__ == "provision.reporting.allure_writer"
        monkeypatch.setenv("ALLURE_INDENT_OUTPUT", "1")
        assert use_fast_writer() == 0
    finally:
        allure_commons.plugin_manager.unregister(name="test-fast-writer")


def _logged_report(keywords: dict):
    from _pytest.reports import TestReport
    from pytest_bdd.reporting import ReportContext, test_report_context_registry

    report = TestReport("f.py::t[gpu-a]", ("f.py", 1, "t"), keywords, "passed", None, "call")
    test_report_context_registry[report] = ReportContext(scenario={"steps": ["x" * 1000]}, name="t")
    return report, test_report_context_registry


def test_a_logged_report_loses_pytest_bdds_scenario_copy_and_its_keywords():
    from types import SimpleNamespace

    from provision.heap import release_report

    report, registry = _logged_report({"gpu-a": 1, "per_node": 1})
    release_report(report, SimpleNamespace(option=SimpleNamespace(cucumber_json_path=None,
                                                                  gherkin_terminal_reporter=False)))
    assert report not in registry and report.keywords == {}
    assert report.nodeid == "f.py::t[gpu-a]" and report.passed  # what the terminal's summary reads is kept


def test_the_scenario_copy_stays_for_the_plugins_that_read_it():
    from types import SimpleNamespace

    from provision.heap import release_report

    for option in (SimpleNamespace(cucumber_json_path="c.json", gherkin_terminal_reporter=False),
                   SimpleNamespace(cucumber_json_path=None, gherkin_terminal_reporter=True)):
        report, registry = _logged_report({"gpu-a": 1})
        release_report(report, SimpleNamespace(option=option))
        assert registry[report].name == "t", option


class _Pages:
    """A LIST endpoint that serves ``items`` in pages of the ``limit`` asked for (continue token: the offset),
    raising 410 Gone for the tokens in ``expired``; records each call's limit and token."""

    def __init__(self, items: list[dict], expired: tuple[str, ...] = ()) -> None:
        self.items, self.expired, self.calls = items, expired, []

    def __call__(self, *args, _preload_content=True, _request_timeout=None, limit=None, _continue=None, **kw):
        from types import SimpleNamespace

        from kubernetes.client.rest import ApiException

        self.calls.append((limit, _continue))
        if _continue in self.expired:
            raise ApiException(status=410, reason="Gone: the continue token expired")
        start = int(_continue or 0)
        end = len(self.items) if limit is None else min(len(self.items), start + limit)
        meta = {"resourceVersion": "7", **({"continue": str(end)} if end < len(self.items) else {})}
        body = {"kind": "PodList", "metadata": meta, "items": self.items[start:end]}
        return SimpleNamespace(data=json.dumps(body).encode())


def _kube():
    from provision.kube import Kube
    from provision.settings import validate

    kube = Kube.__new__(Kube)
    kube.timeout = (5.0, 10.0)
    kube.settings = validate({})
    return kube


def test_a_large_list_is_read_in_pages_and_slimmed_page_by_page():
    from provision.kube import LIST_PAGE

    pods = [{"metadata": {"name": f"p{i}", "managedFields": [{"x": 1}]},
             "spec": {"nodeName": f"n{i}", "containers": [{"image": "big"}]}} for i in range(2 * LIST_PAGE + 3)]
    endpoint = _Pages(pods)
    got = _kube()._list(endpoint, "gpu-operator", slim=slim_pod_dict)
    assert [p["metadata"]["name"] for p in got] == [f"p{i}" for i in range(len(pods))]
    assert got[0] == {"metadata": {"name": "p0"}, "spec": {"nodeName": "n0"}}
    assert endpoint.calls == [(LIST_PAGE, None), (LIST_PAGE, str(LIST_PAGE)), (LIST_PAGE, str(2 * LIST_PAGE))]


def test_an_expired_continue_token_falls_back_to_one_whole_list():
    import pytest
    from kubernetes.client.rest import ApiException

    from provision.kube import LIST_PAGE

    items = [{"metadata": {"name": f"n{i}"}} for i in range(LIST_PAGE + 1)]
    endpoint = _Pages(items, expired=(str(LIST_PAGE),))
    got = _kube()._list(endpoint)
    assert len(got) == LIST_PAGE + 1 and endpoint.calls[-1] == (None, None)
    with pytest.raises(ApiException):  # a 410 on the first page is not a stale token: raised
        _kube()._list(_Pages(items, expired=(None,)))


def test_a_watched_pod_is_slimmed_as_a_listed_one_is():
    from provision.kube import slim_tree

    pod = {"metadata": {"name": "p", "managedFields": [{"m": 1}], "labels": {"app": "a"}},
           "spec": {"nodeName": "n", "containers": [{"image": "big"}], "volumes": [{}]},
           "status": {"phase": "Running", "containerStatuses": [{"ready": True}]}}
    listed = json.loads(json.dumps(pod), object_hook=slim_pod_dict)
    assert slim_tree(pod, slim_pod_dict) == listed
    assert listed == {"metadata": {"name": "p", "labels": {"app": "a"}}, "spec": {"nodeName": "n"},
                      "status": {"phase": "Running", "containerStatuses": [{"ready": True}]}}
