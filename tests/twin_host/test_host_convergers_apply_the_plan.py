"""The host convergers (and containerd-restart) apply exactly the typed changes they planned (provision/changes.py),
so `--plan` is what `--provision` does: every mutating host operation and node patch of `apply` is recorded and compared with the
plan's payloads; planning again afterwards finds nothing. In lab host views (no Kubernetes: a fake node API)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from provision.changes import FileDelete, FileWrite, KeepBaseline, NodeLabels, UnitEnable
from provision.context import RunContext
from provision.converge.hosts import PLAYBOOK_RUNC_DROPIN, DockerRuntime, HostDriver, RuncDropIn
from provision.engine import Change, Result
from provision.hosts.access import HostAccess
from provision.hosts.guard import WRITE_GUARD
from provision.record import HOST_RECORD
from provision.settings import validate

from .conftest import hp


class FakeNodes:
    """The node objects the host-driver converger reads and patches."""

    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels
        self.patches: list[tuple[str, dict]] = []

    def snapshot(self, refresh: bool = False):
        return SimpleNamespace(nodes={n: {"metadata": {"labels": dict(v)}} for n, v in self.labels.items()})

    @property
    def core(self):
        return SimpleNamespace(read_node=lambda n, **_: SimpleNamespace(metadata=SimpleNamespace(labels=self.labels[n])),
                               patch_node=self._patch)

    def guarded(self, what, fn, *args, **kw):
        return fn(*args, **kw)

    def _patch(self, node: str, body: dict, **_):
        self.patches.append((node, body["metadata"]["labels"]))
        for k, v in body["metadata"]["labels"].items():
            if v is None:
                self.labels[node].pop(k, None)
            else:
                self.labels[node][k] = v

    timeout = 5


@pytest.fixture
def recorded(monkeypatch):
    """Every mutating host operation: ('write', node, path, text) | ('remove', node, path) | ('run', node, argv);
    the suite's own bookkeeping (record, state and backups under /var/lib/gpu-node-conformance) left out."""
    ops: list[tuple] = []
    write, remove, run = HostAccess.write_text, HostAccess.remove, HostAccess.run
    books = HOST_RECORD.rsplit("/", 1)[0] + "/"

    def rec_write(self, path, text, *a, **kw):
        if not path.startswith(books):
            ops.append(("write", self.name, path, text))
        return write(self, path, text, *a, **kw)

    def rec_remove(self, path, *a, **kw):
        ops.append(("remove", self.name, path))
        return remove(self, path, *a, **kw)

    def rec_run(self, argv, *a, **kw):
        if kw.get("mutates"):
            ops.append(("run", self.name, tuple(argv)))
        return run(self, argv, *a, **kw)

    monkeypatch.setattr(HostAccess, "write_text", rec_write)
    monkeypatch.setattr(HostAccess, "remove", rec_remove)
    monkeypatch.setattr(HostAccess, "run", rec_run)
    return ops


def _expected(changes: list[Change]) -> tuple[list[tuple], list[tuple]]:
    host_ops: list[tuple] = []
    patches: list[tuple] = []
    for ch in changes:
        p = ch.payload
        if isinstance(p, FileWrite):
            host_ops.append(("write", ch.node, p.path, p.content))
            host_ops += [("run", ch.node, tuple(a)) for a in p.after]
        elif isinstance(p, FileDelete):
            host_ops.append(("remove", ch.node, p.path))
        elif isinstance(p, UnitEnable):
            host_ops.append(("run", ch.node, ("systemctl", "enable", "--now", p.unit)))
        elif isinstance(p, NodeLabels):
            patches.append((ch.node, p.labels))
        else:
            assert isinstance(p, KeepBaseline), f"an untyped change: {ch.line()}"
    return host_ops, patches


def test_every_host_converger_applies_its_typed_plan(hosts: dict[str, Path], tmp_path: Path, recorded) -> None:
    # Work for each converger: Docker's daemon.json without nvidia (spark-1), the playbooks' runc drop-in and a
    # stale =false deploy label (gpu-a), no host-driver unit anywhere.
    hp(hosts["spark-1"], "/etc/docker/daemon.json").write_text(json.dumps({"log-driver": "json-file"}))
    hp(hosts["gpu-a"], PLAYBOOK_RUNC_DROPIN).parent.mkdir(parents=True, exist_ok=True)
    hp(hosts["gpu-a"], PLAYBOOK_RUNC_DROPIN).write_text('version = 2\n')
    nodes = ("gpu-a", "gpu-b", "spark-1")
    kube = FakeNodes({n: {} for n in nodes} | {"gpu-a": {"nvidia.com/gpu.deploy.dcgm-exporter": "false"}})
    settings = validate({"host_backend": "lab", "host_roots": {n: str(hosts[n]) for n in nodes}, "mode": "provision"})
    ctx = RunContext(settings, kube, tmp_path, nodes)  # type: ignore[arg-type]
    recorded_labels: list[tuple] = []
    ctx.__dict__["record"] = SimpleNamespace(add=lambda *entry: recorded_labels.append(entry))  # the cluster record
    try:
        for conv in (RuncDropIn(), DockerRuntime(), HostDriver()):
            planned = conv.plan(ctx, Result(conv.name, "provision"))
            assert planned, f"{conv.name}: the test set up work for it"
            assert all(c.payload is not None for c in planned), [c.line() for c in planned]
            # the plan goes through the run folder as JSON (xdist) and comes back the same
            assert [Change.from_json(json.loads(json.dumps(c.to_json()))) for c in planned] == planned
            recorded.clear()
            kube.patches.clear()
            result = Result(conv.name, "provision")
            with WRITE_GUARD.allow("--provision"):
                conv.apply(ctx, planned, result)
            assert not result.node_errors, result.node_errors
            host_ops, patches = _expected(planned)
            assert recorded == host_ops, f"{conv.name} did other than it planned:\n{recorded}\n!=\n{host_ops}"
            assert kube.patches == patches, (conv.name, kube.patches, patches)
            again = conv.plan(ctx, Result(conv.name, "provision"))
            assert again == [], f"{conv.name} still differs after applying its plan: {[c.line() for c in again]}"
        # --rollback can put the old label values back
        assert ("node-label", "gpu-a:nvidia.com/gpu.deploy.dcgm-exporter", "false") in recorded_labels, recorded_labels
    finally:
        ctx.close()


def test_a_file_changed_since_the_plan_is_not_overwritten(hosts: dict[str, Path], tmp_path: Path, recorded) -> None:
    daemon = hp(hosts["spark-1"], "/etc/docker/daemon.json")
    daemon.write_text(json.dumps({"log-driver": "json-file"}))
    settings = validate({"host_backend": "lab", "host_roots": {"spark-1": str(hosts["spark-1"])}, "mode": "provision"})
    ctx = RunContext(settings, FakeNodes({"spark-1": {}}), tmp_path, ("spark-1",))  # type: ignore[arg-type]
    try:
        planned = DockerRuntime().plan(ctx, Result("docker-runtime", "provision"))
        daemon.write_text(json.dumps({"log-driver": "journald"}))          # someone edits it in between
        result = Result("docker-runtime", "provision")
        with WRITE_GUARD.allow("--provision"):
            DockerRuntime().apply(ctx, planned, result)
        assert "changed since the plan" in result.node_errors["spark-1"], result.node_errors
        assert json.loads(daemon.read_text()) == {"log-driver": "journald"}
        assert not [op for op in recorded if op[0] == "write"]
    finally:
        ctx.close()


class FakeCluster(FakeNodes):
    """FakeNodes plus what containerd-restart reads: Ready nodes, no ClusterPolicy yet, no ConfigMaps."""

    def snapshot(self, refresh: bool = False):
        ready = {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {
            "containerRuntimeVersion": "containerd://1.7.35"}}
        return SimpleNamespace(nodes={n: {"metadata": {"name": n, "labels": dict(v)}, "status": ready}
                                      for n, v in self.labels.items()}, cluster_policy=None, configmaps={})


def test_containerd_restart_applies_its_typed_plan(hosts: dict[str, Path], tmp_path: Path, recorded, monkeypatch) -> None:
    """Restart payloads (one drop-in for the fleet) and the stale drop-ins as FileDeletes: apply removes exactly
    those and restarts exactly the planned nodes, in order; planning again finds nothing."""
    from provision.changes import ContainerdRestart as Restart
    from provision.converge.operator import ContainerdRestart, restart_argv

    from .conftest import SNAP_DROP_IN

    nodes = ("gpu-a", "gpu-b")
    for n in nodes:   # the toolkit pod has written the suite's drop-in on both nodes
        hp(hosts[n], SNAP_DROP_IN).write_text('version = 2\n# nvidia\n')
    # gpu-a: the previous (playbooks') toolkit's drop-in, imported through /etc/containerd/conf.d
    cfg = hp(hosts["gpu-a"], SNAP_DROP_IN.replace("conf.d/99-nvidia.toml", "config.toml"))
    cfg.write_text(cfg.read_text().replace('imports = ["', 'imports = ["/etc/containerd/conf.d/*.toml", "', 1))
    hp(hosts["gpu-a"], "/etc/containerd/conf.d/99-nvidia.toml").write_text('version = 2\n# playbooks\n')
    settings = validate({"host_backend": "lab", "host_roots": {n: str(hosts[n]) for n in nodes}, "mode": "provision"})
    ctx = RunContext(settings, FakeCluster({n: {} for n in nodes}), tmp_path, nodes)  # type: ignore[arg-type]
    waited: list[tuple] = []
    monkeypatch.setattr(ContainerdRestart, "_wait_rendered", lambda self, ctx, dropin: waited.append(("rendered", dropin)) or "1")
    monkeypatch.setattr(ContainerdRestart, "_wait_toolkit", lambda self, ctx, node, gen=None: waited.append(("toolkit", node)))

    def restart_and_wait(self, ctx, host, node):   # the restart itself; the Ready wait is the API's
        host.run(restart_argv(host), timeout=180, mutates=True)
    monkeypatch.setattr(ContainerdRestart, "_restart_and_wait", restart_and_wait)
    conv = ContainerdRestart()
    try:
        planned = conv.plan(ctx, Result(conv.name, "provision"))
        assert [Change.from_json(json.loads(json.dumps(c.to_json()))) for c in planned] == planned
        assert [(c.node, type(c.payload).__name__) for c in planned] == [
            ("gpu-a", "ContainerdRestart"), ("gpu-a", "FileDelete"), ("gpu-b", "ContainerdRestart")], \
            [c.line() for c in planned]
        assert {c.payload for c in planned if isinstance(c.payload, Restart)} == {Restart(SNAP_DROP_IN)}
        recorded.clear()
        result = Result(conv.name, "provision")
        with WRITE_GUARD.allow("--provision"):
            conv.apply(ctx, planned, result)
        assert not result.node_errors and not result.node_failures, (result.node_errors, result.node_failures)
        argv = {n: tuple(restart_argv(ctx.host(n))) for n in nodes}
        assert recorded == [("remove", "gpu-a", "/etc/containerd/conf.d/99-nvidia.toml"), ("run", "gpu-a", argv["gpu-a"]),
                            ("run", "gpu-b", argv["gpu-b"])], recorded
        assert waited == [("rendered", SNAP_DROP_IN), ("toolkit", "gpu-a"), ("toolkit", "gpu-b")]
        again = conv.plan(ctx, Result(conv.name, "provision"))
        assert again == [], [c.line() for c in again]
    finally:
        ctx.close()
