"""Host access through the Kubernetes API: a short-lived privileged pod pinned to the node.

The pod (``build_pod_manifest``) runs a tiny image with the host's / mounted at /host (``host_mount``: the
HostSpec's ``root``), in the host's PID namespace, pinned with ``nodeName`` and tolerating every taint.
Commands run through ``pods/exec``; the command line (built by HostAccess) starts with ``chroot /host`` (or,
with exec_mode ``path``, puts the host's folders first on PATH), so the host's own binaries and files are
used. The pod is deleted in ``close()``; its container only sleeps for ``lifetime_s`` and the pod has
``activeDeadlineSeconds``, so a crashed run cannot leave it behind for long.

The command's exit status travels in-band: the exec runs ``/bin/sh -c '/bin/sh -c "$1"; rc=$?; printf
"%s %s\\n" "$2" "$rc" >&2' sh <command> <marker>`` and reads the status from the marker line at the end of
stderr (removed from the stderr returned). The exec API's own status (the error channel) is only trusted for
"the command could not run at all": some kubelet implementations do not report exit codes there (kwok's
kubelet API, v0.8.0, turns every non-zero exit into an InternalError "cmd wait: ...: exit status N").

RBAC needed in the pod namespace: pods: create, get, list, watch, delete; pods/exec: create (and get,
for clusters that still authorize the websocket upgrade as ``get``). The namespace must allow privileged
pods (Pod Security Admission label ``pod-security.kubernetes.io/enforce: privileged``).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
import time
from typing import Any

import yaml

from provision.labels import MANAGED_BY, SUITE

from .results import HostUnreachable, RawResult
from .safety import validate_host_path, validate_node_name
from .spec import DEFAULT_POD_IMAGE, DEFAULT_POD_NAMESPACE

__all__ = [
    "POD_RBAC_RULES",
    "PodExecBackend",
    "build_pod_manifest",
    "close_fleet",
    "fleet_timings",
    "parse_exec_status",
    "split_exit_marker",
    "start_fleet",
]

COMPONENT = "host-access"
NODE_LABEL = "gpu-node-conformance/node"
CONTAINER = "host"
HOST_MOUNT = "/host"

#: The namespaced Role rules the pod backend needs (for a Role bound to the suite's identity).
POD_RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
]

_NON_LABEL = re.compile(r"[^a-z0-9-]+")

# Runs the command line ($1) in its own shell, then writes "<marker> <exit status>" as the last line of stderr
# and exits 0 (the exit status is read from that line, whatever the kubelet reports on the error channel).
_EXEC_WRAPPER = '/bin/sh -c "$1"; rc=$?; printf "%s %s\\n" "$2" "$rc" >&2; exit 0'


def _pod_name(node_name: str, suffix: str) -> str:
    stem = _NON_LABEL.sub("-", node_name.lower()).strip("-")
    # "gnc-host-" (9) + stem + "-" + suffix must stay a DNS-1123 label (<= 63)
    stem = stem[: 63 - 9 - 1 - len(suffix)].rstrip("-") or "node"
    return f"gnc-host-{stem}-{suffix}"


def _label_value(node_name: str) -> str:
    """A label value (<= 63, alphanumeric at both ends) identifying the node; long names are truncated."""
    value = node_name[:63].rstrip("-.")
    return value


def build_pod_manifest(
    node_name: str,
    *,
    namespace: str = DEFAULT_POD_NAMESPACE,
    image: str = DEFAULT_POD_IMAGE,
    suffix: str | None = None,
    lifetime_s: int = 3600,
    image_pull_secrets: list[str] | None = None,
    host_mount: str = HOST_MOUNT,
) -> dict[str, Any]:
    """The pod that gives access to ``node_name``'s host (a pure function: same inputs, same manifest).

    ``suffix`` makes the name unique per run (random when not given). ``host_mount`` is where the container
    sees the host's / (an absolute path other than /).
    """
    validate_node_name(node_name)
    validate_host_path(host_mount, "host mount")
    if host_mount.rstrip("/") == "":
        raise ValueError("host_mount must not be / (the container's own root)")
    if suffix is None:
        suffix = secrets.token_hex(3)
    if not re.fullmatch(r"[a-z0-9]{1,10}", suffix):
        raise ValueError(f"pod name suffix {suffix!r} must be 1-10 lowercase alphanumerics")
    if not isinstance(lifetime_s, int) or isinstance(lifetime_s, bool) or lifetime_s < 60:
        raise ValueError(f"lifetime_s {lifetime_s!r} must be an integer >= 60")
    labels = {
        MANAGED_BY: SUITE,
        "app.kubernetes.io/component": COMPONENT,
        NODE_LABEL: _label_value(node_name),
    }
    spec: dict[str, Any] = {
        "nodeName": node_name,
        "hostPID": True,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "activeDeadlineSeconds": lifetime_s,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # nodeName bypasses the scheduler, but NoExecute taints would still evict the pod: tolerate all
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", str(lifetime_s)],
                "securityContext": {"privileged": True},
                "volumeMounts": [{"name": "host-root", "mountPath": host_mount.rstrip("/")}],
                # requests only: commands run in this container's cgroup, a memory limit would kill them
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }
        ],
        "volumes": [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}],
    }
    if image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": _pod_name(node_name, suffix),
            "namespace": namespace,
            "labels": labels,
            "annotations": {"gpu-node-conformance/purpose": f"host access to node {node_name}"},
        },
        "spec": spec,
    }


def parse_exec_status(raw: str | bytes | None) -> int:
    """Exit status from the exec error channel (a metav1.Status as JSON/YAML).

    Success -> 0; Failure with reason NonZeroExitCode -> the ExitCode cause; anything else (the command
    could not be started, the container is gone) raises RuntimeError with the status message.
    """
    if raw is None or (isinstance(raw, str | bytes) and not raw.strip()):
        raise RuntimeError("the exec stream closed without a status (connection lost?)")
    try:
        status = json.loads(raw)
    except ValueError:
        status = yaml.safe_load(raw)
    if not isinstance(status, dict):
        raise RuntimeError(f"unexpected exec status {raw!r}")
    if status.get("status") == "Success":
        return 0
    details = status.get("details") or {}
    for cause in details.get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    raise RuntimeError(f"exec failed: {status.get('message') or status}")


def split_exit_marker(stderr: bytes, marker: str) -> tuple[int | None, bytes]:
    """The exit status from the wrapper's last ``<marker> <status>`` line of stderr, and stderr without it.

    (None, stderr) when the line is missing (the wrapper shell itself was killed or could not run).
    """
    key = marker.encode("ascii") + b" "
    at = stderr.rfind(key)
    if at < 0:
        return None, stderr
    m = re.match(rb"(\d{1,3})\n", stderr[at + len(key) :])
    if m is None:
        return None, stderr
    return int(m.group(1)), stderr[:at] + stderr[at + len(key) + m.end() :]


class PodExecBackend:
    """Runs shell command lines on a node through a privileged pod (created on first use).

    ``core_v1`` is a ``kubernetes.client.CoreV1Api``. The transport interface is ``execute(command,
    timeout)`` -> RawResult and ``close()``; HostAccess builds the command lines (with ``chroot /host``, or
    the host's folders on PATH for exec_mode ``path``). ``host_mount`` is where the pod mounts the host's /
    (the HostSpec's ``root``).
    """

    def __init__(
        self,
        core_v1: Any,
        node_name: str,
        *,
        namespace: str = DEFAULT_POD_NAMESPACE,
        image: str = DEFAULT_POD_IMAGE,
        start_timeout_s: int = 120,
        lifetime_s: int = 3600,
        image_pull_secrets: list[str] | None = None,
        host_mount: str = HOST_MOUNT,
    ) -> None:
        self.core_v1 = core_v1
        self.node_name = validate_node_name(node_name)
        self.namespace = namespace
        self.image = image
        self.start_timeout_s = start_timeout_s
        self.lifetime_s = lifetime_s
        self.image_pull_secrets = image_pull_secrets
        self.host_mount = host_mount
        self.pod_name: str | None = None
        self.fleet_error: HostUnreachable | None = None  # start_fleet could not start this node's pod
        # where the time went (monotonic seconds; the run's round-trip log sums them: fleet_timings)
        self.t_create: float | None = None   # the create request was sent
        self.t_running: float | None = None  # the pod was seen Running
        self.exec_s: list[float] = []        # each exec: request to the end of its stream
        self.close_s: float | None = None    # the delete request

    # -- pod lifecycle -------------------------------------------------------------------------------------

    def _unreachable(self, what: str, exc: BaseException | str) -> HostUnreachable:
        text = exc if isinstance(exc, str) else (getattr(exc, "reason", None) or str(exc))
        body = getattr(exc, "body", None)
        if body:
            try:
                text = f"{text}: {json.loads(body).get('message', body)}"
            except (ValueError, AttributeError):
                text = f"{text}: {body}"
        return HostUnreachable(self.node_name, f"{what}: {text}")

    def start(self) -> str:
        """Create the pod and wait (with a watch) until it is Running. Returns the pod name."""
        if self.pod_name is not None:
            return self.pod_name
        if self.fleet_error is not None:
            raise HostUnreachable(self.fleet_error.host, self.fleet_error.detail)
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        manifest = build_pod_manifest(
            self.node_name,
            namespace=self.namespace,
            image=self.image,
            lifetime_s=self.lifetime_s,
            image_pull_secrets=self.image_pull_secrets,
            host_mount=self.host_mount,
        )
        name = manifest["metadata"]["name"]
        self.t_create = time.monotonic()
        try:
            self.core_v1.create_namespaced_pod(self.namespace, manifest)
        except ApiException as e:
            raise self._unreachable(f"cannot create host-access pod {self.namespace}/{name}", e) from e
        self.pod_name = name
        try:
            self._wait_running(name, watch.Watch())
            self.t_running = time.monotonic()
        except BaseException:
            self.close()
            raise
        return name

    def _wait_running(self, name: str, w: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + self.start_timeout_s
        last = "no status yet"
        while True:
            remaining = int(deadline - time.monotonic())
            if remaining <= 0:
                raise self._unreachable(f"host-access pod {self.namespace}/{name} not Running after "
                                        f"{self.start_timeout_s}s", last)
            try:
                for event in w.stream(
                    self.core_v1.list_namespaced_pod,
                    self.namespace,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=remaining,
                ):
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        raise self._unreachable(f"host-access pod {self.namespace}/{name}", "deleted while starting")
                    phase = getattr(pod.status, "phase", None)
                    if phase == "Running":
                        w.stop()
                        return
                    if phase in ("Failed", "Succeeded"):
                        raise self._unreachable(f"host-access pod {self.namespace}/{name}",
                                                f"phase {phase}: {pod.status.message or pod.status.reason or ''}")
                    last = f"phase {phase}"
                    for cs in getattr(pod.status, "container_statuses", None) or []:
                        waiting = getattr(cs.state, "waiting", None)
                        if waiting is not None and waiting.reason:
                            last = f"phase {phase}, container {waiting.reason}: {waiting.message or ''}".strip()
                            if waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                                  "CreateContainerConfigError", "CreateContainerError"):
                                raise self._unreachable(f"host-access pod {self.namespace}/{name}", last)
            except ApiException as e:
                raise self._unreachable(f"cannot watch host-access pod {self.namespace}/{name}", e) from e

    def close(self) -> None:
        """Delete the pod (idempotent; a pod already gone is fine)."""
        if self.pod_name is None:
            return
        from kubernetes.client.exceptions import ApiException

        name, self.pod_name = self.pod_name, None
        t0 = time.monotonic()
        try:
            self.core_v1.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            self.close_s = time.monotonic() - t0
        except ApiException as e:
            if e.status != 404:
                raise self._unreachable(
                    f"cannot delete host-access pod {self.namespace}/{name} (remove it by the label "
                    f"{MANAGED_BY}={SUITE})",
                    e,
                ) from e

    # -- commands ------------------------------------------------------------------------------------------

    def execute(self, command: str, timeout: float | None = None) -> RawResult:
        """Run one shell command line in the pod (``/bin/sh -c command``) and return its status and output.

        The exit status comes from the wrapper's marker line on stderr (see the module docstring); without it,
        from the exec status. ``timeout`` is enforced by the command line itself (coreutils timeout, added by
        HostAccess); here it only bounds how long the stream is waited for (timeout + 30 s).
        """
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        name = self.start()
        marker = f"gnc-exit-status-{secrets.token_hex(8)}"
        t0 = time.monotonic()
        try:
            resp = stream(
                _exec_api(self.core_v1).connect_get_namespaced_pod_exec,
                name,
                self.namespace,
                container=CONTAINER,
                command=["/bin/sh", "-c", _EXEC_WRAPPER, "sh", command, marker],
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                binary=True,
                _preload_content=False,
            )
        except ApiException as e:
            raise self._unreachable(f"exec in host-access pod {self.namespace}/{name} failed", e) from e
        out, err = bytearray(), bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout + 30
        try:
            while resp.is_open():
                if deadline is not None and time.monotonic() > deadline:
                    raise self._unreachable(f"exec in host-access pod {self.namespace}/{name}",
                                            f"no result after {timeout + 30:.0f}s")
                resp.update(timeout=1)
                out += resp.read_stdout(timeout=0) or b""
                err += resp.read_stderr(timeout=0) or b""
            out += resp.read_stdout(timeout=0) or b""
            err += resp.read_stderr(timeout=0) or b""
            status = resp.read_channel(3)
        except HostUnreachable:
            raise
        except Exception as e:
            raise self._unreachable(f"exec stream of host-access pod {self.namespace}/{name} broke", e) from e
        finally:
            resp.close()
            self.exec_s.append(time.monotonic() - t0)
        rc, stderr = split_exit_marker(bytes(err), marker)
        try:
            status_rc = parse_exec_status(status)
        except RuntimeError as e:
            if rc is None:
                raise self._unreachable(f"exec in host-access pod {self.namespace}/{name}", str(e)) from e
            status_rc = rc
        if rc is None:
            if status_rc == 0:
                raise self._unreachable(f"exec in host-access pod {self.namespace}/{name}",
                                        "the command's exit status line is missing from its stderr")
            rc = status_rc  # the wrapper shell itself was killed (OOM: 137, ...)
        return RawResult(rc, bytes(out), stderr)

    def __enter__(self) -> PodExecBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------- fleet
def _manifest(b: PodExecBackend) -> dict[str, Any]:
    return build_pod_manifest(b.node_name, namespace=b.namespace, image=b.image, lifetime_s=b.lifetime_s,
                              image_pull_secrets=b.image_pull_secrets, host_mount=b.host_mount)


_BAD_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                "CreateContainerError")


def _pod_state(pod: Any) -> tuple[str, str]:
    """("running" | "failed" | "waiting", words) of a watched pod."""
    phase = getattr(pod.status, "phase", None) if pod.status else None
    if phase == "Running":
        return "running", "Running"
    if phase in ("Failed", "Succeeded"):
        return "failed", f"phase {phase}: {pod.status.message or pod.status.reason or ''}"
    for cs in getattr(pod.status, "container_statuses", None) or []:
        waiting = getattr(cs.state, "waiting", None)
        if waiting is not None and waiting.reason:
            words = f"phase {phase}, container {waiting.reason}: {waiting.message or ''}".strip()
            return ("failed" if waiting.reason in _BAD_WAITING else "waiting"), words
    return "waiting", f"phase {phase}"


def start_fleet(backends: list[PodExecBackend], *, creates_per_s: float = 20.0,
                timeout_s: float = 120.0, new_watch: Any = None) -> dict[str, str]:
    """Start the access pods of many nodes together: create them (at most ``creates_per_s`` per second, so the
    apiserver is not flooded), then wait for all of them with one watch of the namespace. Each backend gets its
    pod (``pod_name``) or its error (``fleet_error``: raised by its first command, so that node alone is broken).
    Returns node -> error for the nodes whose pod did not start. Pods that started are removed by
    ``close_fleet`` (or each backend's ``close``); an exception here removes the ones created so far."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    by_name: dict[str, PodExecBackend] = {}
    errors: dict[str, str] = {}
    interval = 1.0 / creates_per_s if creates_per_s > 0 else 0.0
    namespaces = {b.namespace for b in backends}
    try:
        next_at = time.monotonic()
        for b in backends:
            if b.pod_name is not None:
                continue
            manifest = _manifest(b)
            name = manifest["metadata"]["name"]
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at, time.monotonic() - interval) + interval
            b.t_create = time.monotonic()
            try:
                b.core_v1.create_namespaced_pod(b.namespace, manifest)
            except ApiException as e:
                b.fleet_error = b._unreachable(f"cannot create host-access pod {b.namespace}/{name}", e)
                errors[b.node_name] = b.fleet_error.detail
                continue
            b.pod_name = name
            by_name[name] = b
        deadline = time.monotonic() + timeout_s
        last: dict[str, str] = {}
        for ns in sorted(namespaces):
            waiting = {n for n, b in by_name.items() if b.namespace == ns}
            while waiting:
                remaining = int(deadline - time.monotonic())
                if remaining <= 0:
                    break
                core = by_name[next(iter(waiting))].core_v1
                w = new_watch() if new_watch is not None else watch.Watch()
                try:
                    for event in w.stream(core.list_namespaced_pod, ns, timeout_seconds=remaining,
                                          label_selector=f"{MANAGED_BY}={SUITE},app.kubernetes.io/component={COMPONENT}"):
                        pod = event["object"]
                        name = pod.metadata.name
                        if name not in waiting:
                            continue
                        b = by_name[name]
                        if event["type"] == "DELETED":
                            state, words = "failed", "deleted while starting"
                        else:
                            state, words = _pod_state(pod)
                        last[name] = words
                        if state == "running":
                            waiting.discard(name)
                            b.t_running = time.monotonic()
                        elif state == "failed":
                            waiting.discard(name)
                            _fail(b, name, words, errors)
                        if not waiting:
                            w.stop()
                except ApiException as e:
                    for name in sorted(waiting):
                        _fail(by_name[name], name, f"cannot watch the host-access pods: {e.reason or e}", errors)
                    waiting.clear()
            for name in sorted(waiting):
                b = by_name[name]
                _fail(b, name, f"not Running after {timeout_s:g}s: {last.get(name, 'no status yet')}", errors,
                      prefix=f"host-access pod {ns}/{name}")
    except BaseException:
        close_fleet(list(by_name.values()))
        raise
    return errors


def _fail(b: PodExecBackend, name: str, words: str, errors: dict[str, str], prefix: str | None = None) -> None:
    b.fleet_error = HostUnreachable(b.node_name, f"{prefix or f'host-access pod {b.namespace}/{name}'}: {words}")
    errors[b.node_name] = b.fleet_error.detail
    b.pod_name = None
    from kubernetes.client.exceptions import ApiException

    with contextlib.suppress(ApiException):  # best effort: the pod's own deadline removes it otherwise
        b.core_v1.delete_namespaced_pod(name, b.namespace, grace_period_seconds=0)


def close_fleet(backends: list[PodExecBackend], concurrency: int = 16) -> list[str]:
    """Delete the access pods of many nodes together (``concurrency`` deletes at once); returns the errors."""
    from concurrent.futures import ThreadPoolExecutor

    errors: list[str] = []
    started = [b for b in backends if b.pod_name is not None]
    if not started:
        return errors

    def close(b: PodExecBackend) -> None:
        try:
            b.close()
        except HostUnreachable as exc:
            errors.append(str(exc))

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(started))), thread_name_prefix="pod-close") as pool:
        list(pool.map(close, started))
    return errors


_EXEC_CLIENTS = threading.local()


def _exec_api(core_v1: Any) -> Any:
    """A CoreV1Api of this thread's own ApiClient (same configuration) for exec streams. kubernetes.stream.stream
    swaps the ApiClient's call_api for the WebSocket one while it runs and puts back what it found: two threads
    streaming on one shared client (the gathers run in a pool) can leave the websocket call_api installed, and
    every later plain request of that client then fails with "Handshake status 200 OK" (seen: operator-release
    broken in a pod-backend audit)."""
    from kubernetes import client

    if not isinstance(getattr(core_v1, "api_client", None), client.ApiClient):
        return core_v1                      # a test double
    cache = getattr(_EXEC_CLIENTS, "apis", None)
    if cache is None:
        cache = _EXEC_CLIENTS.apis = {}
    key = id(core_v1.api_client)
    api = cache.get(key)
    if api is None:
        api = cache[key] = client.CoreV1Api(client.ApiClient(core_v1.api_client.configuration))
    return api


def fleet_timings(backends: list[PodExecBackend]) -> dict[str, float | int]:
    """Where the pod backend's time went, over ``backends``: pods created, the span of the creates, the seconds
    from the first create until the last pod was Running, each pod's wait for Running (mean, max), the execs (count,
    mean, max, sum) and the deletes (count, sum). Empty when no pod was created."""
    created = [b.t_create for b in backends if b.t_create is not None]
    if not created:
        return {}
    running = [b.t_running - b.t_create for b in backends if b.t_running is not None and b.t_create is not None]
    execs = [x for b in backends for x in b.exec_s]
    closes = [b.close_s for b in backends if b.close_s is not None]
    last_running = max((b.t_running for b in backends if b.t_running is not None), default=None)

    def r(x: float) -> float:
        return round(x, 3)

    return {"pods": len(created), "create_span_s": r(max(created) - min(created)),
            "all_running_s": r(last_running - min(created)) if last_running is not None else -1,
            "wait_running_mean_s": r(sum(running) / len(running)) if running else -1,
            "wait_running_max_s": r(max(running)) if running else -1,
            "execs": len(execs), "exec_mean_s": r(sum(execs) / len(execs)) if execs else -1,
            "exec_max_s": r(max(execs)) if execs else -1, "exec_sum_s": r(sum(execs)),
            "deletes": len(closes), "delete_sum_s": r(sum(closes))}
