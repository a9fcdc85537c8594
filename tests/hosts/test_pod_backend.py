"""The pod backend: the manifest it creates (a pure function), exec status parsing, and the command lines
HostAccess sends through it (chroot /host)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from provision.hosts.access import HostAccess
from provision.hosts.guard import WriteGuard
from provision.hosts.pod_backend import POD_RBAC_RULES, build_pod_manifest, parse_exec_status
from provision.hosts.results import RawResult
from provision.hosts.safety import UnsafeNodeName
from provision.hosts.spec import HostSpec


def test_manifest() -> None:
    m = build_pod_manifest("gpu-node-1", namespace="gnc", image="registry.local/busybox:1.37", suffix="abc123")
    assert m["apiVersion"] == "v1" and m["kind"] == "Pod"
    meta = m["metadata"]
    assert meta["name"] == "gnc-host-gpu-node-1-abc123"
    assert meta["namespace"] == "gnc"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "gpu-node-conformance"
    assert meta["labels"]["gpu-node-conformance/node"] == "gpu-node-1"
    spec = m["spec"]
    assert spec["nodeName"] == "gpu-node-1"
    assert spec["hostPID"] is True
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["activeDeadlineSeconds"] == 3600
    (container,) = spec["containers"]
    assert container["image"] == "registry.local/busybox:1.37"
    assert container["securityContext"] == {"privileged": True}
    assert container["volumeMounts"] == [{"name": "host-root", "mountPath": "/host"}]
    assert container["command"] == ["sleep", "3600"]
    assert "limits" not in container["resources"]
    assert spec["volumes"] == [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}]
    # pure: same inputs, same manifest
    assert m == build_pod_manifest("gpu-node-1", namespace="gnc", image="registry.local/busybox:1.37", suffix="abc123")


def test_manifest_name_stays_a_dns_label_for_long_dotted_node_names() -> None:
    node = "gpu-node-with-a-very-long-name.rack-17.datacenter-west.example.com"
    m = build_pod_manifest(node, suffix="z9")
    name = m["metadata"]["name"]
    assert len(name) <= 63 and name.startswith("gnc-host-gpu-node-with") and name.endswith("-z9")
    assert "." not in name
    assert len(m["metadata"]["labels"]["gpu-node-conformance/node"]) <= 63
    assert m["spec"]["nodeName"] == node
    random_names = {build_pod_manifest("gpu-1")["metadata"]["name"] for _ in range(5)}
    assert len(random_names) == 5


def test_manifest_refuses_unsafe_input() -> None:
    with pytest.raises(UnsafeNodeName):
        build_pod_manifest("gpu-a;rm -rf /")
    with pytest.raises(ValueError, match="suffix"):
        build_pod_manifest("gpu-1", suffix="A_B")
    with pytest.raises(ValueError, match="lifetime_s"):
        build_pod_manifest("gpu-1", lifetime_s=5)


def test_rbac_rules() -> None:
    verbs = {r["resources"][0]: set(r["verbs"]) for r in POD_RBAC_RULES}
    assert {"create", "delete", "watch"} <= verbs["pods"]
    assert "create" in verbs["pods/exec"]


def test_parse_exec_status() -> None:
    assert parse_exec_status('{"metadata":{},"status":"Success"}') == 0
    failure = (
        '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit 3",'
        '"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    assert parse_exec_status(failure) == 3
    assert parse_exec_status(failure.encode()) == 3
    with pytest.raises(RuntimeError, match="executable file not found"):
        parse_exec_status('{"status":"Failure","message":"exec: executable file not found in $PATH"}')
    with pytest.raises(RuntimeError, match="without a status"):
        parse_exec_status("")


class RecordingTransport:
    """Stands in for the pod: runs each command line locally (as the pod's shell would) after checking it
    goes through chroot /host, with /host replaced by a folder standing for the host's /."""

    def __init__(self, host_root: Path) -> None:
        self.host_root = host_root
        self.commands: list[list[str]] = []

    def execute(self, command: str, timeout: float | None = None) -> RawResult:
        import subprocess

        argv = shlex.split(command)
        self.commands.append(argv)
        assert argv[:2] == ["chroot", "/host"], argv
        inner = argv[2:]
        # emulate the chroot: host-absolute paths in the arguments point into host_root
        inner = [a.replace("/etc/", f"{self.host_root}/etc/") if a.startswith("/etc/") else a for a in inner]
        p = subprocess.run(inner, capture_output=True, timeout=30)
        return RawResult(p.returncode, p.stdout, p.stderr)

    def close(self) -> None:
        pass


def test_host_access_over_pod_runs_everything_through_chroot(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=ubuntu\n")
    transport = RecordingTransport(tmp_path)
    host = HostAccess(HostSpec(backend="pod", address="gpu-1"), name="gpu-1", guard=WriteGuard(),
                      transport=transport)
    assert host.run(["echo", "hi"]).stdout == "hi\n"
    assert transport.commands[-1] == ["chroot", "/host", "echo", "hi"]
    assert host.run(["sleep", "5"], timeout=0.2).timed_out
    assert transport.commands[-1][:7] == ["chroot", "/host", "timeout", "-k", "5", "0.2", "sleep"]
    # file operations use host paths inside the chroot (not /host/...)
    assert host.read_text("/etc/os-release") == "ID=ubuntu\n"
    assert transport.commands[-1][:4] == ["chroot", "/host", "/bin/sh", "-c"]
    assert transport.commands[-1][-1] == "/etc/os-release"
    with host.guard.allow("test"):
        assert host.write_text("/etc/os-release", "ID=debian\n").changed
    assert (tmp_path / "etc" / "os-release").read_text() == "ID=debian\n"


def test_pod_backend_needs_an_api_client() -> None:
    with pytest.raises(ValueError, match="core_v1"):
        HostAccess(HostSpec(backend="pod", address="gpu-1"))


class FakeWatch:
    """Hands out prepared pod events, like kubernetes.watch.Watch().stream() does."""

    def __init__(self, *batches: list[dict[str, object]]) -> None:
        self.batches = list(batches)
        self.calls: list[dict[str, object]] = []
        self.stopped = False

    def stream(self, func: object, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.calls.append({"args": args, **kwargs})
        yield from self.batches.pop(0) if self.batches else []

    def stop(self) -> None:
        self.stopped = True


def _pod_event(phase: str, waiting: str | None = None, kind: str = "MODIFIED") -> dict[str, object]:
    from types import SimpleNamespace as NS

    statuses = [NS(state=NS(waiting=NS(reason=waiting, message="pull failed")))] if waiting else []
    return {"type": kind, "object": NS(status=NS(phase=phase, container_statuses=statuses, message=None,
                                                 reason=None))}


class FakeCore:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    def list_namespaced_pod(self, *args: object, **kwargs: object) -> None:  # only passed to the watch
        raise AssertionError("not called directly")

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: object) -> None:
        self.deleted.append((namespace, name))


def test_wait_running_uses_the_watch_and_fails_fast() -> None:
    from provision.hosts.pod_backend import PodExecBackend
    from provision.hosts.results import HostUnreachable

    backend = PodExecBackend(FakeCore(), "gpu-1", namespace="gnc")
    w = FakeWatch([_pod_event("Pending", kind="ADDED"), _pod_event("Running")])
    backend._wait_running("gnc-host-gpu-1-abc", w)
    assert w.stopped and w.calls[0]["field_selector"] == "metadata.name=gnc-host-gpu-1-abc"
    assert w.calls[0]["args"] == ("gnc",)
    with pytest.raises(HostUnreachable, match="ImagePullBackOff"):
        backend._wait_running("p", FakeWatch([_pod_event("Pending", waiting="ImagePullBackOff")]))
    with pytest.raises(HostUnreachable, match="phase Failed"):
        backend._wait_running("p", FakeWatch([_pod_event("Failed")]))
    with pytest.raises(HostUnreachable, match="deleted while starting"):
        backend._wait_running("p", FakeWatch([_pod_event("Pending", kind="DELETED")]))
    backend.start_timeout_s = 0
    with pytest.raises(HostUnreachable, match="not Running after 0s"):
        backend._wait_running("p", FakeWatch())


def test_close_deletes_the_pod_once() -> None:
    from provision.hosts.pod_backend import PodExecBackend

    core = FakeCore()
    backend = PodExecBackend(core, "gpu-1", namespace="gnc")
    backend.close()
    assert core.deleted == []
    backend.pod_name = "gnc-host-gpu-1-abc"
    backend.close()
    backend.close()
    assert core.deleted == [("gnc", "gnc-host-gpu-1-abc")]


class FleetCore(FakeCore):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[tuple[float, str]] = []

    def create_namespaced_pod(self, namespace: str, manifest: dict) -> None:
        import time

        self.created.append((time.monotonic(), manifest["metadata"]["name"]))


def test_the_fleets_pods_are_created_rate_limited_awaited_with_one_watch_and_removed_together() -> None:
    from types import SimpleNamespace as NS

    from provision.hosts.access import HostAccess
    from provision.hosts.pod_backend import PodExecBackend, close_fleet, start_fleet
    from provision.hosts.results import HostUnreachable

    core = FleetCore()
    backends = [PodExecBackend(core, f"gpu-{i}", namespace="gnc") for i in range(5)]
    watches: list[FakeWatch] = []

    def new_watch() -> FakeWatch:
        names = [name for _, name in core.created]

        def event(name: str, phase: str, waiting: str | None = None, kind: str = "MODIFIED") -> dict:
            e = _pod_event(phase, waiting, kind)
            e["object"].metadata = NS(name=name)
            return e
        batch = [event(n, "Pending", kind="ADDED") for n in names] + [event("someone-elses-pod", "Running")]
        batch += [event(n, "Running") for n in names if "gpu-3" not in n]
        batch += [event(n, "Pending", waiting="ImagePullBackOff") for n in names if "gpu-3" in n]
        watches.append(FakeWatch(batch))
        return watches[-1]

    errors = start_fleet(backends, creates_per_s=50, new_watch=new_watch)
    assert len(watches) == 1 and watches[0].calls[0]["args"] == ("gnc",)           # one watch for all the pods
    assert "app.kubernetes.io/component=host-access" in watches[0].calls[0]["label_selector"]
    times = [t for t, _ in core.created]
    assert len(times) == 5 and times[-1] - times[0] >= 4 / 50 * 0.9                 # at most 50 creates a second
    assert list(errors) == ["gpu-3"] and "ImagePullBackOff" in errors["gpu-3"]
    assert [b.pod_name is not None for b in backends] == [True, True, True, False, True]
    assert [name for _, name in core.deleted] == [n for _, n in core.created if "gpu-3" in n]  # the failed one
    with pytest.raises(HostUnreachable, match="ImagePullBackOff"):                  # its node alone is broken
        HostAccess(HostSpec(backend="pod", address="gpu-3"), name="gpu-3", transport=backends[3]).run(["true"])
    assert close_fleet(backends) == []
    assert sorted(name for _, name in core.deleted) == sorted(name for _, name in core.created)
    assert all(b.pod_name is None for b in backends)
