"""Bring the whole lab up or down, and describe it (`python -m lab up|down|status|env`)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from lab import build, chartrepo, controlplane, kwok, pki, podnet, processes, versions
from lab.controlplane import LabError
from lab.nodes import ensure_nodes
from lab.spec import LabSpec, load
from lab.state import LabPaths, load_ports

SUITE_BINDING = "lab-suite-cluster-admin"
# Order matters for `down`: the twin and kwok first, the apiserver's storage last.
ALL_PROCESSES = ("twin", "twin-host", "kwok", "chartrepo", *controlplane.COMPONENTS)


def api_client(paths: LabPaths, identity: pki.Identity = pki.HELPER) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(paths.kubeconfig(identity.stem)))


def _spec_fingerprint(spec: LabSpec) -> str:
    return json.dumps([asdict(n) for n in spec.nodes] + [asdict(spec.timing)], default=str, sort_keys=True)


def _bootstrap_rbac(api: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": SUITE_BINDING},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": pki.SUITE.user}],
    }
    try:
        rbac.create_cluster_role_binding(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def _install_kwok_crds(api: client.ApiClient, crd_dir: Path) -> None:
    ext = client.ApiextensionsV1Api(api)
    for f in sorted(crd_dir.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
        name = doc["metadata"]["name"]

        def established(name: str = name) -> None:
            crd = ext.read_custom_resource_definition(name)
            if not any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                raise controlplane.NotYet(f"CRD {name} not Established")

        controlplane.poll(f"CRD {name}", established, 30, 0.1)


def _ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def wait_nodes_ready(api: client.ApiClient, names: set[str], paths: LabPaths, timeout: float = 60.0) -> None:
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    lst = core.list_node()
    ready = {n.metadata.name for n in lst.items if _ready(n)}
    if names <= ready:
        return
    w = watch.Watch()
    for ev in w.stream(core.list_node, resource_version=lst.metadata.resource_version,
                       timeout_seconds=max(1, int(timeout))):
        node = ev["object"]
        if _ready(node):
            ready.add(node.metadata.name)
        else:
            ready.discard(node.metadata.name)
        if names <= ready or time.monotonic() > deadline:
            w.stop()
    missing = names - ready
    if missing:
        raise LabError(f"nodes not Ready after {timeout:.0f}s: {sorted(missing)}; kwok log:\n"
                       + processes.log_tail(paths, "kwok"))


def wait_chart_repo(paths: LabPaths, port: int, timeout: float = 30.0) -> None:
    """The chart repository answers (its process is started detached; on a busy machine the Python
    interpreter can take seconds to listen, and `helm repo add` right after `up` must not be refused)."""
    import urllib.error
    import urllib.request

    def answers() -> None:
        if processes.running(paths, "chartrepo") is None:
            raise LabError("the chart repository exited:\n" + processes.log_tail(paths, "chartrepo"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.yaml", timeout=2) as r:
                if r.status != 200:
                    raise controlplane.NotYet(f"HTTP {r.status}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            raise controlplane.NotYet(str(exc)) from None

    controlplane.poll(f"the chart repository on port {port} did not answer", answers, timeout, 0.1,
                      lambda: processes.log_tail(paths, "chartrepo"))


def up(spec_path: Path | None = None, paths: LabPaths | None = None, quiet: bool = False) -> dict:
    paths = paths or LabPaths()
    spec = load(spec_path)
    say = (lambda *_: None) if quiet else (lambda m: print(f"[lab] {m}", file=sys.stderr, flush=True))
    fingerprint = _spec_fingerprint(spec)
    if paths.spec_file.exists() and processes.running(paths, "kube-apiserver"):
        recorded = json.loads(paths.spec_file.read_text())
        if recorded["fingerprint"] != fingerprint:
            raise LabError(
                f"a lab is already running with spec {recorded['source']}; run `python -m lab down` first "
                f"to start one from {spec.source}")
    bin_dir = build.ensure_all()
    paths.ensure()
    ports = load_ports(paths)
    t0 = time.monotonic()
    say(f"control plane {versions.K8S_VERSION} on https://127.0.0.1:{ports['apiserver']}")
    controlplane.start(bin_dir, paths, ports)
    api = api_client(paths)
    _bootstrap_rbac(api)
    _install_kwok_crds(api, bin_dir / "kwok-crds")
    paths.spec_file.write_text(json.dumps({"source": str(spec.source), "fingerprint": fingerprint}))
    from lab.twin import mig, seeding, shim_server  # the twin's host views must exist before anything runs on them

    # the host views' shims ask this one helper (lab/twin/shim_server.py) instead of starting Python each
    processes.start(paths, "twin-host", [sys.executable, "-m", "lab.twin.shim_server", "--socket",
                                         str(shim_server.socket_path(paths.root))],
                    cwd=Path(__file__).resolve().parent.parent)

    for node in spec.nodes:
        seeding.seed(paths, node)
        mig.seed_preset(paths.host_root(node.name), node)   # GPUs partitioned before the lab (spec mig.preset)
    kwok.start(bin_dir, paths, ports)
    chartrepo.prepare(paths, bin_dir / "helm", ports["charts"])
    processes.start(paths, "chartrepo", [sys.executable, "-m", "lab.chartrepo", "serve", str(paths.charts),
                                         str(ports["charts"])], cwd=Path(__file__).resolve().parent.parent)
    net = podnet.claim(paths)   # the pods' addresses, before the twin hands any out
    say(f"pod addresses {net.get('cidr') or net['base'] + ' (loopback)'}" + ("" if net["proxyable"] else f": {net['why']}"))
    processes.start(paths, "twin", [sys.executable, "-m", "lab.twin", "--state", str(paths.root),
                                    "--spec", str(spec.source)], cwd=Path(__file__).resolve().parent.parent)
    created = ensure_nodes(client.CoreV1Api(api), spec.nodes)
    if created:
        shown = created if len(created) <= 12 else [*created[:10], f"... ({len(created)} in all)"]
        say(f"created nodes {', '.join(shown)}")
    # kwok reports 1000 nodes Ready in ~25 s on an idle 2-core machine, 123 s at load 13 and more than 200 s at load
    # 15-20: the wait is a watch that returns when they are Ready, so a generous bound costs nothing when things work
    # (LAB_NODES_READY_TIMEOUT_S: another bound)
    wait_nodes_ready(api, {n.name for n in spec.nodes}, paths,
                     timeout=float(os.environ.get("LAB_NODES_READY_TIMEOUT_S") or max(120.0, 0.4 * len(spec.nodes))))
    wait_chart_repo(paths, ports["charts"])
    say(f"lab up in {time.monotonic() - t0:.1f}s: {len(spec.nodes)} nodes Ready")
    return status(paths)


def down(paths: LabPaths | None = None) -> list[str]:
    """Stop every lab process; the state folder is removed too so the next `up` starts clean."""
    import shutil

    paths = paths or LabPaths()
    stopped = [name for name in ALL_PROCESSES if processes.stop(paths, name)]
    podnet.release(paths)
    if paths.root.exists():
        shutil.rmtree(paths.root, ignore_errors=True)
    return stopped


def status(paths: LabPaths | None = None) -> dict:
    paths = paths or LabPaths()
    procs = {name: (p.pid if (p := processes.running(paths, name)) else None) for name in ALL_PROCESSES}
    running = all(procs.values())
    ports = json.loads(paths.ports_file.read_text()) if paths.ports_file.exists() else {}
    nodes: list[dict] = []
    if paths.spec_file.exists():
        recorded = json.loads(paths.spec_file.read_text())
        spec = load(Path(recorded["source"]))
        twin_ports = {}
        tp = paths.root / "twin-endpoints.json"
        if tp.exists():
            twin_ports = json.loads(tp.read_text())
        for n in spec.nodes:
            nodes.append({
                "name": n.name, "gpus": n.gpus, "product": n.product if n.is_gpu else None,
                "control_plane": n.control_plane, "docker": n.docker, "faults": list(n.faults),
                "host_root": str(paths.host_root(n.name)),
                "dcgm_url": twin_ports.get(n.name),
                **({"mig": n.mig} if n.mig else {}),
            })
    return {
        "running": running,
        "state_dir": str(paths.root),
        "kubeconfig": str(paths.kubeconfig(pki.SUITE.stem)),
        "admin_kubeconfig": str(paths.kubeconfig(pki.ADMIN.stem)),
        "helper_kubeconfig": str(paths.kubeconfig(pki.HELPER.stem)),
        "no_rights_kubeconfig": str(paths.kubeconfig(pki.NOBODY.stem)),
        "server": controlplane.server_url(ports) if ports else None,
        "audit_log": str(paths.audit_log),
        "suite_user": pki.SUITE.user,
        "lab_users": {i.stem: i.user for i in pki.CLIENT_IDENTITIES if i is not pki.SUITE},
        "kubernetes_version": versions.K8S_VERSION,
        "chart_repo": f"http://127.0.0.1:{ports['charts']}" if ports else None,
        "helm": str(versions.bin_dir() / "helm"),
        "processes": procs,
        "nodes": nodes,
        "operator": _operator_status(paths),
        "pod_network": podnet.load(paths),
    }


def _operator_status(paths: LabPaths) -> dict | None:
    """The real GPU Operator the twin runs for the installed chart: null while no release is installed."""
    import psutil

    f = paths.run / "operator.json"
    try:
        st = json.loads(f.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not st.get("version"):
        return None
    pid = st.get("pid")
    if pid is not None and not psutil.pid_exists(pid):
        pid = None
    return {"version": st["version"], "pid": pid, "log": st.get("log"), "healthy": bool(st.get("healthy")) and pid
            is not None, "restarts": st.get("restarts", 0), "error": st.get("error")}
