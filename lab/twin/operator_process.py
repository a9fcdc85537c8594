"""The real GPU Operator controller, run out of the cluster for the chart release that helm installed.

The chart creates the `gpu-operator` Deployment; kwok cannot run its container, so this supervisor runs the
operator binary built from the same version's source (lab/build_operator.py) on this machine instead:
- version: the image tag of the Deployment's `gpu-operator` container (helm upgrade switches the binary,
  helm uninstall stops it);
- identity: `lab:gpu-operator` from the lab PKI, bound to exactly the roles the chart binds to the
  operator's ServiceAccount (mirrored bindings, removed with the release), so its rights are the chart's;
- environment and arguments: the container's own (OPERATOR_NAMESPACE from its fieldRef), with metrics and
  probes moved to loopback ports of this lab;
- manifests: the version's assets at /opt/gpu-operator, in a private mount namespace (nothing on the
  machine's /opt changes);
- log: logs/gpu-operator.log; state (version, pid, log, restarts, healthy): run/operator.json.
A process that exits is started again with a back-off, as kubelet restarts a crashed container; the twin
shows that on the operator's pod (restartCount, CrashLoopBackOff).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from lab import build_operator, pki
from lab.state import LabPaths

log = logging.getLogger("twin.operator")
DEPLOYMENT = "gpu-operator"
CONTAINER = "gpu-operator"
SERVICE_ACCOUNT = "gpu-operator"
MIRROR_PREFIX = "lab-gpu-operator-"
MIRROR_LABEL = "lab.gpu-conformance.io/mirrors-service-account"
BACKOFF_MAX_S = 20.0
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Desired:
    """What the chart's Deployment asks to run."""

    version: str
    namespace: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @staticmethod
    def from_deployment(dep: dict) -> Desired | None:
        md, spec = dep["metadata"], (dep.get("spec") or {})
        if md.get("deletionTimestamp") or int(spec.get("replicas", 1) or 0) == 0:
            return None
        pod = ((spec.get("template") or {}).get("spec")) or {}
        ctr = next((c for c in pod.get("containers") or [] if c.get("name") == CONTAINER), None)
        if ctr is None:
            return None
        image = ctr.get("image", "")
        version = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        env: list[tuple[str, str]] = []
        for e in ctr.get("env") or []:
            value = e.get("value", "")
            ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if ref == "metadata.namespace":
                value = md["namespace"]
            elif ref is not None:
                continue  # other fields of a pod that does not exist here
            env.append((e["name"], str(value)))
        return Desired(version, md["namespace"], tuple(ctr.get("args") or ()), tuple(env))


@dataclass
class State:
    version: str | None = None
    namespace: str | None = None
    pid: int | None = None
    log: str = ""
    restarts: int = 0
    healthy: bool = False
    last_exit: str | None = None
    error: str | None = None          # why it cannot run at all (binary not built, unknown version)
    started_at: float = 0.0
    history: list[dict] = field(default_factory=list)


def _die_with_parent() -> None:
    """The operator must not outlive the twin (lab down stops the twin's process group; a crashed twin
    must not leave an operator reconciling a lab that is gone)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# In a mount namespace of the operator's own: the version's manifests at /opt/gpu-operator, and the pod's
# namespace where kubelet projects it (controller-runtime finds its leader-election namespace there; no token:
# the operator authenticates with its kubeconfig).
_LAUNCH = ('mount -t tmpfs -o size=1m lab-opt /opt && mkdir /opt/gpu-operator && '
           'mount --bind "$1" /opt/gpu-operator && '
           'mount -t tmpfs -o size=1m lab-run /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && '
           'printf %s "$2" > /run/secrets/kubernetes.io/serviceaccount/namespace && shift 2 && exec "$@"')


def launch_argv(opt_dir: Path, namespace: str, argv: list[str]) -> list[str]:
    """argv run as in the operator's image: in a private mount namespace (nothing on the machine changes)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _LAUNCH, "sh", str(opt_dir), namespace,
            *argv]


class OperatorSupervisor:
    def __init__(self, paths: LabPaths, api: client.ApiClient, on_change: Callable[[State], None]) -> None:
        self.paths = paths
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.on_change = on_change
        self.state = State(log=str(paths.logs / "gpu-operator.log"))
        self.desired: Desired | None = None
        self.proc: subprocess.Popen | None = None
        self.probe_port = 0
        self.log_offset = 0
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.next_start = 0.0
        self.failures = 0
        threading.Thread(target=self._loop, name="twin-operator-supervisor", daemon=True).start()

    # ------------------------------------------------------------------ inputs
    def deployment_changed(self, deployments: list[dict]) -> None:
        """The chart's Deployment (or its absence) as the informer sees it now."""
        want = None
        for dep in deployments:
            if dep["metadata"]["name"] == DEPLOYMENT:
                want = Desired.from_deployment(dep)
                break
        with self.lock:
            if want != self.desired:
                log.info("operator wanted: %s", want)
                self.desired = want
                self.failures = 0
                self.next_start = 0.0
        self.wake.set()

    def status(self) -> dict:
        with self.lock:
            return asdict(self.state)

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while True:
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            try:
                self._step()
            except Exception:
                log.exception("operator supervisor step failed")

    def _step(self) -> None:
        with self.lock:
            want = self.desired
        running = self.proc is not None and self.proc.poll() is None
        if running and (want is None or (want.version, want.namespace, want.args, want.env) != self._running_as):
            self._stop("the release changed" if want else "the release is gone")
            running = False
        if self.proc is not None and not running:
            code = self.proc.returncode
            self.proc = None
            if want is not None and (want.version, want.namespace, want.args, want.env) == self._running_as:
                # It exited by itself: a crash, as kubelet sees a container exit.
                self.failures += 1
                self.next_start = time.monotonic() + min(BACKOFF_MAX_S, 2.0 ** (self.failures - 1))
                self._update(pid=None, healthy=False, restarts=self.state.restarts + 1,
                             last_exit=f"exit code {code}")
                log.warning("gpu-operator %s exited with %s; restart in %.0fs", want.version, code,
                            self.next_start - time.monotonic())
        if want is None:
            if self.state.version is not None:
                self._unmirror(self.state.namespace)
                self._update(version=None, namespace=None, pid=None, healthy=False, restarts=0, error=None)
            return
        if self.proc is None and time.monotonic() >= self.next_start:
            self._start(want)
        if self.proc is not None:
            healthy = self._probe()
            if healthy != self.state.healthy:
                if healthy:
                    self.failures = 0
                self._update(healthy=healthy)

    _running_as: tuple | None = None

    def _start(self, want: Desired) -> None:
        build = build_operator.cached(want.version)
        if build is None:
            err = (f"no gpu-operator binary for {want.version or 'an image without a tag'} in the lab cache: "
                   f"`python -m lab build` builds {', '.join(build_operator.OPERATOR_VERSIONS)} from "
                   f"../shared/upstream")
            if self.state.error != err:
                log.error(err)
                self._update(version=want.version, namespace=want.namespace, error=err, healthy=False, pid=None)
            self.next_start = time.monotonic() + 5.0
            return
        self._mirror(want.namespace)
        # Port 0: the kernel picks free loopback ports (no race with labs started beside this one); the probe's
        # port is read back from the operator's own "starting server" log line.
        self.probe_port = 0
        args = [a for a in want.args if not a.startswith(("--metrics-bind-address", "--health-probe-bind-address"))]
        argv = launch_argv(build.opt_dir, want.namespace, [
            str(build.binary), *args, "--metrics-bind-address=127.0.0.1:0", "--health-probe-bind-address=127.0.0.1:0"])
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
        env.update(dict(want.env))
        env["KUBECONFIG"] = str(self.paths.kubeconfig(pki.OPERATOR.stem))
        logf = open(self.state.log, "ab")  # noqa: SIM115 - handed to the child
        self.log_offset = logf.tell()
        logf.write(f"--- lab: starting gpu-operator {want.version} for namespace {want.namespace}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, preexec_fn=_die_with_parent)
        logf.close()
        self._running_as = (want.version, want.namespace, want.args, want.env)
        restarts = self.state.restarts if self.state.version == want.version else 0
        self._update(version=want.version, namespace=want.namespace, pid=self.proc.pid, healthy=False,
                     error=None, restarts=restarts, started_at=time.time())
        log.info("started gpu-operator %s (pid %d)", want.version, self.proc.pid)

    def _stop(self, why: str) -> None:
        proc = self.proc
        if proc is None:
            return
        log.info("stopping gpu-operator (pid %d): %s", proc.pid, why)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        self.proc = None
        self._running_as = None
        self._update(pid=None, healthy=False, last_exit=f"stopped: {why}")

    def _probe_address(self) -> int:
        """The health probe's port from the operator's log: controller-runtime logs each server it starts
        with its listener's address ({"msg": "starting server", "name": "health probe", "addr": ...})."""
        try:
            with open(self.state.log, "rb") as f:
                f.seek(self.log_offset)
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return 0
        for line in lines:
            if '"health probe"' not in line:
                continue
            with contextlib.suppress(json.JSONDecodeError, ValueError, AttributeError):
                doc = json.loads(line)
                if doc.get("msg") == "starting server" and doc.get("name") == "health probe":
                    return int(str(doc["addr"]).rsplit(":", 1)[1])
        return 0

    def _probe(self) -> bool:
        if not self.probe_port:
            self.probe_port = self._probe_address()
            if not self.probe_port:
                return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=PROBE_TIMEOUT_S) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def _update(self, **fields: object) -> None:
        with self.lock:
            for k, v in fields.items():
                setattr(self.state, k, v)
            self.state.history = [*self.state.history[-19:], {"t": time.time(), **{k: v for k, v in fields.items()
                                                                                   if k != "history"}}]
            snapshot = State(**{k: v for k, v in asdict(self.state).items()})
        tmp = self.paths.run / "operator.json.tmp"
        tmp.write_text(json.dumps(asdict(snapshot), default=str))
        os.replace(tmp, self.paths.run / "operator.json")
        self.on_change(snapshot)

    # ------------------------------------------------------------------ rights: the chart's, no more
    def _mirror(self, namespace: str) -> None:
        """Bind lab:gpu-operator to every role the chart binds to its ServiceAccount."""
        user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": pki.OPERATOR.user}

        def binds_sa(b: client.V1ClusterRoleBinding | client.V1RoleBinding) -> bool:
            return any(s.kind == "ServiceAccount" and s.name == SERVICE_ACCOUNT and (s.namespace or namespace)
                       == namespace for s in (b.subjects or []))

        meta = {"labels": {MIRROR_LABEL: f"{namespace}.{SERVICE_ACCOUNT}"}}
        for crb in self.rbac.list_cluster_role_binding().items:
            if binds_sa(crb) and not crb.metadata.name.startswith(MIRROR_PREFIX):
                self._create(lambda body: self.rbac.create_cluster_role_binding(body), {
                    "metadata": {"name": MIRROR_PREFIX + crb.metadata.name, **meta},
                    "roleRef": crb.role_ref.to_dict(), "subjects": [user]})
        for rb in self.rbac.list_namespaced_role_binding(namespace).items:
            if binds_sa(rb) and not rb.metadata.name.startswith(MIRROR_PREFIX):
                self._create(lambda body: self.rbac.create_namespaced_role_binding(namespace, body), {
                    "metadata": {"name": MIRROR_PREFIX + rb.metadata.name, "namespace": namespace, **meta},
                    "roleRef": rb.role_ref.to_dict(), "subjects": [user]})

    @staticmethod
    def _create(fn: Callable[[dict], object], body: dict) -> None:
        body["roleRef"] = {"apiGroup": body["roleRef"]["api_group"], "kind": body["roleRef"]["kind"],
                           "name": body["roleRef"]["name"]}
        try:
            fn(body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _unmirror(self, namespace: str | None) -> None:
        if namespace is None:
            return
        selector = f"{MIRROR_LABEL}={namespace}.{SERVICE_ACCOUNT}"
        with contextlib.suppress(ApiException):
            for crb in self.rbac.list_cluster_role_binding(label_selector=selector).items:
                self.rbac.delete_cluster_role_binding(crb.metadata.name)
            for rb in self.rbac.list_namespaced_role_binding(namespace, label_selector=selector).items:
                self.rbac.delete_namespaced_role_binding(rb.metadata.name, namespace)
