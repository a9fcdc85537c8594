"""Kubernetes access for the suite: connect with a clear error, read the cluster with a constant number of
LIST requests, wait for states with WATCH, and write only through the write guard with optimistic
concurrency.

Nothing here knows whether the cluster is the lab or production.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import tenacity
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from provision.hosts.guard import WRITE_GUARD
from provision.labels import MANAGED_BY as MANAGED_BY  # re-exported; their home is provision/labels.py
from provision.labels import SUITE as SUITE
from provision.settings import Settings, SettingsError

CP_GROUP, CP_VERSION, CP_PLURAL, CP_NAME = "nvidia.com", "v1", "clusterpolicies", "cluster-policy"
WAIT_LOG_ENV = "GPU_CONFORMANCE_WAIT_LOG"  # JSON-lines file: when each wait noticed its state (benchmarks)


def _log_wait(what: str, started: float) -> None:
    """Append {"what", "t", "started"} (epoch seconds) to $GPU_CONFORMANCE_WAIT_LOG, if it is set."""
    path = os.environ.get(WAIT_LOG_ENV)
    if path:
        line = json.dumps({"what": what, "t": time.time(), "started": started}) + "\n"
        with open(path, "a") as f:  # one short append per line: safe across xdist workers
            f.write(line)


# A wait's predicate reads every object it watches (6000 pods at 1000 nodes: 20 ms), and a rollout brings thousands of
# events: evaluated after each, the waits were most of the suite's CPU. A predicate that takes SLOW_CHECK_S of CPU or more
# is evaluated at most once per CHECK_EVERY x its last cost during a burst, and the watch is then re-opened (from
# where it was, no LIST) at least every STALE_S, so that the last event of a burst is evaluated within that long.
# A cheaper one (a small fleet's) is evaluated after every event, as before.
SLOW_CHECK_S = 0.002
CHECK_EVERY = 10
CHECK_GAP_MAX_S = 1.0
STALE_S = 2.0


class _Pacer:
    """When a wait evaluates its predicate: after every event while that is cheap; see CHECK_EVERY."""

    def __init__(self) -> None:
        self.gap = 0.0
        self.last = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.gap

    @property
    def slow(self) -> bool:
        return self.gap > 0

    def check(self, done: Callable[[dict[str, dict]], bool], objs: dict[str, dict]) -> bool:
        t0 = time.thread_time()   # the predicate's own CPU: a thread descheduled on a busy machine is not slow
        ok = done(objs)
        self.last = time.monotonic()
        cost = time.thread_time() - t0
        self.gap = 0.0 if cost < SLOW_CHECK_S else min(CHECK_GAP_MAX_S, CHECK_EVERY * cost)
        return ok


@dataclass
class WatchResume:
    """What one wait saw (its objects and the resourceVersion it got to), for the next wait on the same LIST to go
    on from: a wait re-opened every few seconds (provision/converge/settle.py) LISTed 6000 pods each time."""
    objs: dict[str, dict] = field(default_factory=dict)
    rv: str | None = None


class ClusterUnreachable(RuntimeError):
    """The apiserver could not be reached or refused the credentials."""


class WaitTimeout(RuntimeError):
    """A wait ran out; the message lists what is still missing and diagnostics."""


def connect(settings: Settings) -> client.ApiClient:
    """An API client for the configured kubeconfig/context, checked with one quick /version request."""
    # Retries and pool size must be on the configuration before the client is made: the client builds its
    # connection pool from them once, so setting them on api.configuration afterwards has no effect.
    cfg = client.Configuration()
    cfg.retries = urllib3.Retry(total=2, connect=2, read=0, backoff_factor=0.2)
    cfg.connection_pool_maxsize = 16
    try:
        api = config.new_client_from_config(config_file=settings.kubeconfig, context=settings.context,
                                            client_configuration=cfg)
    except ConfigException as exc:
        msg = str(exc)
        if settings.context and "context" in msg.lower():
            raise SettingsError(
                f"invalid setting context={settings.context!r}: the kubeconfig has no such context "
                f"(list them with `kubectl config get-contexts`)") from exc
        raise SettingsError(f"cannot load the kubeconfig ({settings.kubeconfig or '$KUBECONFIG or ~/.kube/config'}): "
                            f"{msg}; pass --kubeconfig PATH") from exc
    except FileNotFoundError as exc:
        raise SettingsError(f"invalid setting kubeconfig={settings.kubeconfig!r}: no such file") from exc
    t = settings.timeout("api")
    try:
        client.VersionApi(api).get_code(_request_timeout=(min(t, 5.0), t))
    except ApiException as exc:
        if exc.status in (401, 403):
            raise ClusterUnreachable(f"the apiserver {api.configuration.host} refused the credentials of the "
                                     f"kubeconfig ({exc.status} {exc.reason})") from exc
        raise ClusterUnreachable(f"the apiserver {api.configuration.host} answered {exc.status} {exc.reason}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ClusterUnreachable(
            f"cannot reach the Kubernetes API at {api.configuration.host}: {_root_cause(exc)}; check the "
            "kubeconfig's server address, that the cluster is up, and your network/VPN") from exc
    return api


def _root_cause(exc: BaseException) -> str:
    while getattr(exc, "reason", None) is not None and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return str(exc)


def ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in ((obj.get("status") or {}).get("conditions") or []))


def ready_message(obj: dict) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"Ready={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip()
    return "no Ready condition"


POD_SPEC_KEPT = ("nodeName", "runtimeClassName", "nodeSelector", "restartPolicy")
LIST_PAGE = 500  # items per LIST page (Kube._list)


def slim_pod_dict(d: dict) -> dict:
    """json object_hook for a pod list: keep what the suite reads (metadata, where a pod runs, its status).
    managedFields and a pod spec's containers, volumes and tolerations are most of a list of 5000 operand pods
    and are never read; dropping them while parsing keeps them from ever being held all at once."""
    d.pop("managedFields", None)
    if "containers" in d and ("nodeName" in d or "restartPolicy" in d):  # a pod's spec
        return {k: d[k] for k in POD_SPEC_KEPT if k in d}
    return d


def slim_tree(obj: Any, hook: Callable[[dict], dict]) -> Any:
    """``hook`` applied to every dict of an already parsed object, innermost first, as json.loads's object_hook
    applies it while parsing (a watch event arrives parsed)."""
    if isinstance(obj, dict):
        return hook({k: slim_tree(v, hook) for k, v in obj.items()})
    if isinstance(obj, list):
        return [slim_tree(v, hook) for v in obj]
    return obj


def slim_node_dict(d: dict) -> dict:
    """json object_hook for a node list: no managedFields, no status.images (on real nodes the longest part)."""
    d.pop("managedFields", None)
    if "nodeInfo" in d:  # a node's status
        d.pop("images", None)
    return d


@dataclass
class Snapshot:
    """The cluster-wide state one run reads: each kind listed once, shared by every scenario."""

    nodes: dict[str, dict] = field(default_factory=dict)
    pods: list[dict] = field(default_factory=list)                # operator namespace
    daemonsets: dict[str, dict] = field(default_factory=dict)     # operator namespace
    deployments: dict[str, dict] = field(default_factory=dict)    # operator namespace
    configmaps: dict[str, dict] = field(default_factory=dict)     # operator namespace
    runtimeclasses: dict[str, dict] = field(default_factory=dict)
    cluster_policy: dict | None = None
    version: str = ""
    taken_at: float = 0.0

    _by_app: dict[str, list[dict]] | None = field(default=None, repr=False)
    _by_app_node: dict[tuple[str, str], dict] | None = field(default=None, repr=False)

    def _index(self) -> None:
        """Pods by app label and by (app, node), built once: a check per node must not scan every pod (at 1000
        nodes that is 5000 pods times 5000 lookups)."""
        by_app: dict[str, list[dict]] = {}
        by_app_node: dict[tuple[str, str], dict] = {}
        for p in self.pods:
            app = (p["metadata"].get("labels") or {}).get("app")
            if app is None:
                continue
            by_app.setdefault(app, []).append(p)
            node = (p.get("spec") or {}).get("nodeName")
            if node and not p["metadata"].get("deletionTimestamp"):
                by_app_node.setdefault((app, node), p)  # the first live one, in list order
        self._by_app, self._by_app_node = by_app, by_app_node

    def pods_of(self, app: str) -> list[dict]:
        if self._by_app is None:
            self._index()
        return list((self._by_app or {}).get(app, []))

    def pod_on(self, app: str, node: str) -> dict | None:
        if self._by_app_node is None:
            self._index()
        return (self._by_app_node or {}).get((app, node))


class Kube:
    """The suite's one door to the cluster."""

    def __init__(self, api: client.ApiClient, settings: Settings) -> None:
        self.api = api
        self.settings = settings
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.nodeapi = client.NodeV1Api(api)
        self.timeout = (min(settings.timeout("api"), 5.0), settings.timeout("api"))
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self.writes: list[str] = []  # what this process changed, for summary.json and the report

    # --------------------------------------------------------------- reads
    def _list(self, fn: Callable[..., Any], *args: Any, slim: Callable[[dict], dict] | None = None,
              **kw: Any) -> list[dict]:
        return self._list_at(fn, *args, slim=slim, **kw)[0]

    def _list_at(self, fn: Callable[..., Any], *args: Any, slim: Callable[[dict], dict] | None = None,
                 **kw: Any) -> tuple[list[dict], str]:
        """Every item of a LIST and the list's resourceVersion, in pages of LIST_PAGE (client-go's pager size): a
        1000-node cluster's operator namespace has 6000 pods, 68 MB of JSON, and one unpaged LIST held the body,
        its decoded copy and the parsed items at once (a 336 MB process before the first scenario). A continue
        token that expired between pages (410 Gone) is answered by one unpaged LIST, as client-go's pager does."""
        items: list[dict] = []
        token, paging = None, {"limit": LIST_PAGE}
        while True:
            try:
                resp = fn(*args, _preload_content=False, _request_timeout=self.timeout, **paging,
                          **({"_continue": token} if token else {}), **kw)
            except ApiException as exc:
                if exc.status != 410 or token is None:
                    raise
                items, token, paging = [], None, {}  # the token expired: the whole list, unpaged, from the start
                continue
            page = json.loads(resp.data, object_hook=slim)
            del resp  # the page's body, before the next one is read
            items += page.get("items") or []
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, meta.get("resourceVersion", "")

    def snapshot(self, refresh: bool = False) -> Snapshot:
        with self._lock:
            if self._snapshot is None or refresh:
                ns = self.settings.namespace
                s = Snapshot(taken_at=time.time())
                s.nodes = {n["metadata"]["name"]: n for n in self._list(self.core.list_node, slim=slim_node_dict)}
                s.pods = self._list(self.core.list_namespaced_pod, ns, slim=slim_pod_dict)
                s.daemonsets = {d["metadata"]["name"]: d for d in self._list(self.apps.list_namespaced_daemon_set, ns)}
                s.deployments = {d["metadata"]["name"]: d for d in self._list(self.apps.list_namespaced_deployment, ns)}
                s.configmaps = {c["metadata"]["name"]: c for c in self._list(self.core.list_namespaced_config_map, ns)}
                s.runtimeclasses = {r["metadata"]["name"]: r for r in self._list(self.nodeapi.list_runtime_class)}
                s.cluster_policy = self.get_cluster_policy()
                self._snapshot = s
            return self._snapshot

    def list_nodes(self) -> dict[str, dict]:
        """Every Node by name, listed now (slimmed): the snapshot's copy may predate what a --provision did."""
        return {n["metadata"]["name"]: n for n in self._list(self.core.list_node, slim=slim_node_dict)}

    def get_cluster_policy(self) -> dict | None:
        try:
            return self.custom.get_cluster_custom_object(CP_GROUP, CP_VERSION, CP_PLURAL, CP_NAME,
                                                         _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pod_log(self, name: str, namespace: str, tail: int | None = None, container: str | None = None) -> str:
        """A container's log; `container` names it in a pod of several (the operator's device plugin pod has
        four: without the name the apiserver answers 400 "a container name must be specified")."""
        try:
            return self.core.read_namespaced_pod_log(name, namespace, tail_lines=tail, container=container,
                                                     _request_timeout=self.timeout)
        except ApiException as exc:
            return f"(log unavailable: {exc.status} {exc.reason})"

    def events_for(self, name: str, namespace: str) -> list[str]:
        try:
            evs = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}",
                                                  _request_timeout=self.timeout).items
        except ApiException:
            return []
        return [f"{e.type} {e.reason}: {e.message}" for e in evs]

    # --------------------------------------------------------------- writes (guarded)
    def guarded(self, action: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        WRITE_GUARD.check(action)
        result = fn(*args, _request_timeout=self.timeout, **kw)
        self.writes.append(action)
        return result

    def workload_write(self, action: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """The audit's one exception to read-only: its own test pods in its own namespace."""
        if not self.settings.workload:
            WRITE_GUARD.check(action + " (workload tests are off: --no-workload)")
        return fn(*args, _request_timeout=self.timeout, **kw)

    def update_with_retry(self, action: str, read: Callable[[], dict], mutate: Callable[[dict], dict | None],
                          write: Callable[[dict], Any], attempts: int = 5) -> bool:
        """Read-modify-write with the object's resourceVersion; on 409 re-read and re-apply the change so
        that whatever someone else wrote meanwhile is kept. Returns True when a write happened."""
        def once() -> bool:
            current = read()
            desired = mutate(json.loads(json.dumps(current)))
            if desired is None:
                return False
            WRITE_GUARD.check(action)
            write(desired)
            self.writes.append(action)
            return True

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, ApiException) and e.status == 409),
            stop=tenacity.stop_after_attempt(attempts), wait=tenacity.wait_incrementing(0.05, 0.05), reraise=True)
        return retrying(once)

    # --------------------------------------------------------------- waits (watch, no sleeps)
    def wait_for(self, what: str, list_fn: Callable[..., Any], done: Callable[[dict[str, dict]], bool],
                 missing: Callable[[dict[str, dict]], Iterable[str]], timeout: float,
                 diagnostics: Callable[[dict[str, dict]], str] = lambda _: "", *args: Any,
                 slim: Callable[[dict], dict] | None = None, resume: WatchResume | None = None,
                 **kw: Any) -> dict:
        """LIST once, then WATCH until done(objects) holds; resumes after a dropped watch (apiserver restart)
        from the last resourceVersion, re-listing if that has expired. Times out with what is missing.
        ``slim`` (slim_pod_dict, slim_node_dict) is applied to every object kept, listed or watched, for
        predicates that read only what it keeps: a wait on 6000 whole pods held 1.2 GB at 1000 nodes. With
        ``resume`` it starts from what an earlier wait on the same LIST saw, and leaves what it saw there. A slow
        predicate is evaluated less often than after every event (_Pacer)."""
        started = time.time()
        deadline = time.monotonic() + timeout
        seen = resume if resume is not None else WatchResume()
        pace = _Pacer()
        while True:
            remaining = deadline - time.monotonic()
            try:
                if seen.rv is None:
                    items, rv = self._list_at(list_fn, *args, slim=slim, **kw)
                    seen.objs, seen.rv = {o["metadata"]["name"]: o for o in items}, rv
                if pace.check(done, seen.objs):
                    _log_wait(what, started)
                    return seen.objs
                if remaining <= 0:
                    break
                w = watch.Watch()
                opened_slow = pace.slow
                stream_s = min(remaining, STALE_S) if opened_slow else remaining
                for ev in w.stream(list_fn, *args, resource_version=seen.rv, allow_watch_bookmarks=True,
                                   timeout_seconds=max(1, int(stream_s) + 1), _request_timeout=stream_s + 5, **kw):
                    obj = ev["raw_object"]
                    if ev["type"] == "ERROR":
                        seen.rv = None
                        break
                    seen.rv = obj["metadata"].get("resourceVersion", seen.rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    if ev["type"] == "DELETED":
                        seen.objs.pop(obj["metadata"]["name"], None)
                    else:
                        seen.objs[obj["metadata"]["name"]] = slim_tree(obj, slim) if slim else obj
                    if pace.due() and pace.check(done, seen.objs):
                        w.stop()
                        _log_wait(what, started)
                        return seen.objs
                    if pace.slow and not opened_slow:
                        # the predicate turned slow (or one evaluation was, on a loaded machine) in a watch opened
                        # for the whole timeout: an event it skips might be the last one, so re-open it short
                        w.stop()
                        break
                    if time.monotonic() > deadline:
                        w.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:
                    seen.rv = None
                    continue
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            except (urllib3.exceptions.HTTPError, OSError):
                # apiserver restarted or connection dropped: resume the watch from where it was.
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if time.monotonic() > deadline:
                break
        still = sorted(missing(seen.objs))
        diag = diagnostics(seen.objs)
        raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; still missing: "
                          f"{', '.join(still) or '(nothing listed)'}" + (f"\n{diag}" if diag else ""))
