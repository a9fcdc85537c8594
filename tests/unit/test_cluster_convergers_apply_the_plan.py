"""The cluster convergers apply exactly the typed changes they planned (provision/changes.py), so `--plan` is what
`--provision` does: every write of `apply` to a fake Kubernetes API and helm is recorded and compared with the
plan's payloads, the payloads survive the run folder's JSON, planning again afterwards finds nothing, and apply
refuses (ChangedSincePlan, nothing written) when what the plan read has changed since (optimistic concurrency).
The waits (operator rendering, rollouts, advertised GPUs) are recorded, not run: they write nothing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes.client.rest import ApiException

from provision.changes import (
    AdvertiseWait,
    ChangedSincePlan,
    ClusterPolicyPatch,
    ConfigMapWrite,
    HelmRelease,
    MigWait,
    NodeLabels,
    RolloutRestart,
)
from provision.context import NoHostAccess
from provision.converge import cluster as cl
from provision.converge.cluster import DISCOVERY_CM, TIME_SLICING_CM, Discovery, TimeSlicing
from provision.converge.mig import MigConfig
from provision.converge.operator import OperatorRelease
from provision.engine import Change, ConvergeError, Result
from provision.helm import Release
from provision.hosts.guard import WRITE_GUARD
from provision.kube import Kube
from provision.observe import mig as obs_mig
from provision.settings import validate

NS = "gpu-operator"
NODES = ("gpu-a", "gpu-b")
MIG_PARTED = Path(__file__).parent / "data/mig/default-mig-parted-config-excerpt.yaml"


class _Raw:
    def __init__(self, obj: dict) -> None:
        self.data = json.dumps(obj).encode()


def _conflict() -> ApiException:
    return ApiException(status=409, reason="Conflict")


class FakeCluster:
    """Nodes, the operator namespace's ConfigMaps and the ClusterPolicy, with resourceVersions; every write is
    recorded in `ops`. Plays the Kube facade the convergers use (snapshot, core, custom, apps, guarded)."""

    timeout = 5

    def __init__(self) -> None:
        self.nodes = {n: {"metadata": {"name": n, "labels": {"nvidia.com/gpu.product": "NVIDIA-H200"}},
                          "status": {"allocatable": {"nvidia.com/gpu": "1"}}} for n in NODES}
        self.configmaps: dict[str, dict] = {}
        self.cluster_policy: dict | None = {"metadata": {"name": "cluster-policy", "resourceVersion": "1"},
                                            "spec": {"devicePlugin": {}}}
        self.ops: list[tuple] = []
        self.writes: list[str] = []
        self.rv = 10
        self.on_write: list = []   # callables run before a write lands (another party writing meanwhile)

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    # --- reads
    def snapshot(self, refresh: bool = False):
        return SimpleNamespace(nodes=json.loads(json.dumps(self.nodes)), configmaps=json.loads(json.dumps(self.configmaps)),
                               cluster_policy=json.loads(json.dumps(self.cluster_policy)), daemonsets={},
                               pods_of=lambda app: [])

    def get_cluster_policy(self):
        return json.loads(json.dumps(self.cluster_policy))

    def guarded(self, action, fn, *args, **kw):
        WRITE_GUARD.check(action)
        return fn(*args, **kw)

    update_with_retry = Kube.update_with_retry

    @property
    def core(self):
        return SimpleNamespace(read_node=self._read_node, patch_node=self._patch_node, list_node=None,
                               read_namespace=lambda *a, **kw: None,
                               read_namespaced_config_map=self._read_cm, create_namespaced_config_map=self._create_cm,
                               replace_namespaced_config_map=self._replace_cm)

    @property
    def custom(self):
        return SimpleNamespace(patch_cluster_custom_object=self._patch_cp,
                               list_cluster_custom_object=lambda *a, **kw: {"items": []})   # no GPUCluster

    @property
    def apps(self):
        return SimpleNamespace(patch_namespaced_daemon_set=lambda name, ns, body, **_: self.ops.append(
            ("restart", ns, name)))

    def _read_node(self, name, **_):
        return SimpleNamespace(metadata=SimpleNamespace(labels=dict(self.nodes[name]["metadata"]["labels"])))

    def _patch_node(self, name, body, **_):
        for f in self.on_write:
            f()
        self.ops.append(("label", name, dict(body["metadata"]["labels"])))
        labels = self.nodes[name]["metadata"]["labels"]
        for k, v in body["metadata"]["labels"].items():
            if v is None:
                labels.pop(k, None)
            else:
                labels[k] = v

    def _read_cm(self, name, ns, _preload_content=True, **_):
        if name not in self.configmaps:
            raise ApiException(status=404, reason="Not Found")
        obj = json.loads(json.dumps(self.configmaps[name]))
        return obj if _preload_content else _Raw(obj)

    def _create_cm(self, ns, body, **_):
        if body["metadata"]["name"] in self.configmaps:
            raise _conflict()
        obj = json.loads(json.dumps(body))
        self._bump(obj)
        self.configmaps[obj["metadata"]["name"]] = obj
        self.ops.append(("configmap", ns, obj["metadata"]["name"], dict(obj["data"])))

    def _replace_cm(self, name, ns, body, **_):
        for f in self.on_write:
            f()
        if body["metadata"].get("resourceVersion") != self.configmaps[name]["metadata"]["resourceVersion"]:
            raise _conflict()
        old, old_labels = self.configmaps[name].get("data") or {}, self.configmaps[name]["metadata"].get("labels") or {}
        obj = json.loads(json.dumps(body))
        self._bump(obj)
        self.configmaps[name] = obj
        self.ops.append(("configmap", ns, name, {k: v for k, v in obj["data"].items() if old.get(k) != v}))
        assert all(obj["metadata"]["labels"].get(k) == v for k, v in old_labels.items() if k not in body), old_labels

    def _patch_cp(self, group, version, plural, name, body, **_):
        for f in self.on_write:
            f()
        if body["metadata"]["resourceVersion"] != self.cluster_policy["metadata"]["resourceVersion"]:
            raise _conflict()
        spec = {k: v for k, v in body.items() if k != "metadata"}
        self.ops.append(("clusterpolicy", spec))
        cfg = self.cluster_policy["spec"].setdefault("devicePlugin", {}).setdefault("config", {})
        cfg.update(spec["spec"]["devicePlugin"]["config"])
        self._bump(self.cluster_policy)


class FakeHelm:
    def __init__(self, release: Release | None, values: dict) -> None:
        self.rel, self.user = release, values
        self.ops: list[tuple] = []
        self.moved = False   # someone upgrades the release between the plan and the apply

    def release(self):
        return self.rel

    def values(self, all_values: bool = False):
        return json.loads(json.dumps(self.user))

    def repo_add(self):
        pass

    def chart_versions(self):
        return ["v26.3.0", "v25.10.1"]

    def chart_values(self, version):
        return {"driver": {"enabled": True}, "toolkit": {"env": []}, "cdi": {"enabled": False, "nriPluginEnabled": False},
                "mig": {"strategy": "single"}, "devicePlugin": {"enabled": True}}

    def upgrade_install(self, version, values_file, timeout):
        self.ops.append(("helm", version, yaml.safe_load(Path(values_file).read_text())))


class _Record:
    def __init__(self) -> None:
        self.added: list[tuple] = []

    def add(self, *entry):
        self.added.append(entry)

    def entries(self):
        return [{"kind": "helm-release", "target": f"{NS}/gpu-operator"}]


def _ctx(kube: FakeCluster, helm: FakeHelm | None = None, **settings) -> SimpleNamespace:
    def no_host(name: str):
        raise NoHostAccess(f"no host access to {name} in this test")

    s = validate({"mode": "provision", "namespace": NS, "expected_gpus": dict.fromkeys(NODES, 1), **settings})
    return SimpleNamespace(settings=s, kube=kube, helm=helm, record=_Record(), gpu_nodes=NODES, engine=None,
                           host=no_host, host_fact=lambda node, name, read: read())


def _roundtrip(changes: list[Change]) -> list[Change]:
    """Through the run folder's JSON, as an xdist worker reads a converger's result."""
    back = [Change.from_json(json.loads(json.dumps(c.to_json()))) for c in changes]
    assert back == changes
    return back


def _expected_ops(changes: list[Change]) -> list[tuple]:
    """The writes the planned payloads stand for, in the plan's order."""
    out: list[tuple] = []
    restarted = False
    for c in changes:
        p = c.payload
        if isinstance(p, ConfigMapWrite):   # the keys that differ from what the plan saw
            out.append(("configmap", p.namespace, p.name,
                        {k: v for k, v in p.data.items() if p.before is None or p.before.get(k) != v}))
        elif isinstance(p, NodeLabels):
            out.append(("label", c.node, p.labels))
        elif isinstance(p, ClusterPolicyPatch):
            body: dict = p.value
            for key in reversed(p.path):
                body = {key: body}
            out.append(("clusterpolicy", body))
        elif isinstance(p, RolloutRestart) and not restarted:
            restarted = True
    return out + ([("restart", NS, cl.DEVICE_PLUGIN_DS)] if restarted else [])


@pytest.fixture
def no_waits(monkeypatch):
    """The time-slicing converger's waits, recorded; the advertise wait plays the device plugin and GFD."""
    waits: list[tuple] = []

    def advertised(self, ctx, wait: AdvertiseWait, result):
        waits.append(("advertise", wait.expected))
        for n, count in wait.expected.items():
            ctx.kube.nodes[n]["status"]["allocatable"] = {wait.resources[n]: str(count)}
            ctx.kube.nodes[n]["metadata"]["labels"][cl.GFD_REPLICAS] = wait.replicas[n]

    monkeypatch.setattr(TimeSlicing, "_wait_plugin_rendered", lambda self, ctx, cfg: waits.append(("rendered", cfg)))
    monkeypatch.setattr(TimeSlicing, "_wait_config_rendered", lambda self, ctx, d: waits.append(("config", d)))
    monkeypatch.setattr(TimeSlicing, "_wait_rollout", lambda self, ctx, nodes, apps: waits.append(("rollout", apps)))
    monkeypatch.setattr(TimeSlicing, "_wait_advertised", advertised)
    return waits


def _plan(conv, ctx) -> tuple[list[Change], Result]:
    result = Result(conv.name, "provision")
    return _roundtrip(conv.plan(ctx, result)), result


def test_time_slicing_applies_exactly_its_planned_payloads(no_waits) -> None:
    kube = FakeCluster()
    ctx = _ctx(kube, replicas=4)
    planned, result = _plan(TimeSlicing(), ctx)
    kinds = [type(c.payload).__name__ for c in planned]
    assert kinds == ["ConfigMapWrite", "ClusterPolicyPatch", "RolloutRestart", "RolloutRestart", "RolloutRestart",
                     "AdvertiseWait"], [c.line() for c in planned]
    with WRITE_GUARD.allow("--provision"):
        TimeSlicing().apply(ctx, planned, result)
    assert kube.ops == _expected_ops(planned)
    wait = planned[-1].payload
    assert wait.expected == dict.fromkeys(NODES, 4) and wait.config == {"name": TIME_SLICING_CM, "default": "any"}
    assert ("advertise", wait.expected) in no_waits
    assert ("clusterpolicy-field", "spec.devicePlugin.config", None) in ctx.record.added
    assert TimeSlicing().plan(ctx, Result("time-slicing", "provision")) == []   # converged: nothing left


def test_time_slicing_per_product_profiles_label_the_nodes_as_planned(no_waits) -> None:
    kube = FakeCluster()
    kube.nodes["gpu-b"]["metadata"]["labels"]["nvidia.com/gpu.product"] = "Tesla-T4"
    ctx = _ctx(kube, replicas=4, replica_profiles={"Tesla T4": 2})
    planned, result = _plan(TimeSlicing(), ctx)
    labels = [c for c in planned if isinstance(c.payload, NodeLabels)]
    assert [(c.node, c.payload.labels) for c in labels] == [("gpu-b", {cl.CONFIG_LABEL: "tesla-t4"})]
    with WRITE_GUARD.allow("--provision"):
        TimeSlicing().apply(ctx, planned, result)
    assert kube.ops == _expected_ops(planned)
    assert ("node-label", f"gpu-b:{cl.CONFIG_LABEL}", None) in ctx.record.added
    assert TimeSlicing().plan(ctx, Result("time-slicing", "provision")) == []


def test_a_configmap_key_changed_since_the_plan_is_refused_and_nothing_is_written(no_waits) -> None:
    kube = FakeCluster()
    kube.configmaps[TIME_SLICING_CM] = {"metadata": {"name": TIME_SLICING_CM, "resourceVersion": "3"},
                                        "data": {"any": "version: v1\n", "team-x": "theirs"}}
    ctx = _ctx(kube, replicas=4)
    planned, result = _plan(TimeSlicing(), ctx)
    assert isinstance(planned[0].payload, ConfigMapWrite) and planned[0].payload.before == {"any": "version: v1\n"}
    kube.configmaps[TIME_SLICING_CM]["data"]["any"] = "edited by hand"
    with WRITE_GUARD.allow("--provision"), pytest.raises(ChangedSincePlan, match=r"time-slicing-config key\(s\) any"):
        TimeSlicing().apply(ctx, planned, result)
    assert kube.ops == [] and kube.configmaps[TIME_SLICING_CM]["data"]["any"] == "edited by hand"


def test_a_concurrent_write_of_another_key_is_merged_not_refused(no_waits) -> None:
    kube = FakeCluster()
    kube.configmaps[TIME_SLICING_CM] = {"metadata": {"name": TIME_SLICING_CM, "resourceVersion": "3"},
                                        "data": {"any": "version: v1\n"}}
    ctx = _ctx(kube, replicas=4)
    planned, result = _plan(TimeSlicing(), ctx)

    def other_party() -> None:   # once: another key written between the suite's read and its write (409)
        kube.on_write.clear()
        kube.configmaps[TIME_SLICING_CM]["data"]["team-x"] = "theirs"
        kube._bump(kube.configmaps[TIME_SLICING_CM])
    kube.on_write.append(other_party)
    with WRITE_GUARD.allow("--provision"):
        TimeSlicing().apply(ctx, planned, result)
    assert kube.configmaps[TIME_SLICING_CM]["data"]["team-x"] == "theirs"
    assert kube.configmaps[TIME_SLICING_CM]["data"]["any"] == planned[0].payload.data["any"]


def test_a_clusterpolicy_field_changed_since_the_plan_is_refused(no_waits) -> None:
    kube = FakeCluster()
    ctx = _ctx(kube, replicas=4)
    planned, result = _plan(TimeSlicing(), ctx)
    kube.cluster_policy["spec"]["devicePlugin"]["config"] = {"name": "someone-elses", "default": "x"}
    with WRITE_GUARD.allow("--provision"), pytest.raises(ChangedSincePlan, match=r"spec\.devicePlugin\.config"):
        TimeSlicing().apply(ctx, planned, result)
    assert [op[0] for op in kube.ops] == ["configmap"]   # written before the patch, in the plan's order
    assert kube.cluster_policy["spec"]["devicePlugin"]["config"]["name"] == "someone-elses"


def test_a_clusterpolicy_status_write_in_between_is_checked_again_not_refused(no_waits) -> None:
    kube = FakeCluster()
    ctx = _ctx(kube, replicas=4)
    planned, result = _plan(TimeSlicing(), ctx)

    def operator_status() -> None:   # the operator's status update moves the resourceVersion, not the field
        kube.on_write.clear()
        kube._bump(kube.cluster_policy)
    kube.on_write.append(operator_status)
    with WRITE_GUARD.allow("--provision"):
        TimeSlicing().apply(ctx, planned, result)
    assert kube.cluster_policy["spec"]["devicePlugin"]["config"] == {"name": TIME_SLICING_CM, "default": "any"}


def test_discovery_creates_then_updates_exactly_as_planned() -> None:
    kube = FakeCluster()
    ctx = _ctx(kube)
    planned, result = _plan(Discovery(), ctx)
    assert [c.action for c in planned] == ["create"] and planned[0].payload.before is None
    with WRITE_GUARD.allow("--provision"):
        Discovery().apply(ctx, planned, result)
    assert kube.ops == _expected_ops(planned)
    assert kube.configmaps[DISCOVERY_CM]["metadata"]["labels"] == planned[0].payload.labels
    assert Discovery().plan(ctx, Result("discovery", "provision")) == []
    kube.configmaps[DISCOVERY_CM]["data"]["service.yaml"] = "service: {name: drifted}\n"
    kube.ops.clear()
    planned, result = _plan(Discovery(), ctx)
    with WRITE_GUARD.allow("--provision"):
        Discovery().apply(ctx, planned, result)
    assert kube.ops == _expected_ops(planned)
    assert Discovery().plan(ctx, Result("discovery", "provision")) == []


def test_discovery_refuses_to_create_what_someone_created_since_the_plan() -> None:
    kube = FakeCluster()
    ctx = _ctx(kube)
    planned, result = _plan(Discovery(), ctx)
    kube.configmaps[DISCOVERY_CM] = {"metadata": {"name": DISCOVERY_CM, "resourceVersion": "5"}, "data": {}}
    with WRITE_GUARD.allow("--provision"), pytest.raises(ChangedSincePlan, match="created by someone else"):
        Discovery().apply(ctx, planned, result)
    assert kube.ops == [] and ctx.record.added == []


def _release(revision: int = 3, version: str = "v25.10.1") -> Release:
    return Release("gpu-operator", NS, revision, "deployed", f"gpu-operator-{version}", version)


def test_the_operator_release_is_upgraded_with_exactly_the_planned_values() -> None:
    kube = FakeCluster()
    helm = FakeHelm(_release(), {"devicePlugin": {"enabled": True}, "toolkit": {"env": [{"name": "X", "value": "1"}]}})
    ctx = _ctx(kube, helm, chart_version="v26.3.0")
    planned, result = _plan(OperatorRelease(), ctx)
    assert [c.action for c in planned] == ["upgrade"]
    p = planned[0].payload
    assert isinstance(p, HelmRelease) and p.revision == 3 and p.refused is None
    assert p.values["devicePlugin"] == {"enabled": True}                      # the release's own value, kept
    assert {"name": "X", "value": "1"} in p.values["toolkit"]["env"]
    assert p.values["driver"] == {"enabled": False}                           # the suite's, merged in
    with WRITE_GUARD.allow("--provision"):
        OperatorRelease().apply(ctx, planned, result)
    assert helm.ops == [("helm", "v26.3.0", p.values)]


def test_the_operator_release_refuses_when_it_moved_since_the_plan() -> None:
    kube = FakeCluster()
    helm = FakeHelm(_release(), {})
    ctx = _ctx(kube, helm, chart_version="v26.3.0")
    planned, result = _plan(OperatorRelease(), ctx)
    helm.rel = _release(revision=4)
    with WRITE_GUARD.allow("--provision"), pytest.raises(ChangedSincePlan, match="planned on revision 3, now revision 4"):
        OperatorRelease().apply(ctx, planned, result)
    assert helm.ops == [] and ctx.record.added == []


def test_a_planned_downgrade_is_refused_by_apply_without_a_helm_call() -> None:
    helm = FakeHelm(_release(version="v26.3.0"), {})
    ctx = _ctx(FakeCluster(), helm, chart_version="v25.10.1")
    planned, result = _plan(OperatorRelease(), ctx)
    assert "refuses" in planned[0].detail and planned[0].payload.refused
    with WRITE_GUARD.allow("--provision"), pytest.raises(ConvergeError, match="no downgrade path"):
        OperatorRelease().apply(ctx, planned, result)
    assert helm.ops == []


def test_mig_config_labels_and_waits_exactly_as_planned(monkeypatch) -> None:
    kube = FakeCluster()
    kube.configmaps["default-mig-parted-config"] = {"metadata": {"name": "default-mig-parted-config"},
                                                    "data": {"config.yaml": MIG_PARTED.read_text()}}
    profile = "all-1g.5gb"
    assert profile in yaml.safe_load(MIG_PARTED.read_text())["mig-configs"]
    ctx = _ctx(kube, mig_profiles={"gpu-a": profile})
    planned, result = _plan(MigConfig(), ctx)
    assert [(c.node, type(c.payload).__name__) for c in planned] == [("gpu-a", "NodeLabels"), ("gpu-a", "MigWait")]
    assert planned[0].payload.labels == {obs_mig.CONFIG_LABEL: profile}
    waited: list = []

    def wait_for(what, list_fn, done, missing, timeout, *a, **kw):   # the MIG manager's answers, as a watch sees them
        for state in ("pending", "success"):
            kube.nodes["gpu-a"]["metadata"]["labels"][obs_mig.STATE_LABEL] = state
            waited.append(done(kube.snapshot().nodes))
        return kube.snapshot().nodes
    kube.wait_for = wait_for
    with WRITE_GUARD.allow("--provision"):
        MigConfig().apply(ctx, planned, result)
    assert kube.ops == [("label", "gpu-a", {obs_mig.CONFIG_LABEL: profile})] and waited == [False, True]
    assert planned[1].payload == MigWait(profile, f"setting mig_profiles[{NODES[0]}]", "single")


def test_a_mig_label_the_operator_defaults_in_between_is_still_set_and_its_value_recorded() -> None:
    """The operator labels a MIG-capable node nvidia.com/mig.config=all-disabled on its own, in its own time (seen
    between the plan and the apply in tests/suite/test_mig.py): not a conflict; --rollback restores that value."""
    kube = FakeCluster()
    kube.configmaps["default-mig-parted-config"] = {"metadata": {"name": "default-mig-parted-config"},
                                                    "data": {"config.yaml": MIG_PARTED.read_text()}}
    ctx = _ctx(kube, mig_profiles={"gpu-a": "all-1g.5gb"})
    planned, result = _plan(MigConfig(), ctx)
    kube.nodes["gpu-a"]["metadata"]["labels"][obs_mig.CONFIG_LABEL] = "all-disabled"
    kube.wait_for = lambda *a, **kw: kube.snapshot().nodes
    with WRITE_GUARD.allow("--provision"):
        MigConfig().apply(ctx, planned, result)
    assert kube.ops == [("label", "gpu-a", {obs_mig.CONFIG_LABEL: "all-1g.5gb"})]
    assert ("node-label", f"gpu-a:{obs_mig.CONFIG_LABEL}", "all-disabled") in ctx.record.added


def test_what_a_converger_keeps_is_shown_for_its_node_by_owner_not_by_text() -> None:
    r = Result("runc-dropin", "audit")
    r.kept.append("value toolkit.env X='1'")          # cluster-wide, appended directly
    r.keep("[odd] /etc/a.toml on gpu-a: left alone", "gpu-a")   # text that looks like another node's
    r.keep("/etc/b.toml on gpu-b: left alone", "gpu-b")
    back = Result.from_json(json.loads(json.dumps(r.to_json())))
    for res in (r, back):
        assert "keep value toolkit.env" in res.plan_text("gpu-b") and "gpu-a" not in res.plan_text("gpu-b")
        assert "keep [gpu-a] [odd] /etc/a.toml" in res.plan_text("gpu-a") and "b.toml" not in res.plan_text("gpu-a")
        assert all(k in res.plan_text() for k in res.kept)


def test_a_single_nodes_plugin_restart_waits_for_that_node_only(no_waits) -> None:
    """Config right, one node advertising the wrong count: its restart and wait are its own changes (an audit
    of the other nodes sees no drift), and apply restarts and waits for that node only."""
    kube = FakeCluster()
    ctx = _ctx(kube, replicas=4)
    planned, result = _plan(TimeSlicing(), ctx)
    with WRITE_GUARD.allow("--provision"):
        TimeSlicing().apply(ctx, planned, result)
    kube.nodes["gpu-b"]["status"]["allocatable"] = {"nvidia.com/gpu": "1"}
    kube.ops.clear()
    no_waits.clear()
    planned, result = _plan(TimeSlicing(), ctx)
    assert [(c.node, type(c.payload).__name__) for c in planned] == [("gpu-b", "RolloutRestart"),
                                                                      ("gpu-b", "AdvertiseWait")]
    assert [c for c in planned if c.node in ("gpu-a", None)] == []
    with WRITE_GUARD.allow("--provision"):
        TimeSlicing().apply(ctx, planned, result)
    assert kube.ops == [("restart", NS, cl.DEVICE_PLUGIN_DS)] and ("advertise", {"gpu-b": 4}) in no_waits
