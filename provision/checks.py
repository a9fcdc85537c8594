"""The conformance checks behind the Then steps. Each returns a Finding: ok, and a message that says what was
expected, what was found and how to fix it. Could-not-check situations raise Broken (or a transport error).
Cluster-wide state comes from the run's one snapshot; per-node work reads from it."""

from __future__ import annotations

import contextlib
import posixpath
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes.client.rest import ApiException

from provision import expect
from provision.context import RunContext
from provision.converge.cluster import DISCOVERY_CM, DISCOVERY_LABELS, TIME_SLICING_CM, discovery_service
from provision.converge.hosts import RUNC_DROPIN
from provision.hostfacts import containerd_dump, containerd_facts, docker_config, has_docker
from provision.hosts.access import HostAccess
from provision.kube import MANAGED_BY, SUITE, WaitTimeout, ready, ready_message
from provision.labels import deploy_label
from provision.observe import containerd_dump as containerd_dump_mod
from provision.observe import cuda, dcgm, docker_daemon, gfd, nvidia_smi
from provision.observe.distribution import DROPIN_NAME, policy_dropin
from provision.observe.timeslicing import TimeSlicingError, parse_config
from provision.outcomes import Broken

OPERAND_DAEMONSETS = ("nvidia-container-toolkit-daemonset", "nvidia-device-plugin-daemonset", "nvidia-dcgm-exporter",
                      "gpu-feature-discovery", "nvidia-operator-validator")
DCGM_APP = "nvidia-dcgm-exporter"
DCGM_DRA_APP = "nvidia-dcgm-exporter-dra"   # the GPUCluster's exporter (DaemonSet and pod label app; port 9400)


def dcgm_app(ctx: RunContext) -> tuple[str, str]:
    """(the exporter's app label, the node label that schedules it) of the desired stack."""
    if ctx.settings.stack == "dra":
        return DCGM_DRA_APP, "nvidia.com/gpu.deploy.dcgm-exporter-dra"
    return DCGM_APP, "nvidia.com/gpu.deploy.dcgm-exporter"
GPU = "nvidia.com/gpu"


@dataclass
class Finding:
    ok: bool
    message: str
    attachments: dict[str, str] = field(default_factory=dict)
    measured: dict = field(default_factory=dict)  # values a nightly job graphs (summary.json `health`)
    observed: str = ""   # what was observed, in words (the message without expectation and fix) when given

    def __bool__(self) -> bool:
        return self.ok

    def observed_text(self) -> str:
        return self.observed or self.message.split(" Fix: ", 1)[0]


def _fix(expected: str, found: str, fix: str) -> str:
    found = found.rstrip()
    stop = "" if found.endswith((".", "!", "?")) else "."  # a found text that ends a sentence gets no second stop
    return f"expected {expected}; found {found}{stop} Fix: {fix}"


LISTED_PROBLEMS = 20  # a fleet-wide finding names this many, then counts the rest


def listed(problems: list[str], limit: int = LISTED_PROBLEMS) -> str:
    """Problems joined for a message that stays readable at 1000 nodes: the first `limit`, then how many more
    (the per-node scenarios name every node's own problem)."""
    if len(problems) <= limit:
        return "; ".join(problems)
    return "; ".join(problems[:limit]) + f"; ... and {len(problems) - limit} more ({len(problems)} problems in all)"


# ----------------------------------------------------------------------------------------------- cluster
def release_deployed(ctx: RunContext) -> Finding:
    s = ctx.settings
    rel = ctx.helm.release()
    if rel is None:
        return Finding(False, _fix(f"Helm release {s.namespace}/{s.release} at chart {s.chart_version}", "no release",
                                   "run `pytest features/ --provision` (helm upgrade --install gpu-operator)"))
    ok = rel.status == "deployed" and rel.chart_version == s.chart_version
    return Finding(ok, _fix(f"release deployed at {s.chart_version}", f"status {rel.status}, chart {rel.chart}",
                            f"helm upgrade --install {s.release} {s.chart_repo_name}/gpu-operator --version "
                            f"{s.chart_version} -n {s.namespace} (or --provision)"))


def operator_available(ctx: RunContext) -> Finding:
    dep = ctx.kube.snapshot().deployments.get("gpu-operator")
    if dep is None:
        return Finding(False, _fix("Deployment gpu-operator", "none", "install the operator (--provision)"))
    st = dep.get("status") or {}
    ok = st.get("availableReplicas", 0) >= 1
    return Finding(ok, _fix(">= 1 available replica", f"{st.get('availableReplicas', 0)} available of "
                            f"{st.get('replicas', 0)}", f"kubectl -n {ctx.settings.namespace} describe deployment "
                            "gpu-operator; check its pod's events and logs"))


def cluster_policy_state(ctx: RunContext, want: str) -> Finding:
    """ClusterPolicy's state. Under --provision the read waits (watching, at most `operands_settle` s) for the
    operator's roll-up to catch up with operands that became ready after the Given settled them."""
    cp = ctx.kube.snapshot().cluster_policy
    if cp is not None and (cp.get("status") or {}).get("state") != want and ctx.settings.mode == "provision":
        cp = _wait_cluster_policy(ctx, want) or cp
    if cp is None:
        return Finding(False, _fix("ClusterPolicy cluster-policy", "none", "install the operator chart (--provision)"))
    st = cp.get("status") or {}
    conds = "; ".join(f"{c.get('type')}={c.get('status')} {c.get('message', '')}".strip()
                      for c in st.get("conditions") or [])
    return Finding(st.get("state") == want, _fix(f"state {want!r}", f"state {st.get('state')!r} ({conds or 'no conditions'})",
                   "kubectl get clusterpolicy cluster-policy -o yaml; see the operand DaemonSets that are not ready"))


def _wait_cluster_policy(ctx: RunContext, want: str) -> dict | None:
    from provision.kube import CP_NAME

    kube = ctx.kube
    try:
        objs = kube.wait_for(f"ClusterPolicy to be {want!r}", kube.custom.list_cluster_custom_object,
                             lambda o: ((o.get(CP_NAME) or {}).get("status") or {}).get("state") == want,
                             lambda o: [f"ClusterPolicy {CP_NAME}"], ctx.settings.timeout("operands_settle"),
                             lambda _: "", "nvidia.com", "v1", "clusterpolicies")
    except WaitTimeout:
        return kube.snapshot(refresh=True).cluster_policy
    return objs.get(CP_NAME)


def supported_gpu_nodes(ctx: RunContext) -> list[str]:
    labels = {n: (ctx.kube.snapshot().nodes.get(n, {}).get("metadata") or {}).get("labels") or {}
              for n in ctx.gpu_nodes}
    return [n for n in ctx.gpu_nodes if labels[n].get(deploy_label("operator-validator")) != "false"]


def operands_ready(ctx: RunContext) -> Finding:
    snap = ctx.kube.snapshot()
    problems = []
    nodes = supported_gpu_nodes(ctx)
    for name in OPERAND_DAEMONSETS:
        ds = snap.daemonsets.get(name)
        if ds is None:
            problems.append(f"{name}: missing")
            continue
        for node in nodes:
            pod = snap.pod_on(name, node)
            if pod is None:
                problems.append(f"{name}: no pod on {node}")
            elif not ready(pod):
                st = pod.get("status") or {}
                waits = [c.get("state", {}).get("waiting", {}).get("reason") for c in st.get("containerStatuses") or []]
                problems.append(f"{name}: pod {pod['metadata']['name']} on {node} not ready "
                                f"({st.get('phase')}{', ' + ', '.join(w for w in waits if w) if any(waits) else ''})")
    return Finding(not problems, _fix(f"every operand DaemonSet with a ready pod on each of {len(nodes)} GPU node(s)",
                                      listed(problems) or "all ready",
                                      f"kubectl -n {ctx.settings.namespace} get pods -o wide; describe the pods named"))


def runtime_class(ctx: RunContext, name: str, handler: str) -> Finding:
    nri_not_applicable(ctx, f"RuntimeClass {name}")
    rc = ctx.kube.snapshot().runtimeclasses.get(name)
    found = "none" if rc is None else f"handler {rc.get('handler')!r}"
    return Finding(rc is not None and rc.get("handler") == handler,
                   _fix(f"RuntimeClass {name} with handler {handler}", found, "the operator creates it; check the "
                        "operator's log and ClusterPolicy spec.operator.runtimeClass"))


def time_slicing_configmap(ctx: RunContext, min_replicas: int) -> Finding:
    s = ctx.settings
    snap = ctx.kube.snapshot()
    cm = snap.configmaps.get(TIME_SLICING_CM)
    if cm is None:
        return Finding(False, _fix(f"ConfigMap {s.namespace}/{TIME_SLICING_CM}", "none (it must live in the operator "
                                   "namespace)", "run --provision, or create it with version v1 and replicas >= 2"))
    problems = []
    data = cm.get("data") or {}
    for key, text in sorted(data.items()):
        try:
            cfg = parse_config(text, f"ConfigMap {s.namespace}/{TIME_SLICING_CM} key {key}")
        except TimeSlicingError as exc:
            problems.append(str(exc))
            continue
        if cfg.replicas is not None and cfg.replicas < min_replicas:
            problems.append(f"key {key}: replicas {cfg.replicas} < {min_replicas}")
    cp_cfg = (((snap.cluster_policy or {}).get("spec") or {}).get("devicePlugin") or {}).get("config") or {}
    if cp_cfg.get("name") != TIME_SLICING_CM:
        problems.append(f"ClusterPolicy spec.devicePlugin.config.name is {cp_cfg.get('name')!r}, not {TIME_SLICING_CM!r}")
    if cp_cfg.get("default") and cp_cfg["default"] not in data:
        problems.append(f"ClusterPolicy default config {cp_cfg['default']!r} is not a key of the ConfigMap")
    default = data.get(cp_cfg.get("default") or "")
    if default is not None:
        try:
            if parse_config(default).replicas is None:
                problems.append(f"the default config {cp_cfg.get('default')!r} does not time-slice nvidia.com/gpu")
        except TimeSlicingError:
            pass
    return Finding(not problems, _fix("a valid time-slicing config (version v1, replicas >= "
                                      f"{min_replicas}) wired into ClusterPolicy", "; ".join(problems) or "valid",
                                      "run --provision (it also restarts the device plugin, which the operator "
                                      "does not do for a changed ConfigMap)"))


def discovery_configmap(ctx: RunContext) -> Finding:
    import yaml

    ns = ctx.settings.namespace
    cm = ctx.kube.snapshot().configmaps.get(DISCOVERY_CM)
    if cm is None:
        return Finding(False, _fix(f"ConfigMap {ns}/{DISCOVERY_CM}", "none", "run --provision"))
    problems = [f"label {k}={cm['metadata'].get('labels', {}).get(k)!r}, want {v!r}"
                for k, v in DISCOVERY_LABELS.items() if (cm["metadata"].get("labels") or {}).get(k) != v]
    try:
        svc = (yaml.safe_load((cm.get("data") or {}).get("service.yaml", "")) or {}).get("service") or {}
    except yaml.YAMLError as exc:
        svc = {}
        problems.append(f"service.yaml is not YAML: {exc}")
    want = discovery_service(ns)
    for key in ("name", "display_name", "type", "category"):
        if svc.get(key) != want[key]:
            problems.append(f"service.{key}={svc.get(key)!r}, want {want[key]!r}")
    have_eps = {e.get("name"): e.get("url") for e in svc.get("endpoints") or []}
    for ep in want["endpoints"]:
        if have_eps.get(ep["name"]) != ep["url"]:
            problems.append(f"endpoint {ep['name']}={have_eps.get(ep['name'])!r}, want {ep['url']!r}")
    return Finding(not problems, _fix("the discovery ConfigMap with both endpoints", "; ".join(problems) or "ok",
                                      "run --provision"))


# ----------------------------------------------------------------------------------------------- per node
def node_ready(ctx: RunContext, node: str) -> Finding:
    obj = ctx.kube.snapshot().nodes.get(node)
    if obj is None:
        return Finding(False, _fix(f"node {node}", "no such node", "check --gpu-nodes"))
    from provision.observe.distribution import K8S_SNAP, detect_node
    from provision.observe.distribution import layout as dist_layout

    kind = detect_node(obj).name
    on_host = ("snap services k8s.containerd, journalctl -u snap.k8s.containerd" if kind in (None, K8S_SNAP)
               else dist_layout(kind).logs)
    return Finding(ready(obj), _fix("Ready=True", ready_message(obj),
                                    f"kubectl describe node {node}; on the host: {on_host}"),
                   observed=f"node {node} is Ready ({ready_message(obj)})" if ready(obj) else f"node {node} is NotReady")


def driver(ctx: RunContext, node: str, minimum: int) -> Finding:
    facts = expect.smi(ctx, node)
    att = {"nvidia-smi output": facts.stdout + facts.stderr}
    if facts.finding and not facts.finding.output_usable:
        return Finding(False, _fix(f"nvidia-smi working with driver >= {minimum}",
                                   facts.finding.message, facts.finding.remediation), att)
    if facts.parse_error or not facts.gpus:
        return Finding(False, _fix("nvidia-smi listing the GPUs", facts.parse_error or "no GPUs",
                                   "run nvidia-smi on the host; reinstall the driver"), att)
    versions = sorted({g.driver_version or "" for g in facts.gpus})
    binding, expected = driver_minimum(ctx.settings.workload_image, minimum)
    ok = all(v and nvidia_smi.driver_at_least(v, binding) for v in versions)
    return Finding(ok, _fix(expected, f"driver {', '.join(versions)}",
                            f"install NVIDIA driver {binding} or newer on {node} (apt install nvidia-driver-580-server)"),
                   att)


def driver_minimum(workload_image: str, setting: int) -> tuple[int, str]:
    """(the driver major that binds, the expectation that says why): the min_driver setting, or what the
    workload image's CUDA needs (observe/cuda.py, NVIDIA's minor version compatibility table) when that is higher."""
    cuda_version = cuda.image_cuda_version(workload_image)
    need = cuda.driver_need(cuda_version)
    if need is not None and need.minimum > setting:
        return need.minimum, (f"driver >= {need.minimum}, which the workload image {workload_image} needs: "
                              f"{need.describe()}; the min_driver setting {setting} is lower")
    if need is not None:
        return setting, f"driver >= {setting} (min_driver; the workload image's CUDA {cuda_version} needs >= {need.minimum})"
    return setting, f"driver >= {setting}"


def physical_count(ctx: RunContext, node: str) -> Finding:
    facts = expect.smi(ctx, node)
    att = {"nvidia-smi output": facts.stdout + facts.stderr}
    if not facts.usable:
        why = facts.finding.message if facts.finding else facts.parse_error
        return Finding(False, _fix("GPUs listed by nvidia-smi", why or "nothing", "check the driver and the GPUs"), att)
    found = len(facts.gpus)
    want = ctx.settings.expected_gpus.get(node)
    ok = found >= 1 and (want is None or want == found)
    expected = f"{want} GPU(s) (setting)" if want is not None else ">= 1 GPU"
    return Finding(ok, _fix(expected, f"{found} GPU(s) in nvidia-smi", "check lspci / nvidia-smi -L on the host; "
                            "a GPU that fell off the bus needs a reboot or a reseat"), att)


def _toolkit_env(ctx: RunContext) -> dict[str, str]:
    cp = ctx.kube.snapshot().cluster_policy or {}
    return {e["name"]: str(e.get("value") or "")
            for e in ((cp.get("spec") or {}).get("toolkit") or {}).get("env") or []}


def _dropin_name(ctx: RunContext) -> str:
    return posixpath.basename(policy_dropin(ctx.kube.snapshot().cluster_policy))


def containerd_dropins(ctx: RunContext, node: str) -> Finding:
    nri_not_applicable(ctx, "the toolkit's containerd drop-in")
    host = ctx.host(node)
    facts = containerd_facts(host, _node_layout(ctx, node))
    if facts.error:
        return Finding(False, _fix("a readable containerd config", facts.error, "fix the file named"))
    names = {posixpath.basename(p): p for p in facts.dropins()}
    imported = ", ".join((facts.effective.merged.get("imports") if facts.effective else None)
                         or [posixpath.join(d, "*.toml") for d in facts.import_dirs]) or "nothing"
    problems = []
    for want in (_dropin_name(ctx),):     # 00-k8s-runc.toml: not needed (provision/converge/hosts.py)
        if want not in names:
            found = _dropin_elsewhere(host, facts.root_path, want, set(facts.files))
            problems.append(f"{want} is at {', '.join(found)}, not in an imported directory (containerd imports "
                            f"{imported})" if found else f"{want} is in no imported directory (containerd imports "
                            f"{imported})")
    att = {f"containerd: {facts.root_path}": facts.files.get(facts.root_path, "")}
    return Finding(not problems, _fix(f"{_dropin_name(ctx)} in a directory containerd imports "
                                      f"({', '.join(facts.import_dirs) or 'none'})", "; ".join(problems) or "both there",
                                      f"move the file(s) named into {facts.conf_d}/ and restart containerd; set toolkit "
                                      f"env RUNTIME_DROP_IN_CONFIG={facts.conf_d}/{DROPIN_NAME} (--provision does) so "
                                      f"that the toolkit writes it there; {RUNC_DROPIN} is not needed"), att)


def _node_layout(ctx: RunContext, node: str):
    """The containerd layout of the node's distribution (provision/distribution.py); None: the host's files decide."""
    from provision.distribution import layout_for

    def read():
        kube = getattr(ctx, "kube", None)
        nodes = getattr(kube.snapshot(), "nodes", None) if kube is not None else None
        return layout_for(ctx.host(node), (nodes or {}).get(node))

    # a node's distribution does not change within a run: read once per node (at most a few host reads)
    return ctx.host_fact(node, "containerd-layout", read) if hasattr(ctx, "host_fact") else read()


def _dropin_elsewhere(host: HostAccess, root_path: str, name: str, imported: set[str]) -> list[str]:
    """Where a drop-in called ``name`` lies that containerd does not read: next to or one folder below the
    root config's folder or /etc/containerd (e.g. /etc/containerd/config.d/, NVIDIA/nvidia-container-toolkit#1404)."""
    found: list[str] = []
    for folder in dict.fromkeys((posixpath.dirname(root_path), "/etc/containerd")):
        for pattern in (posixpath.join(folder, name), posixpath.join(folder, "*", name)):
            found.extend(p for p in host.glob(pattern) if p not in imported and p not in found)
    return found


def containerd_runtimes(ctx: RunContext, node: str) -> Finding:
    """runc (default) and nvidia: the node's own containerd decides (config dump); the resolver explains."""
    nri_not_applicable(ctx, "the nvidia runtime in containerd")
    host = ctx.host(node)
    facts = containerd_facts(host, _node_layout(ctx, node))
    verdict = containerd_dump_mod.runtimes_verdict(containerd_dump(host, facts), facts.effective, facts.error)
    problems = list(verdict.problems)
    ok = verdict.ok
    att = {f"containerd {p}": t for p, t in facts.files.items()}
    fixes: list[str] = []
    eff = facts.effective
    if eff is not None:
        if verdict.source == "node":
            why = [f.message for f in eff.errors if f.kind != "drop-in-version-higher"]
            if why and not verdict.ok:
                problems.append("the suite's resolver explains: " + "; ".join(why))
            # containerd loads a runtime without runtime_type (config dump shows it) and fails every pod that uses
            # it: the loader cannot say so, the resolver can.
            pod_start = [f.message for f in eff.errors if f.kind == "runtime-type-missing"]
            if verdict.ok and pod_start:
                ok = False
                problems.extend(pod_start)
        fixes = [f.remediation for f in eff.errors if f.kind not in ("drop-in-version-higher", "default-runtime-missing")]
    no_runc = containerd_dump_mod.dropins_without_runc(facts.files, facts.root_path)
    if not verdict.ok and no_runc:
        problems.append(f"drop-in without runc: {', '.join(no_runc)} ("
                        + containerd_dump_mod.dumped_source(_toolkit_env(ctx), has_docker(host)) + ")")
    asked = "the node's containerd" if verdict.source == "node" else "the suite's resolver"
    seen = "; ".join(problems) or f"runtimes {list(verdict.runtimes)}"
    if verdict.notes:
        seen += " [" + "; ".join(verdict.notes) + "]"
    if facts.distribution == "k8s-snap":
        generic = ("a drop-in whose CRI section lacks runc replaces the root's (no deep merge; canonical/k8s-snap#1991): "
                   "set RUNTIME_CONFIG_SOURCE=file and CONTAINERD_CONFIG to the snap's config.toml, then restart "
                   "k8s.containerd")
    else:   # the node's own distribution's files and restart (provision/observe/distribution.py)
        from provision.observe.distribution import layout as dist_layout

        lay = dist_layout(facts.distribution)
        generic = (f"({facts.distribution}) a drop-in whose CRI section lacks runc replaces the root's (no deep merge): "
                   f"the toolkit must read {facts.root_path} (RUNTIME_CONFIG_SOURCE=file"
                   + (f", CONTAINERD_CONFIG={lay.template}" if lay.template else f", CONTAINERD_CONFIG={facts.root_path}")
                   + f"), then restart containerd ({' '.join(lay.restart)}); its log: {lay.logs}")
    if not fixes or len(fixes) < len(problems):
        fixes.append(generic)
    down = _runtime_down(ctx, node)
    if down and not ok:
        seen = f"{down}; {seen}"   # containerd's own error, as the node reports it, first
    observed = f"containerd's effective runtimes on {node}: {', '.join(verdict.runtimes) or 'none'} (asked: {asked})"
    return Finding(ok, _fix("runtimes runc (default) and nvidia in containerd's effective configuration "
                            f"(asked: {asked})", seen, " ".join(fixes)), att, observed=observed)


def _runtime_down(ctx: RunContext, node: str) -> str | None:
    """containerd's own error as the node reports it (NotReady with the runtime's message), or None."""
    kube = getattr(ctx, "kube", None)
    obj = kube.snapshot().nodes.get(node) if kube is not None else None
    if obj is None or ready(obj):
        return None
    return f"node {node} is NotReady: {ready_message(obj)}"


def containerd_versions(ctx: RunContext, node: str) -> Finding:
    host = ctx.host(node)
    facts = containerd_facts(host, _node_layout(ctx, node))
    if facts.error or facts.effective is None:
        return Finding(False, _fix("a readable containerd config", str(facts.error), "fix the file named"))
    eff = facts.effective
    high = {p: v for p, v in eff.drop_in_versions.items() if v > eff.version}
    seen = ", ".join(f"{p} has version {v}" for p, v in high.items()) or "none higher"
    fix = ("containerd refuses to start with such a drop-in (NVIDIA/aicr#1688): the toolkit copies the version of "
           "its config source; point RUNTIME_CONFIG_SOURCE=file at the snap's config.toml")
    dump = containerd_dump(host, facts)
    if not dump.ran:
        # containerd's own comparison as the resolver knows it (a root without a version takes the first
        # drop-in's; containerd 1.x reads versions up to 2, 2.x up to its own: see observe/containerd)
        refused = [f.message.replace("drop-in config version", f"{f.path} has version")
                   for f in eff.errors if f.kind in ("drop-in-version-higher", "unsupported-version")]
        return Finding(not refused, _fix(f"no drop-in above the root config's version {eff.version}",
                                         ("; ".join(refused) or seen) + " (containerd config dump could not run on "
                                         f"the node: {dump.why}; the suite's resolver decided)", fix))
    verdict = containerd_dump_mod.versions_verdict(dump, high)
    return Finding(verdict.ok, _fix(f"drop-in versions the node's containerd accepts (root version {eff.version})",
                                    "; ".join([*verdict.problems, *verdict.notes]) or seen, fix))


def _mig_enabled_gpus(ctx: RunContext, node: str) -> int | None:
    """How many of the node's GPUs have MIG mode enabled (nvidia-smi mig.mode.current); None when unknown."""
    try:
        facts = expect.smi(ctx, node)
    except Exception:  # noqa: BLE001 - no host access
        return None
    if not facts.usable:
        return None
    return sum(1 for g in facts.gpus if (g.mig_mode or "").lower() == "enabled")


def _mig_resources(alloc: dict, labels: dict) -> dict[str, tuple[int, int | None]]:
    """nvidia.com/mig-<profile> -> (allocatable, GFD's nvidia.com/mig-<profile>.count or None)."""
    out: dict[str, tuple[int, int | None]] = {}
    for key, value in alloc.items():
        if key.startswith("nvidia.com/mig-"):
            count = labels.get(f"{key}.count")
            out[key] = (int(value or 0), int(count) if str(count or "").isdigit() else None)
    return out


def allocatable(ctx: RunContext, node: str) -> Finding:
    """Allocatable GPUs, judged under the resource name the node's device-plugin config gives them (time-slicing
    renameByDefault / rename: nvidia.com/gpu.shared, nvidia.com/gpu 0) and its MIG strategy (single: the GPUs
    are MIG devices, counted by GFD; mixed: nvidia.com/mig-<profile> plus the non-MIG GPUs). Full MIG checks are
    another issue: here MIG configurations are recognised, not verified device by device."""
    from provision import mig

    if mig.node_mode(ctx, node) is not None:  # a MIG node: judged in MIG mode (features/mig.feature's check)
        return mig.check_advertised(ctx, node)
    obj = ctx.kube.snapshot().nodes.get(node) or {}
    alloc = (obj.get("status") or {}).get("allocatable") or {}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    sharing = expect.node_sharing(ctx, node)
    resource = sharing.resource(GPU)
    have = int(alloc.get(resource, "0") or 0)
    replicas = expect.node_replicas(ctx, node)
    fix = ("check the device-plugin pod on the node (kubectl logs); after changing the time-slicing ConfigMap the "
           "plugin must be restarted")
    renamed = (f"; {GPU} = {alloc.get(GPU, '0')} (renamed to {resource} by {sharing.source}); sharing mode renamed "
               f"{sharing.config.strategy if sharing.config else 'time-slicing'}" if resource != GPU else "")
    if sharing.mig_strategy == "single":
        mig_devices = gfd.parse_labels(labels).count
        if mig_devices is None:
            raise Broken(f"{node} uses MIG strategy single but has no GFD label nvidia.com/gpu.count to count its "
                         "MIG devices by")
        want = mig_devices * replicas
        return Finding(have == want, _fix(f"allocatable {resource} = {mig_devices} MIG devices (MIG strategy single, "
                                          f"GFD nvidia.com/gpu.count) x {replicas} replicas = {want}",
                                          f"{have}{renamed}", fix))
    count, source = expect.physical_gpus(ctx, node)
    if count is None:
        raise Broken(f"cannot tell how many GPUs {node} has: {source}")
    if sharing.mig_strategy == "mixed":
        mig = _mig_resources(alloc, labels)
        enabled = _mig_enabled_gpus(ctx, node)
        shown = ", ".join(f"{k}={v}" + (f" (GFD count {c})" if c is not None else "") for k, (v, c) in sorted(mig.items())
                          if v or c) or "no MIG resources"
        problems = [f"{k}={v}, GFD counts {c}" for k, (v, c) in sorted(mig.items()) if c is not None and v != c]
        if enabled is None:
            return Finding(not problems, _fix(f"MIG strategy mixed: nvidia.com/mig-<profile> as GFD counts them "
                                              f"({GPU} not judged: MIG mode of the GPUs unknown without nvidia-smi)",
                                              f"{'; '.join(problems) or 'as expected'} ({resource} = {have}; "
                                              f"{shown})", fix))
        want = (count - enabled) * replicas
        if have != want:
            problems.append(f"{resource}={have}")
        return Finding(not problems, _fix(f"MIG strategy mixed: allocatable {resource} = {count - enabled} GPUs without "
                                          f"MIG ({count} physical, {enabled} MIG-enabled) x {replicas} replicas = "
                                          f"{want}, and nvidia.com/mig-<profile> as GFD counts them",
                                          f"{'; '.join(problems) or 'as expected'} ({resource} = {have}; {shown})", fix))
    want = count * replicas
    return Finding(have == want, _fix(f"allocatable {resource} = {count} physical x {replicas} replicas = {want}",
                                      f"{have}{renamed}", fix))


def gfd_labels(ctx: RunContext, node: str) -> Finding:
    """GFD's labels under the node's device-plugin config: -SHARED on the product only when time-sliced without
    a rename, the MIG product (<model>-MIG-<profile>) and MIG-device count under MIG strategy single."""
    from provision import mig

    if mig.node_mode(ctx, node) is not None:  # a MIG node: judged in MIG mode (features/mig.feature's check)
        return mig.check_gfd(ctx, node)
    labels = (ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
    got = gfd.parse_labels(labels)
    sharing = expect.node_sharing(ctx, node)
    count, _ = expect.physical_gpus(ctx, node)
    replicas = expect.node_replicas(ctx, node)
    name = expect.product(ctx, node)
    single = sharing.mig_strategy == "single"
    problems = []
    if not single and got.count != count:
        problems.append(f"gpu.count={got.count} (physical {count})")
    if got.replicas != replicas:
        problems.append(f"gpu.replicas={got.replicas} (want {replicas})")
    want_strategy = sharing.config.strategy if sharing.config else "time-slicing"
    if got.sharing_strategy != want_strategy:
        problems.append(f"gpu.sharing-strategy={got.sharing_strategy}"
                        + ("" if want_strategy == "time-slicing" else f" (want {want_strategy})"))
    if got.mig_strategy not in (None, sharing.mig_strategy) and sharing.mig_strategy != "none":
        problems.append(f"mig.strategy={got.mig_strategy} (the device plugin uses {sharing.mig_strategy})")
    shared = replicas > 1 and not sharing.renamed(GPU)
    if name and single:
        base = gfd.expected_product_label(name, shared=False)
        if not (got.product or "").startswith(f"{base}-MIG-"):
            problems.append(f"gpu.product={got.product} (want {base}-MIG-<profile>, MIG strategy single)")
        elif shared and not got.shared_product:
            problems.append(f"gpu.product={got.product} (want the -SHARED suffix: time-sliced, not renamed)")
    elif name:
        want_product = gfd.expected_product_label(name, shared=shared)
        if got.product != want_product:
            why = f", {GPU} renamed to {sharing.resource(GPU)}" if sharing.renamed(GPU) else ""
            problems.append(f"gpu.product={got.product} (want {want_product}{why})")
    expected = "GFD labels for time-sliced GPUs" + (f" ({sharing.source}, MIG strategy {sharing.mig_strategy})"
                                                      if sharing.config or sharing.mig_strategy != "none" else "")
    return Finding(not problems, _fix(expected, "; ".join(problems) or "as expected",
                                      "GFD relabels when it restarts; check the gpu-feature-discovery pod on the node"))


def vectoradd(ctx: RunContext, node: str) -> Finding:
    s, kube = ctx.settings, ctx.kube
    ns = s.suite_namespace
    name = f"vectoradd-{node[:40]}-{uuid.uuid4().hex[:6]}".replace(".", "-")
    from provision import mig

    # nvidia.com/gpu.shared where time-slicing renames it; a MIG resource on a node of MIG strategy mixed
    resource = mig.workload_resource(ctx, node) or expect.node_sharing(ctx, node).resource(GPU)
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {MANAGED_BY: SUITE, "app": "gpu-conformance-vectoradd"}},
        "spec": {
            "restartPolicy": "Never", "nodeName": node,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "vectoradd", "image": s.workload_image,
                            "resources": {"limits": {resource: "1"}}}],
        },
    }
    if expect.runtime_mode(ctx, node)[0] != "nri":   # with the NRI plugin there is no RuntimeClass (issue 16)
        body["spec"]["runtimeClassName"] = "nvidia"
    try:
        kube.workload_write(f"create Pod {ns}/{name}", kube.core.create_namespaced_pod, ns, body)
    except ApiException as exc:
        if exc.status == 404:
            raise Broken(f"namespace {ns} does not exist: apply deploy/rbac/ (it creates it) or run --provision") from exc
        raise Broken(f"could not create the vectoradd pod in {ns}: {exc.status} {exc.reason}") from exc
    try:
        def done(pods: dict[str, dict]) -> bool:
            return (pods.get(name, {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")

        def diagnostics(pods: dict[str, dict]) -> str:
            st = pods.get(name, {}).get("status") or {}
            return f"phase {st.get('phase')}; events: " + " | ".join(kube.events_for(name, ns)[-5:])

        try:
            pods = kube.wait_for(f"vectoradd pod {name} on {node} to finish", kube.core.list_namespaced_pod, done,
                                 lambda _: [name], s.timeout("workload"), diagnostics, ns,
                                 field_selector=f"metadata.name={name}")
        except WaitTimeout as exc:
            return Finding(False, f"vectoradd pod did not finish: {str(exc).rstrip().rstrip('.')}. Fix: a pod with "
                           "runtimeClassName nvidia stays pending when containerd has no nvidia runtime (restart "
                           "k8s.containerd after the toolkit writes its drop-in) or when the node advertises no "
                           f"{resource}")
        st = pods[name].get("status") or {}
        term = ((st.get("containerStatuses") or [{}])[0].get("state") or {}).get("terminated") or {}
        log = kube.pod_log(name, ns)
        code = term.get("exitCode")
        ok = st.get("phase") == "Succeeded" and code == 0 and "Test PASSED" in log
        error = None if ok else cuda.classify_log(log, "nvidia", cuda.image_cuda_version(s.workload_image),
                                                  _host_driver(ctx, node))
        return Finding(ok, _fix("phase Succeeded, exit 0 and 'Test PASSED' in the log",
                                f"phase {st.get('phase')}, exit {code}, log: {log.strip()[-300:]!r}",
                                error.fix if error else
                                "the validator can say ready while CUDA fails (NVIDIA/gpu-operator#2685): check "
                                "nvidia-smi and dmesg (Xid errors) on the host"), {"vectoradd log": log})
    finally:
        with contextlib.suppress(ApiException):
            kube.workload_write(f"delete Pod {ns}/{name}", kube.core.delete_namespaced_pod, name, ns,
                                grace_period_seconds=0)


def _host_driver(ctx: RunContext, node: str) -> str | None:
    """The node's driver version from nvidia-smi, None when the host cannot be asked or nvidia-smi fails."""
    try:
        facts = expect.smi(ctx, node)
    except Exception:  # noqa: BLE001 - no host access: the message then says the driver is unknown
        return None
    return next((g.driver_version for g in facts.gpus if g.driver_version), None)


class DcgmUnavailable(Exception):
    """The node's DCGM exporter could not be scraped: ``kind`` no-pod | no-ip | no-answer, ``pod`` its name."""

    def __init__(self, kind: str, why: str, pod: str | None = None, detail: str = "") -> None:
        super().__init__(kind, why, pod, detail)  # all in args: RunContext.host_fact re-raises a remembered one anew
        self.kind, self.why, self.pod, self.detail = kind, why, pod, detail

    def __str__(self) -> str:
        return self.why


def dcgm_scrape(ctx: RunContext, node: str) -> tuple[str, str]:
    """(pod name, metrics text) of the node's DCGM exporter, through the apiserver's pod proxy (default) or the pod
    IP (--dcgm-access direct). One scrape per node and run, shared by the metrics and the Xid checks. A failure is
    remembered too in a read-only run (nothing it does can bring the exporter up: a failing 1000-node fleet was
    scraped 4000 times); under --provision it is not (the next scenario asks again: the exporter may come up in
    between). In a read-only run the first scrape starts those of every GPU node of the run at once
    (RunContext.prefetch_facts, a pool of host_concurrency), as the host gathers are."""
    def read(node: str) -> tuple[str, str]:
        s, kube = ctx.settings, ctx.kube
        app = dcgm_app(ctx)[0]
        pod = kube.snapshot().pod_on(app, node)
        if pod is None:
            raise DcgmUnavailable("no-pod", f"no {app} pod on {node}")
        name = pod["metadata"]["name"]
        try:
            if s.dcgm_access == "direct":
                ip = (pod.get("status") or {}).get("podIP")
                if not ip:
                    raise DcgmUnavailable("no-ip", f"pod {name} has no IP yet", name)
                with urllib.request.urlopen(f"http://{ip}:9400/metrics", timeout=s.timeout("api")) as resp:
                    return name, resp.read().decode()
            return name, kube.core.connect_get_namespaced_pod_proxy_with_path(
                f"{name}:9400", s.namespace, "metrics", _request_timeout=kube.timeout)
        except (OSError, ApiException) as exc:
            raise DcgmUnavailable("no-answer", f"{name} did not answer ({exc})", name, str(exc)) from None

    if ctx.settings.mode == "provision":
        return ctx.host_fact(node, "dcgm-scrape", lambda: read(node), remember=())
    if node in ctx.prefetch_fact_nodes:
        ctx.prefetch_facts("dcgm-scrape", ctx.prefetch_fact_nodes, read, (DcgmUnavailable,))
    return ctx.host_fact(node, "dcgm-scrape", lambda: read(node), remember=(DcgmUnavailable,))


def dcgm_metrics(ctx: RunContext, node: str) -> Finding:
    s = ctx.settings
    try:
        text = dcgm_scrape(ctx, node)[1]
    except DcgmUnavailable as exc:
        if exc.kind == "no-pod":
            app, label = dcgm_app(ctx)
            return Finding(False, _fix(f"a {app} pod on {node}", "none", f"check the {app} DaemonSet and the "
                                       f"node's {label} label" + (" (in DRA mode the exporter's admin-access claim "
                                       "needs the node's gpu.nvidia.com ResourceSlices)" if app == DCGM_DRA_APP
                                       else "")))
        if exc.kind == "no-ip":
            raise Broken(exc.why) from None
        return Finding(False, _fix(f"the DCGM exporter on {node} answering on :9400/metrics",
                                   f"no answer ({exc.detail})",
                                   f"kubectl -n {s.namespace} logs {exc.pod}; the exporter needs "
                                   "the nvidia runtime and a working driver"))
    try:
        scrape = dcgm.parse_metrics(text)
    except dcgm.DcgmParseError as exc:
        return Finding(False, _fix("Prometheus text", str(exc), "check the exporter version"))
    facts = expect.smi(ctx, node)
    uuids = [g.uuid for g in facts.gpus]
    missing = dcgm.missing_uuids(scrape, uuids)
    att = {"DCGM sample": "\n".join(dcgm.sample_lines(text, 12))}
    if not uuids:
        why = facts.finding.message if facts.finding else facts.parse_error or "no GPUs listed"
        return Finding(False, _fix("a metric for each GPU UUID from nvidia-smi", f"no GPU UUIDs to compare: "
                                   f"nvidia-smi on {node}: {why}", "fix nvidia-smi on the host first"), att)
    return Finding(not missing, _fix(f"a metric for each GPU UUID from nvidia-smi ({len(uuids)})",
                                     f"missing {missing}" if missing else "all reported",
                                     "restart the exporter pod; check DCGM on the host"), att)


def docker_runtime(ctx: RunContext, node: str) -> Finding:
    host = ctx.host(node)
    if not has_docker(host):
        raise NotApplicable("Docker is not installed on this node")
    try:
        text, cfg = docker_config(host)
    except docker_daemon.DaemonJsonError as exc:
        return Finding(False, f"{str(exc).rstrip('.')}. Fix: repair the JSON by hand; the suite never overwrites a "
                       "file it cannot parse")
    ok = cfg is not None and docker_daemon.has_nvidia_runtime(cfg)
    return Finding(ok, _fix("runtimes.nvidia in /etc/docker/daemon.json", "present" if ok else "absent",
                            "merge {\"runtimes\": {\"nvidia\": {\"path\": \"nvidia-container-runtime\", "
                            "\"runtimeArgs\": []}}} and restart docker (--provision does, keeping other keys)"),
                   {"/etc/docker/daemon.json": text or ""},
                   observed=f"/etc/docker/daemon.json on {node} {'has' if ok else 'lacks'} the nvidia runtime"
                   + ("" if text is not None else " (no daemon.json)"))


class NotApplicable(Exception):
    """The check does not apply to this node (the step skips with the reason)."""


def unsupported_reason(ctx: RunContext, node: str) -> str | None:
    """Why the node is out of scope (GPUs below the minimum compute capability), or None."""
    try:
        facts = expect.smi(ctx, node)
    except Exception:  # noqa: BLE001 - no host access: judged by the checks themselves
        return None
    lowest = expect.unsupported_capability(ctx, facts)
    if lowest:
        return (f"unsupported: compute capability {lowest} below "
                f"{ctx.settings.min_compute_capability}; the operator's operands are disabled on this node")
    return None



CUDA_SOURCE = Path(__file__).resolve().parent / "cuda" / "vector_add.cu"
_CUDA_SCRIPT = (
    'd=$(mktemp -d) || exit 70; trap \'rm -rf "$d"\' EXIT; printf "%s" "$1" > "$d/vector_add.cu" || exit 71; '
    'nvcc -O2 -o "$d/vector_add" "$d/vector_add.cu" || exit 72; "$d/vector_add"'
)


def cuda_native(ctx: RunContext, node: str) -> Finding:
    """Build the suite's CUDA vector addition with the host's nvcc in a scratch folder and run it (the folder
    is removed afterwards: like the vectoradd pod, a workload test, off with --no-workload)."""
    host = ctx.host(node)
    if not host.run(["sh", "-c", "command -v nvcc"]).ok:
        raise NotApplicable("no CUDA toolkit (nvcc) on this host: the native CUDA smoke test does not apply")
    res = host.run(["sh", "-c", _CUDA_SCRIPT, "sh", CUDA_SOURCE.read_text()], timeout=300)
    out = res.stdout + res.stderr
    stage = {70: "make a scratch folder", 71: "write the source", 72: "compile with nvcc"}.get(res.rc)
    found = f"could not {stage} (exit {res.rc})" if stage else f"exit {res.rc}"
    ok = res.rc == 0 and "Test PASSED" in res.stdout
    error = None if ok or stage else cuda.classify_log(out, None, None, _host_driver(ctx, node))
    return Finding(ok, _fix("exit 0 and 'Test PASSED'", f"{found}: {out.strip()[-400:]!r}",
                            error.fix if error else "check nvidia-smi and dmesg (Xid errors); a driver/CUDA mismatch "
                            "shows as 'CUDA driver version is insufficient'"), {"CUDA vector addition": out})


def host_containerd(ctx: RunContext, node: str) -> Finding:
    """containerd of k8s-snap on a host: runc (default) and nvidia runtimes; not applicable without it."""
    from provision.hostfacts import BASE_DIR_FILE

    host = ctx.host(node)
    facts = containerd_facts(host, _node_layout(ctx, node))
    if facts.error and not host.exists(BASE_DIR_FILE) and facts.distribution == "k8s-snap":
        raise NotApplicable(f"no k8s-snap containerd on this host ({BASE_DIR_FILE} and {facts.root_path} absent)")
    if facts.distribution == "kubeadm" and facts.effective is not None and "cri" in (
            facts.effective.merged.get("disabled_plugins") or []):
        # Docker's containerd.io config (CRI disabled): containerd for Docker, not for Kubernetes
        raise NotApplicable(f"{facts.root_path} disables the CRI plugin: no Kubernetes containerd on this host")
    return containerd_runtimes(ctx, node)


# ----------------------------------------------------------------------------------- issue 16: runtime modes
def nri_not_applicable(ctx: RunContext, what: str) -> None:
    """Raise NotApplicable when the cluster runs the toolkit's NRI plugin: then the operator creates no RuntimeClass
    and the toolkit writes no containerd drop-in (provision/observe/runtime_mode.py), so `what` does not apply."""
    from provision.observe import runtime_mode as rm

    mode, source = expect.runtime_mode(ctx)
    if mode == rm.NRI:
        raise NotApplicable(f"runtime mode nri ({source}): {what} does not apply - the operator creates no "
                            "RuntimeClass and the toolkit configures no containerd runtime with the NRI plugin")


def runtime_mode_needs(ctx: RunContext, node: str) -> Finding:
    """What the node's runtime mode needs on the host (issue 16). cdi: the device plugin's CDI spec lists every GPU
    UUID of nvidia-smi (containerd's enable_cdi is reported: pods with the nvidia RuntimeClass do not need it).
    nri: the same, plus containerd's CDI and NRI on, the NRI socket, containerd >= 1.7.30 or 2.1+.
    runtimeclass: nothing beyond the RuntimeClass and drop-in scenarios (skipped)."""
    from provision.observe import runtime_mode as rm

    mode, source = expect.runtime_mode(ctx, node)
    if mode == rm.RUNTIMECLASS:
        raise NotApplicable(f"runtime mode runtimeclass ({source}): no CDI spec or NRI needed; the RuntimeClass and "
                            "containerd drop-in scenarios judge this node")
    host = ctx.host(node)
    facts = containerd_facts(host)
    dump = containerd_dump(host, facts)
    data: dict = {}
    if dump.ran and not dump.refused:
        with contextlib.suppress(ValueError):
            data = containerd_dump_mod.parse(dump.stdout).data
    enable_cdi, dirs, table = rm.containerd_cdi(data) if data else (None, (), "")
    specs = rm.parse_cdi_specs(expect_cdi_files(host, dirs or rm.CDI_SPEC_DIRS))
    smi = expect.smi(ctx, node)
    if not smi.usable:
        raise Broken(f"nvidia-smi on {node} lists no GPUs to compare the CDI specs with")
    uuids = [g.uuid for g in smi.gpus]
    problems = rm.spec_uuid_problems(specs, uuids) + list(specs.errors)
    notes = []
    cdi_text = ("unknown (containerd config dump did not run: " + (dump.why or dump.error) + ")" if not data
                else f"{table} enable_cdi = {str(enable_cdi).lower()}")
    if mode == rm.NRI:
        if enable_cdi is not True:
            problems.append(f"containerd's CDI is off ({cdi_text}): GPU pods without a RuntimeClass get no device")
        nri_on, socket = rm.containerd_nri(data) if data else (False, rm.NRI_SOCKET)
        if not nri_on:
            problems.append('containerd\'s NRI is off (plugins."io.containerd.nri.v1.nri" disable = true, the 1.7 '
                            "default)" if data else "containerd's NRI state unknown (no config dump)")
        if not host.exists(socket):
            problems.append(f"no NRI socket {socket} on the host")
        version = ((ctx.kube.snapshot().nodes.get(node, {}).get("status") or {}).get("nodeInfo") or {}).get(
            "containerRuntimeVersion")
        why = rm.nri_version_problem(version)
        if why:
            problems.append(why)
    elif enable_cdi is not True:
        notes.append(f"containerd's CDI: {cdi_text} (pods with runtimeClassName nvidia get their devices from the "
                     "nvidia runtime in cdi mode; pods without it need enable_cdi = true)")
    kinds = ", ".join(f"{p} ({k})" for p, k in sorted(specs.files.items())) or "none"
    att = {f"CDI spec {p}": t for p, t in expect_cdi_files(host, dirs or rm.CDI_SPEC_DIRS).items()}
    fix = {rm.CDI: "the device plugin writes its CDI spec (k8s.device-plugin.nvidia.com-gpu) when it starts with "
                   "CDI_ENABLED=true: restart the nvidia-device-plugin pod on the node and read its log",
           rm.NRI: "enable CDI and NRI in containerd (containerd 2.1+ has both on by default; on 1.7.30+ set "
                   "enable_cdi = true and plugins.\"io.containerd.nri.v1.nri\" disable = false) and restart the "
                   "device plugin and toolkit pods"}[mode]
    return Finding(not problems, _fix(f"what runtime mode {mode} needs ({source}): a CDI spec with each of "
                                      f"{len(uuids)} GPU UUID(s) of nvidia-smi"
                                      + (", containerd's CDI and NRI on, the NRI socket, containerd >= 1.7.30 or 2.1+"
                                         if mode == rm.NRI else ""),
                                      f"runtime mode {mode}: " + ("; ".join(problems) or f"as needed (specs: {kinds})")
                                      + (f"; note: {'; '.join(notes)}" if notes else ""), fix), att)


def expect_cdi_files(host: HostAccess, dirs: tuple[str, ...]) -> dict[str, str]:
    from provision.hostfacts import cdi_spec_files

    return cdi_spec_files(host, dirs)
