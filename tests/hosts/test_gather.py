"""The one-round-trip host gather (provision/hosts/gather.py, cached.py) against real folders and a real sh:
the document builder and parser with hostile node text, the read-through view answering as the host does, and
the run context's pool (identical findings to the serial, call-by-call reading; one round trip per node)."""

from __future__ import annotations

import concurrent.futures
import subprocess
from pathlib import Path

import pytest

from provision.context import RunContext
from provision.hosts.access import HostAccess
from provision.hosts.cached import GatheredHost, GatherFailed, gather
from provision.hosts.gather import (
    ContainerdSpec,
    DirSpec,
    GatherParseError,
    GatherPlan,
    gather_argv,
    parse_document,
)
from provision.hosts.results import HostCommandError, HostUnreachable
from provision.hosts.safety import UnsafePath
from provision.hosts.spec import HostSpec
from provision.settings import validate

HOSTILE_NAMES = ['q"u\'o\nte.toml', "$(touch PWNED).toml", "`touch PWNED`.toml", "a b;rm -rf x.toml", "-n.toml",
                 "*.toml", "\\.toml", "ü-ñ.toml"]
HOSTILE_TEXT = b'a = "1"\n\x00\'"$(touch PWNED)`x`\n\n\n'


def _host_folder(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    conf = root / "etc/containerd/conf.d"
    conf.mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text('version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n')
    for name in HOSTILE_NAMES:
        (conf / name).write_bytes(HOSTILE_TEXT + name.encode())
    (conf / ".hidden.toml").write_text("x = 1\n")
    (conf / "notes.txt").write_text("not read\n")
    (conf / "dangling.toml").symlink_to("/nonexistent/target")
    (root / "etc/containerd/we\"ird 'dir\n").mkdir()
    (root / "etc/containerd/we\"ird 'dir\n/inner.toml").write_bytes(b"\x00\x01")
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text('{"runtimes": {}}\n')
    (root / "var/snap/k8s/common/lock").mkdir(parents=True)
    (root / "var/snap/k8s/common/lock/.containerd-base-dir").write_text("  /var/lib/k8s-containerd \n")
    (root / "var/lib/k8s-containerd/k8s-containerd/etc/containerd/conf.d").mkdir(parents=True)
    (root / "var/lib/k8s-containerd/k8s-containerd/etc/containerd/config.toml").write_text("version = 3\n")
    return root


PLAN = GatherPlan(
    files=("/etc/docker/daemon.json", "/etc/missing.json", "/var/snap/k8s/common/lock/.containerd-base-dir"),
    probes=("/etc/containerd", "/etc/nope"),
    dirs=(DirSpec("/etc/containerd", 2, "*.toml"), DirSpec("/no/such/dir", 1)),
    commands=((("sh", "-c", 'printf "%s\\0" "$@"; echo "to stderr: $1" >&2; exit 7', "sh", "$(touch PWNED)", "x\ny"),
               10.0),
              (("printf", "%s", "no newline at the end"), 10.0)),
    containerd=ContainerdSpec("/var/snap/k8s/common/lock/.containerd-base-dir", "/var/lib/k8s-containerd",
                              "k8s-containerd", "/snap/k8s/current/bin/containerd", "/usr/bin/containerd"),
)


def _run(plan: GatherPlan, root: Path) -> bytes:
    out = subprocess.run(gather_argv(plan, str(root)), capture_output=True, check=True, cwd=root)
    assert out.stderr == b""
    return out.stdout


def test_hostile_names_and_contents_are_data(tmp_path: Path) -> None:
    root = _host_folder(tmp_path)
    doc = parse_document(PLAN, _run(PLAN, root))
    assert doc.complete
    assert not list(tmp_path.rglob("PWNED")), "node text was run as code"
    conf = "/etc/containerd/conf.d"
    for name in HOSTILE_NAMES:
        assert doc.files[f"{conf}/{name}"] == HOSTILE_TEXT + name.encode()
    assert doc.files[f"{conf}/.hidden.toml"] == b"x = 1\n"
    assert f"{conf}/notes.txt" not in doc.files                      # not matching the pattern: listed, not read
    assert doc.listings[conf]["notes.txt"] == "f" and doc.listings[conf]["dangling.toml"] == "l"
    assert doc.files["/etc/containerd/we\"ird 'dir\n/inner.toml"] == b"\x00\x01"
    assert doc.files["/etc/docker/daemon.json"] == b'{"runtimes": {}}\n'
    assert doc.files["/etc/missing.json"] is None
    assert doc.probes == {"/etc/containerd": True, "/etc/nope": False}
    assert doc.listings["/no/such/dir"] is None
    out = doc.commands[PLAN.commands[0]]
    assert (out.rc, out.stdout, out.stderr) == (7, b"$(touch PWNED)\x00x\ny\x00", b"to stderr: $(touch PWNED)\n")
    assert doc.commands[PLAN.commands[1]].stdout == b"no newline at the end"
    assert doc.containerd_base == "/var/lib/k8s-containerd"
    assert doc.files["/var/lib/k8s-containerd/k8s-containerd/etc/containerd/config.toml"] == b"version = 3\n"
    assert doc.containerd_dump is None                               # no containerd binary in this folder


def test_empty_folders_and_a_folder_of_one_dangling_link(tmp_path: Path) -> None:
    # the script skips the encoder for an empty folder; a folder whose only entry is a dangling link is not empty
    root = tmp_path / "host"
    (root / "a/empty").mkdir(parents=True)
    (root / "a/only-link").mkdir()
    (root / "a/only-link/gone.toml").symlink_to("/nonexistent/target")
    (root / "a/.only-hidden").mkdir()
    (root / "a/.only-hidden/.x.toml").write_text("y = 2\n")
    plan = GatherPlan(dirs=(DirSpec("/a", 2, "*.toml"), DirSpec("/a/empty", 1)))
    doc = parse_document(plan, _run(plan, root))
    assert doc.listings["/a/empty"] == {}
    assert doc.listings["/a/only-link"] == {"gone.toml": "l"}
    assert doc.listings["/a/.only-hidden"] == {".x.toml": "f"}
    assert doc.files["/a/.only-hidden/.x.toml"] == b"y = 2\n"
    assert doc.listings["/a"] == {"empty": "d", "only-link": "d", ".only-hidden": "d"}


@pytest.mark.parametrize("output, why", [
    (b'{"k":"f","a":"f0","o":"not base64!","rc":0}\n', "not base64"),
    (b"plain text from a shell that is not the script's\n", "not JSON"),
    (b'{"k":"ls","a":"d7","o":"","rc":0}\n', "names no planned directory"),
    (b'{"k":"f","a":"d0/5","o":"","rc":0}\n', "names no listed entry"),
    (b'{"k":"weird","a":"x","rc":0}\n', "unknown kind"),
    (b'{"k":"c","a":"c0","o":"","e":"","rc":"0; rm"}\n', "is not a number"),
])
def test_a_document_that_is_not_the_scripts_is_refused(output: bytes, why: str) -> None:
    with pytest.raises(GatherParseError, match=why):
        parse_document(PLAN, output)


def test_a_cut_document_is_not_used(tmp_path: Path) -> None:
    root = _host_folder(tmp_path)
    cut = _run(PLAN, root).rsplit(b'{"k":"end"', 1)[0]
    assert not parse_document(PLAN, cut).complete
    host = HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name="n1")

    class Cut:
        def execute(self, command: str, timeout: float | None = None):
            from provision.hosts.results import RawResult
            return RawResult(0, cut, b"")

        def close(self) -> None: ...

    host._transport = Cut()
    with pytest.raises(GatherFailed, match="stopped before its end"):
        gather(host, PLAN)


def _calls(host: HostAccess) -> list[str]:
    seen: list[str] = []
    original = host._execute

    def spy(argv, timeout=None):
        seen.append(argv[-1])
        return original(argv, timeout)

    host._execute = spy  # type: ignore[method-assign]
    return seen


def test_the_view_answers_as_the_host_does(tmp_path: Path) -> None:
    root = _host_folder(tmp_path)
    live = HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name="n1")
    view = GatheredHost(HostAccess(live.spec, name="n1"), None)
    view._doc = gather(view.host, PLAN)
    calls = _calls(view.host)
    conf = "/etc/containerd/conf.d"
    paths = [f"{conf}/{n}" for n in HOSTILE_NAMES] + [f"{conf}/.hidden.toml", f"{conf}/absent.toml",
                                                      "/etc/missing.json", "/etc/docker/daemon.json",
                                                      "/no/such/dir/file", "/etc/containerd/config.toml",
                                                      f"{conf}/dangling.toml"]
    patterns = ["/etc/containerd/conf.d/*.toml", "/etc/containerd/*/*.toml", "/etc/containerd/*/inner.toml",
                "/etc/containerd/conf.d/.h*", "/etc/containerd/conf.d/[a-c]*", "/etc/containerd/conf.d",
                "/no/such/dir/*.toml"]
    for p in paths:
        if "\n" in p:  # refused by both, before anything runs
            for ask in (view.read_bytes, live.read_bytes, view.exists, live.exists):
                with pytest.raises(UnsafePath, match="contains a newline"):
                    ask(p)
            continue
        assert view.read_bytes(p) == live.read_bytes(p), p
        assert view.exists(p) == live.exists(p), p
    for pattern in patterns:  # names with a newline included (HostAccess.glob reads NUL-separated names)
        assert view.glob(pattern) == live.glob(pattern), pattern
    assert f"{conf}/q\"u'o\nte.toml" in view.glob(f"{conf}/*.toml")
    assert calls == [], f"answered by the host although the document covers them: {calls}"
    # not covered: asked of the host
    assert view.read_text("/etc/hostname-not-gathered") is None and len(calls) == 1
    assert view.glob("/opt/*/x") == [] and len(calls) == 2


def test_a_file_the_gather_could_not_read_is_the_hosts_error(tmp_path: Path) -> None:
    root = _host_folder(tmp_path)
    doc = gather(HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name="n1"), PLAN)
    doc.file_errors["/etc/shadow"] = (1, "base64: /etc/shadow: Permission denied")
    view = GatheredHost(HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name="n1"), doc)
    with pytest.raises(HostCommandError, match="Permission denied"):
        view.read_text("/etc/shadow")


def test_a_write_drops_the_document(tmp_path: Path) -> None:
    from provision.hosts.guard import WriteGuard

    root = _host_folder(tmp_path)
    guard = WriteGuard()
    guard.enable("test")
    host = HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name="n1", guard=guard)
    view = GatheredHost(host, gather(host, PLAN))
    assert view.read_text("/etc/docker/daemon.json") == '{"runtimes": {}}\n'
    view.write_text("/etc/docker/daemon.json", "{}\n")
    assert view.document is None
    assert view.read_text("/etc/docker/daemon.json") == "{}\n"


# ------------------------------------------------------------------------------------- the run's pool (lab views)
@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from bench.host_round_trips import seed_views

    return seed_views(tmp_path_factory.mktemp("views"), 3)


def _audit(views: dict[str, str], **settings: object) -> tuple[list[str], dict[str, int]]:
    from bench.host_round_trips import _NoCluster, audit_hosts

    s = validate({"host_backend": "lab", "host_roots": views, "mode": "audit", **settings})
    ctx = RunContext(s, _NoCluster(), Path(next(iter(views.values()))).parent, tuple(views))  # type: ignore[arg-type]
    trips: dict[str, int] = dict.fromkeys(views, 0)
    original = HostAccess._execute

    def counted(self, argv, timeout=None):
        trips[self.name] += 1
        return original(self, argv, timeout)

    HostAccess._execute = counted  # type: ignore[method-assign]
    try:
        lines = audit_hosts(ctx, list(views))
    finally:
        HostAccess._execute = original  # type: ignore[method-assign]
        ctx.close()
    return lines, trips


def test_the_pool_finds_what_the_serial_reading_finds_in_one_round_trip_per_node(views: dict[str, str]) -> None:
    serial, serial_trips = _audit(views, host_gather=False)
    pooled, pooled_trips = _audit(views, host_concurrency=3)
    assert pooled == serial
    assert any(" False " in line for line in serial) and any(" True " in line for line in serial)  # both kinds
    assert pooled_trips == dict.fromkeys(views, 1), pooled_trips
    assert all(n > 5 for n in serial_trips.values()), serial_trips


def test_a_node_whose_gather_cannot_reach_it_is_broken_with_the_transports_error(views: dict[str, str],
                                                                                 tmp_path: Path) -> None:
    from bench.host_round_trips import _NoCluster

    roots = {**views, "gpu-gone": str(tmp_path / "gone")}
    s = validate({"host_backend": "lab", "host_roots": roots, "mode": "audit", "host_concurrency": 2})
    ctx = RunContext(s, _NoCluster(), tmp_path, tuple(sorted(roots)))  # type: ignore[arg-type]
    try:
        for _ in range(2):  # remembered: the same error again, no second attempt needed
            with pytest.raises(HostUnreachable, match=r"the host folder .*gone does not exist"):
                ctx.host("gpu-gone")
        assert ctx.host(next(iter(views))).document is not None  # the others are not held up
    finally:
        ctx.close()


def test_host_concurrency_is_validated() -> None:
    from provision.settings import SettingsError

    for bad in (0, -1, 1000, "8", True):
        with pytest.raises(SettingsError, match="host_concurrency"):
            validate({"host_concurrency": bad})
    assert validate({}).host_concurrency >= 2


def test_hosts_outside_the_runs_nodes_are_gathered_together_in_the_pool(views: dict[str, str]) -> None:
    """The distribution gate asks the other GPU nodes' hosts (provisioning one node of a fleet): all at once in
    the run's pool, one round trip each, and later questions are answered from those gathers."""
    import threading

    from bench.host_round_trips import _NoCluster

    names = sorted(views)
    s = validate({"host_backend": "lab", "host_roots": views, "mode": "provision", "host_concurrency": 3})
    ctx = RunContext(s, _NoCluster(), Path(views[names[0]]).parent, (names[0],))  # type: ignore[arg-type]
    threads: dict[str, list[str]] = {n: [] for n in names}
    original = HostAccess._execute

    def counted(self, argv, timeout=None):
        threads[self.name].append(threading.current_thread().name)
        return original(self, argv, timeout)

    HostAccess._execute = counted  # type: ignore[method-assign]
    try:
        ctx.prefetch_hosts(tuple(names[1:]))
        assert all(len(threads[n]) == 1 and threads[n][0].startswith("host-gather") for n in names[1:]), threads
        assert threads[names[0]] == [], "the run's own node is gathered at its first question, not before"
        for n in names:
            assert ctx.host(n).document is not None
        assert {n: len(t) for n, t in threads.items()} == dict.fromkeys(names, 1), threads
    finally:
        HostAccess._execute = original  # type: ignore[method-assign]
        ctx.close()


def test_the_distribution_gate_asks_the_other_gpu_nodes_hosts_all_at_once() -> None:
    from types import SimpleNamespace

    from provision.converge.distribution import DistributionGate

    gpu = {"metadata": {"labels": {"nvidia.com/gpu.present": "true"}}}
    nodes = {"gpu-a": gpu, "gpu-b": gpu, "gpu-c": gpu, "cpu-1": {"metadata": {"labels": {}}},
             "gpu-k3s": {"metadata": {"labels": {"nvidia.com/gpu.present": "true"}},
                         "status": {"nodeInfo": {"kubeletVersion": "v1.31.4+k3s1"}}}}
    asked: list[tuple[str, ...]] = []
    ctx = SimpleNamespace(settings=validate({"host_backend": "ssh"}), gpu_nodes=("gpu-a",),
                          kube=SimpleNamespace(snapshot=lambda: SimpleNamespace(nodes=nodes)),
                          prefetch_hosts=asked.append, host=lambda n: (_ for _ in ()).throw(OSError("no host")))
    found = DistributionGate._other_gpu_nodes(ctx, {"k8s-snap"})  # type: ignore[arg-type]
    assert asked == [("gpu-b", "gpu-c")], "one batch, only the GPU nodes whose node object names no distribution"
    assert found == {"gpu-k3s": "k3s"}


def test_xdist_workers_each_gather_only_their_own_nodes_while_asking_about_all(views: dict[str, str],
                                                                                tmp_path: Path) -> None:
    """Two workers of one read-only run (gpu_conformance/xdist_nodes.py deals them the nodes): each asks about
    every node, as the cluster-wide plan does, and each gathers exactly its own, waiting for the other's."""
    import threading

    from bench.host_round_trips import _NoCluster
    from gpu_conformance.xdist_nodes import owners, partition
    from provision.hosts.shared import SharedGathers

    names = sorted(views)
    s = validate({"host_backend": "lab", "host_roots": views, "mode": "audit", "host_concurrency": 2})
    gathered: dict[str, list[str]] = {}
    original = HostAccess._execute

    def counted(self, argv, timeout=None):
        gathered.setdefault(threading.current_thread().name.split("/")[0], []).append(self.name)
        return original(self, argv, timeout)

    def worker(index: int, mine: tuple[str, ...]) -> None:
        ctx = RunContext(s, _NoCluster(), tmp_path, tuple(names))  # type: ignore[arg-type]
        ctx.prefetch_nodes = mine
        ctx.shared_gathers = SharedGathers(tmp_path / "host-gathers", me=f"gw{index}", owners=owners(names, 2))
        ctx._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix=f"gw{index}/host-gather")
        try:
            for n in names:   # the plan: every node, in order
                assert ctx.host(n).document is not None, n
        finally:
            ctx.close()

    HostAccess._execute = counted  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=worker, args=(i, mine), name=f"gw{i}/main")
                   for i, mine in enumerate(partition(names, 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        HostAccess._execute = original  # type: ignore[method-assign]
    assert {w: sorted(ns) for w, ns in gathered.items()} == \
        {f"gw{i}": list(mine) for i, mine in enumerate(partition(names, 2))}, gathered
    assert all((tmp_path / "host-gathers" / f".{m}-gw{i}").exists() for m in ("started", "finished") for i in (0, 1))
