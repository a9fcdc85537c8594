"""The lab's control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler on loopback.

TLS from lab/pki.py, RBAC authorization, service-account keys, and an audit log of every request at
Metadata level (JSON lines) so tests can prove which requests the suite made and as whom.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import tenacity
import yaml

from lab import pki, processes
from lab.kubeconfig import write_kubeconfig
from lab.state import LabPaths

SERVICE_CIDR = "10.96.0.0/16"  # allocated from, never connected to
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class LabError(RuntimeError):
    pass


def server_url(ports: dict[str, int]) -> str:
    return f"https://127.0.0.1:{ports['apiserver']}"


def prepare(paths: LabPaths, ports: dict[str, int]) -> None:
    """Certificates, kubeconfigs and the audit policy (idempotent)."""
    paths.ensure()
    pki.create_all(paths.pki, ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                               "kubernetes.default.svc", "10.96.0.1"))
    ca = paths.pki / "ca.crt"
    for ident in pki.CLIENT_IDENTITIES:
        write_kubeconfig(paths.kubeconfig(ident.stem), server_url(ports), ca,
                         paths.pki / f"{ident.stem}.crt", paths.pki / f"{ident.stem}.key", user=ident.user)
    (paths.root / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))


def etcd_argv(bin_dir: Path, paths: LabPaths, ports: dict[str, int]) -> list[str]:
    client = f"http://127.0.0.1:{ports['etcd_client']}"
    peer = f"http://127.0.0.1:{ports['etcd_peer']}"
    return [
        str(bin_dir / "etcd"), "--name", "lab", "--data-dir", str(paths.etcd_data),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"lab={peer}", "--log-level", "warn",
        "--quota-backend-bytes", str(2 * 1024**3), "--unsafe-no-fsync",
    ]


def apiserver_argv(bin_dir: Path, paths: LabPaths, ports: dict[str, int]) -> list[str]:
    p = paths.pki
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd_client']}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=false",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        f"--audit-policy-file={paths.root / 'audit-policy.yaml'}",
        f"--audit-log-path={paths.audit_log}", "--audit-log-format=json",
        "--audit-log-maxsize=500", "--audit-log-maxbackup=2", "--audit-log-mode=blocking",
        "--profiling=false", "--v=1",
    ]


def controller_manager_argv(bin_dir: Path, paths: LabPaths) -> list[str]:
    kc = paths.kubeconfig(pki.CONTROLLER_MANAGER.stem)
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        f"--service-account-private-key-file={paths.pki / 'sa.key'}",
        f"--root-ca-file={paths.pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        "--leader-elect=false", "--secure-port=0",
        "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-persistentvolume-binder",
        # kwok renews the 1000 lab nodes' leases every 10 s, but on a loaded 2-core machine it falls more than 40 s behind:
        # with 40 s (kubeadm's) 59 of 1000 nodes went Unknown and the node controller marked their pods not ready,
        # whose churn loaded the machine further. A real kubelet does not lag like that; the lab's kubelet does.
        "--node-monitor-grace-period=180s",
        "--concurrent-daemonset-syncs=5", "--kube-api-qps=200", "--kube-api-burst=400", "--v=1",
    ]


def scheduler_argv(bin_dir: Path, paths: LabPaths) -> list[str]:
    kc = paths.kubeconfig(pki.SCHEDULER.stem)
    cfg = paths.root / "scheduler-config.yaml"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kc), "qps": 200, "burst": 400},
        "leaderElection": {"leaderElect": False},
    }))
    return [str(bin_dir / "kube-scheduler"), f"--config={cfg}", f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}", "--secure-port=0", "--v=1"]


def _ssl_context(paths: LabPaths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    ctx.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    return ctx


def get_json(paths: LabPaths, ports: dict[str, int], path: str, timeout: float = 2.0):
    with urllib.request.urlopen(server_url(ports) + path, context=_ssl_context(paths), timeout=timeout) as r:
        body = r.read().decode()
    return json.loads(body) if body.startswith(("{", "[")) else body


class NotYet(Exception):
    """A lab component is not answering yet (retried until its deadline)."""


def poll(what: str, check: Callable[[], None], timeout: float, every: float,
         tail: Callable[[], str] | None = None) -> None:
    """Call ``check`` every ``every`` s until it returns without NotYet, for at most ``timeout`` s; then LabError
    with ``what``, the last reason and ``tail()`` (a log). Any other exception (a process that exited) stops at
    once."""
    try:
        for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception_type(NotYet),
                                         stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(every),
                                         reraise=True):
            with attempt:
                check()
    except NotYet as exc:
        raise LabError(f"{what} after {timeout:.0f}s ({exc})" + (f":\n{tail()}" if tail else "")) from None


def wait_apiserver(paths: LabPaths, ports: dict[str, int], timeout: float = 90.0) -> None:
    def ready() -> None:
        if processes.running(paths, "kube-apiserver") is None:
            raise LabError("kube-apiserver exited:\n" + processes.log_tail(paths, "kube-apiserver"))
        try:
            if get_json(paths, ports, "/readyz") != "ok":
                raise NotYet("/readyz not ok")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            raise NotYet(str(exc)) from None

    poll("kube-apiserver not ready", ready, timeout, 0.2, lambda: processes.log_tail(paths, "kube-apiserver"))


def wait_etcd(paths: LabPaths, ports: dict[str, int], timeout: float = 30.0) -> None:
    def healthy() -> None:
        if processes.running(paths, "etcd") is None:
            raise LabError("etcd exited:\n" + processes.log_tail(paths, "etcd"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['etcd_client']}/health", timeout=1) as r:
                if json.loads(r.read()).get("health") != "true":
                    raise NotYet("not healthy")
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            raise NotYet(str(exc)) from None

    poll("etcd not healthy", healthy, timeout, 0.1, lambda: processes.log_tail(paths, "etcd"))


def _start_tried(paths: LabPaths, name: str, argv: list[str], wait: Callable[[], None]) -> None:
    """Start a component and wait for it; on LabError stop it and start again, three times in all."""
    def once() -> None:
        processes.start(paths, name, argv)
        try:
            wait()
        except LabError:
            processes.stop(paths, name)
            raise

    tenacity.Retrying(retry=tenacity.retry_if_exception_type(LabError), stop=tenacity.stop_after_attempt(3),
                      wait=tenacity.wait_fixed(1), reraise=True)(once)


def start(bin_dir: Path, paths: LabPaths, ports: dict[str, int]) -> None:
    prepare(paths, ports)

    # "etcd exited" with an empty log on a loaded machine was processes.running() misjudging a child not yet exec'd
    # (fixed there, docs/reliability.md); the retries stay for a component that really dies at its start.
    _start_tried(paths, "etcd", etcd_argv(bin_dir, paths, ports), lambda: wait_etcd(paths, ports))
    _start_tried(paths, "kube-apiserver", apiserver_argv(bin_dir, paths, ports), lambda: wait_apiserver(paths, ports))
    processes.start(paths, "kube-controller-manager", controller_manager_argv(bin_dir, paths))
    processes.start(paths, "kube-scheduler", scheduler_argv(bin_dir, paths))


COMPONENTS = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
