"""Everything one run works with: settings, the cluster, the GPU nodes, their hosts, the change record."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from provision.helm import Helm
from provision.hosts.access import HostAccess
from provision.hosts.results import HostUnreachable
from provision.hosts.shared import SharedGathers
from provision.hosts.spec import HostSpec, map_node
from provision.kube import Kube, ready
from provision.record import ClusterRecord, HostRecord
from provision.settings import Settings

if TYPE_CHECKING:
    from provision.engine import Engine

GPU_PRESENT = "nvidia.com/gpu.present"
T = TypeVar("T")


_MISSING = object()


class NoHostAccess(RuntimeError):
    """Host checks are off (host_backend none): the scenario is skipped, not failed."""


class DiscoveryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Discovery:
    nodes: tuple[str, ...]
    how: str   # which selector or option found them
    error: str | None = None


def discover_gpu_nodes(nodes: dict[str, dict], settings: Settings) -> Discovery:
    """GPU nodes, sorted: named ones (all must exist), else the GPU label, else the NFD PCI label."""
    if settings.gpu_nodes:
        missing = [n for n in settings.gpu_nodes if n not in nodes]
        if missing:
            return Discovery(tuple(sorted(settings.gpu_nodes)), "--gpu-nodes",
                             f"named GPU node(s) {missing} do not exist in the cluster "
                             f"(nodes: {', '.join(sorted(nodes)) or 'none'}); fix --gpu-nodes")
        return Discovery(tuple(sorted(settings.gpu_nodes)), "--gpu-nodes")
    for selector in (settings.node_selector, settings.fallback_selector):
        key, _, value = selector.partition("=")
        found = sorted(n for n, obj in nodes.items() if (obj["metadata"].get("labels") or {}).get(key) == value)
        if found:
            return Discovery(tuple(found), selector)
    return Discovery((), "", f"no GPU nodes found: no node has {settings.node_selector} nor "
                     f"{settings.fallback_selector} ({len(nodes)} node(s) in the cluster); install the GPU "
                     "Operator with --provision, label the nodes, or name them with --gpu-nodes")


class RunContext:
    def __init__(self, settings: Settings, kube: Kube, run_dir: Path, gpu_nodes: tuple[str, ...]) -> None:
        self.settings = settings
        self.kube = kube
        self.run_dir = run_dir
        self.gpu_nodes = gpu_nodes
        # The run's engine, set by the one place that builds both (gpu_conformance.run.open_run): a converger
        # that depends on another's per-node outcome reads it from here.
        self.engine: Engine | None = None
        self._hosts: dict[str, HostAccess] = {}
        self._host_errors: dict[str, str] = {}
        self._facts: dict[tuple[str, str], object] = {}
        self._fact_pending: dict[tuple[str, str], concurrent.futures.Future] = {}   # prefetch_facts' reads
        self._fact_names: set[str] = set()
        self._fact_pool: concurrent.futures.ThreadPoolExecutor | None = None
        # The nodes whose per-node network facts (DCGM scrapes) are read all at once at the first question; ()
        # in xdist workers: a worker reads only the nodes it runs, so no node is scraped twice.
        self.prefetch_fact_nodes: tuple[str, ...] = gpu_nodes
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        # Which nodes' hosts to gather all at once, at the first host question (prefetch_hosts); None: each
        # node when it is first asked about (xdist workers: a worker gathers only the nodes it runs).
        self.prefetch_nodes: tuple[str, ...] | None = gpu_nodes
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._prefetched = False   # the gathers of prefetch_nodes were started
        self._pending: dict[str, concurrent.futures.Future] = {}
        self._prepared: dict[str, HostAccess] = {}   # pod backend: hosts whose access pods start_fleet started
        # xdist workers of a read-only run: the gathers stored once per node for every worker (provision/hosts/
        # shared.py); None: this process keeps its gathers to itself
        self.shared_gathers: SharedGathers | None = None
        self._gather_s: list[float] = []   # wall seconds of each gather this process made (the round-trip log)

    @cached_property
    def helm(self) -> Helm:
        return Helm(self.settings, self.settings.kubeconfig)

    @cached_property
    def record(self) -> ClusterRecord:
        return ClusterRecord(self.kube)

    def host_spec(self, node: str) -> HostSpec:
        s = self.settings
        if s.host_backend == "none":
            raise NoHostAccess("host checks are off (--host-backend none)")
        if s.host_backend == "lab":
            return HostSpec(backend="lab", root=s.host_roots[node], exec_mode="path")
        if s.host_backend == "local":
            return HostSpec(backend="local", sudo=s.sudo)
        obj = self.kube.snapshot().nodes.get(node, {})
        ip = next((a["address"] for a in (obj.get("status") or {}).get("addresses") or []
                   if a.get("type") == "InternalIP"), None)
        address = map_node(node, ip, s.node_mapping, s.hosts)
        if s.host_backend == "pod":
            if node in s.host_roots:  # the node's host / is a folder where the pod's commands run (--lab)
                return HostSpec(backend="pod", address=node, pod_namespace=s.suite_namespace,
                                root=s.host_roots[node], exec_mode="path")
            return HostSpec(backend="pod", address=node, pod_namespace=s.suite_namespace)
        if s.host_backend == "ansible":
            return HostSpec(backend="ansible", address=address, ansible_inventory=s.ansible_inventory, sudo=s.sudo)
        return HostSpec(backend=s.host_backend, address=address, ssh_config=s.ssh_config,
                        ssh_identity_file=s.ssh_identity_file, user=s.ssh_user, sudo=s.sudo)

    def host(self, node: str) -> HostAccess:
        """The node's host (cached per run); HostUnreachable is remembered so the node is broken once.

        The first question to any host starts the gathers of every node in ``prefetch_nodes`` (a pool of
        ``host_concurrency``); each node's host is its gather's ``GatheredHost`` (provision/hosts/cached.py): the
        run's read-only host facts in one round trip. A gather that does not work (the host's sh differs) leaves
        the host to answer call by call; a host that cannot be reached is the node's error, as the `true` probe's
        was."""
        with self._lock:
            if node in self._host_errors:
                raise HostUnreachable(node, self._host_errors[node])
            if node in self._hosts:
                return self._hosts[node]
            if self.prefetch_nodes and not self._prefetched:
                self._start_prefetch()
            pending = self._pending.get(node)
        if pending is not None and not pending.cancel():  # not started yet: gathered here, now
            with contextlib.suppress(HostUnreachable, NoHostAccess):
                pending.result()
        return self._open_host(node)

    def _node_lock(self, node: str) -> threading.Lock:
        with self._lock:
            return self._node_locks.setdefault(node, threading.Lock())

    def _open_host(self, node: str) -> HostAccess:
        with self._node_lock(node):
            with self._lock:
                if node in self._host_errors:
                    raise HostUnreachable(node, self._host_errors[node])
                if node in self._hosts:
                    return self._hosts[node]
            try:
                with self._lock:
                    h = self._prepared.pop(node, None)
                if h is None:
                    h = HostAccess(self.host_spec(node), name=node, core_v1=self.kube.core if self.kube else None)
                opened = self._gathered(h) if self.settings.host_gather else self._probed(h)
            except HostUnreachable as exc:
                with self._lock:
                    self._host_errors[node] = exc.detail if hasattr(exc, "detail") else str(exc)
                raise
            with self._lock:
                self._hosts[node] = opened
            return opened

    @staticmethod
    def _probed(h: HostAccess) -> HostAccess:
        h.run(["true"], timeout=30)
        return h

    def _gathered(self, h: HostAccess) -> HostAccess:
        from provision.hostfacts import gather_plan
        from provision.hosts.cached import GatheredHost, GatherFailed, document, gather_output

        plan = gather_plan(h.spec, float(self.settings.health["xid_window_h"]) * 3600)

        def timed() -> bytes:
            t0 = time.monotonic()
            try:
                return gather_output(h, plan)
            finally:
                with self._lock:
                    self._gather_s.append(time.monotonic() - t0)

        try:
            if self.shared_gathers is not None:
                out, why = self.shared_gathers.obtain(h.name, timed, GatherFailed)
                if out is None:
                    raise GatherFailed(why)
                return GatheredHost(h, document(h.name, plan, out))  # type: ignore[return-value]
            return GatheredHost(h, document(h.name, plan, timed()))  # type: ignore[return-value]
        except GatherFailed as exc:
            logging.getLogger(__name__).warning("%s; reading the host call by call", exc)
            return GatheredHost(h, None, why_not=str(exc))  # type: ignore[return-value]

    def _submit_gathers(self, nodes: tuple[str, ...]) -> None:
        """(with self._lock) Gather the hosts of ``nodes`` concurrently, in their order, in the run's pool (started
        at the first call); nodes already gathered, failed or on their way are left alone. With the pod backend,
        the access pods of the new ones are started first, together (provision/hosts/pod_backend.py start_fleet),
        in one task of the pool; their gathers wait for it."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.host_concurrency,
                                                               thread_name_prefix="host-gather")
        todo = [n for n in dict.fromkeys(nodes)
                if n not in self._hosts and n not in self._host_errors and n not in self._pending]
        # access pods only for the nodes no other worker has gathered yet (the others are read from the run folder)
        pods = tuple(n for n in todo if self.shared_gathers is None or not self.shared_gathers.known(n))
        fleet = self._pool.submit(self._start_pods, pods) if self.settings.host_backend == "pod" and pods else None
        for n in todo:
            self._pending[n] = self._pool.submit(self._prefetch_one, n, fleet)

    def _start_prefetch(self) -> None:
        """(with self._lock) The gathers of prefetch_nodes, once per run. With shared gathers (xdist), the other
        workers are told this one has started on its nodes, and when all of its gathers have ended."""
        self._prefetched = True
        assert self.prefetch_nodes is not None
        self._submit_gathers(self.prefetch_nodes)
        shared = self.shared_gathers
        if shared is None:
            return
        shared.started()
        mine = [self._pending[n] for n in self.prefetch_nodes if n in self._pending]

        def when_all_ended() -> None:
            concurrent.futures.wait(mine)
            shared.finished()

        threading.Thread(target=when_all_ended, name="gathers-finished", daemon=True).start()

    def _start_pods(self, nodes: tuple[str, ...]) -> None:
        from provision.hosts.pod_backend import close_fleet, start_fleet

        prepared: dict[str, HostAccess] = {}
        for n in nodes:
            with contextlib.suppress(Exception):  # a node without a spec is asked (and broken) on its own
                prepared[n] = HostAccess(self.host_spec(n), name=n, core_v1=self.kube.core)
        backends = [h._transport for h in prepared.values()]
        # Ctrl-C: the run's close() deletes them; should the interpreter exit without it, this does (a pod
        # already deleted is skipped), and each pod's activeDeadlineSeconds is the last resort
        atexit.register(close_fleet, backends)
        start_fleet(backends, creates_per_s=self.settings.host_pod_creates_per_s)  # type: ignore[arg-type]
        with self._lock:
            self._prepared.update(prepared)

    def _prefetch_one(self, node: str, fleet: concurrent.futures.Future | None = None) -> None:
        if fleet is not None:
            concurrent.futures.wait([fleet])
        with contextlib.suppress(HostUnreachable, NoHostAccess):
            self._open_host(node)

    def prefetch_hosts(self, nodes: tuple[str, ...] | None = None) -> None:
        """Gather the hosts of ``nodes`` (default prefetch_nodes) now, all at once in the run's pool, and wait for
        them: also nodes outside the run's GPU nodes (the distribution gate asks the other GPU nodes' hosts)."""
        nodes = self.prefetch_nodes if nodes is None else tuple(nodes)
        if not nodes:
            return
        with self._lock:
            if nodes == self.prefetch_nodes and not self._prefetched:
                self._start_prefetch()
            else:
                self._submit_gathers(nodes)
            pending = [self._pending[n] for n in nodes if n in self._pending]
        concurrent.futures.wait(pending)

    def host_fact(self, node: str, name: str, read: Callable[[], T],
                  remember: tuple[type[Exception], ...] = (NoHostAccess, HostUnreachable)) -> T:
        """A fact about the node's host (e.g. its nvidia-smi query), read once per node and run. An error of a
        `remember` type is remembered too, and raised as a new exception each time: re-raising the cached object
        would keep the frames of every raise alive through its traceback (at 1000 nodes, megabytes per scenario).
        A read that prefetch_facts started for it is waited for (or, not started yet, done here instead)."""
        key = (node, name)
        with self._lock:
            hit = self._facts.get(key, _MISSING)
            pending = self._fact_pending.pop(key, None) if hit is _MISSING else None
        if pending is not None and not pending.cancel():
            concurrent.futures.wait([pending])
            with self._lock:
                hit = self._facts.get(key, _MISSING)
        return self._fact(key, read, remember) if hit is _MISSING else self._raise_or_return(hit)

    def _fact(self, key: tuple[str, str], read: Callable[[], T], remember: tuple[type[Exception], ...]) -> T:
        try:
            hit: object = read()
        except remember as exc:
            hit = exc.with_traceback(None)
        with self._lock:
            hit = self._facts.setdefault(key, hit)
        return self._raise_or_return(hit)

    @staticmethod
    def _raise_or_return(hit: object):
        if isinstance(hit, Exception):
            raise type(hit)(*hit.args) from None
        return hit

    def prefetch_facts(self, name: str, nodes: tuple[str, ...], read: Callable[[str], object],
                       remember: tuple[type[Exception], ...]) -> None:
        """Start reading the fact ``name`` of every node in ``nodes`` at once, in a pool of ``host_concurrency``
        (once per name and run; host_fact then waits for each node's read). For per-node network reads that are
        not host commands, such as the DCGM exporters' scrapes: one after another, 1000 scrapes through a busy
        apiserver's pod proxy at 0.5 s each were eight minutes of the main thread waiting."""
        with self._lock:
            if name in self._fact_names:
                return
            self._fact_names.add(name)
            if self._fact_pool is None:
                self._fact_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.settings.host_concurrency, thread_name_prefix="fact-read")
            for node in nodes:
                key = (node, name)
                if key not in self._facts and key not in self._fact_pending:
                    self._fact_pending[key] = self._fact_pool.submit(
                        self._prefetched_fact, key, functools.partial(read, node), remember)

    def _prefetched_fact(self, key: tuple[str, str], read: Callable[[], object],
                         remember: tuple[type[Exception], ...]) -> None:
        with contextlib.suppress(Exception):  # not remembered (e.g. under --provision): host_fact reads again
            self._fact(key, read, remember)

    def _log_round_trips(self) -> None:
        """Host round trips per node of this process, appended to the file GPU_CONFORMANCE_HOST_LOG names (the
        bench counts them: bench/run.py)."""
        import json
        import os

        path = os.environ.get("GPU_CONFORMANCE_HOST_LOG")
        if not path or not self._hosts:
            return
        trips = {n: getattr(getattr(h, "host", h), "round_trips", 0) for n, h in sorted(self._hosts.items())}
        live = {n: h.live_calls for n, h in sorted(self._hosts.items()) if getattr(h, "live_calls", None)}
        entry: dict = {"pid": os.getpid(), "worker": os.environ.get("PYTEST_XDIST_WORKER"), "round_trips": trips,
                       "not_gathered": live}
        hosts = [getattr(h, "host", h) for h in (*self._hosts.values(), *self._prepared.values())]
        pods = [h._transport for h in hosts if h.spec.backend == "pod"]
        if pods:
            from provision.hosts.pod_backend import fleet_timings

            entry["pod_timings"] = fleet_timings(pods)  # type: ignore[arg-type]
        if self._gather_s:
            entry["gather_s"] = {"count": len(self._gather_s), "sum": round(sum(self._gather_s), 3),
                                 "max": round(max(self._gather_s), 3)}
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def host_record(self, node: str) -> HostRecord:
        return HostRecord(self.host(node))

    def node_ready(self, node: str) -> bool:
        obj = self.kube.snapshot().nodes.get(node)
        return bool(obj) and ready(obj)

    def close(self) -> None:
        """Stop the gathers and release every host; the pod backend's access pods are deleted together."""
        for pool in (self._pool, self._fact_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        hosts = [getattr(h, "host", h) for h in (*self._hosts.values(), *self._prepared.values())]
        pods = [h._transport for h in hosts if h.spec.backend == "pod"]
        if pods:
            from provision.hosts.pod_backend import close_fleet

            with contextlib.suppress(Exception):  # best effort; each pod also has its activeDeadlineSeconds
                close_fleet(pods)  # type: ignore[arg-type]
        self._log_round_trips()
        for h in hosts:
            with contextlib.suppress(Exception):  # closing is best effort at the end of a run
                h.close()
