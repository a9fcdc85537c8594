"""After provisioning, before verifying: let the operator's operands settle.

`helm upgrade --install`, the containerd restarts and the time-slicing change each make the operator (and the
DaemonSet controller) replace operand pods; the convergers wait for what they changed (toolkit ready, GPUs
advertised) but not for the DCGM exporter or the validator, which come up after them. A `--provision` run
that verifies right away can find pods that no kubelet has started yet and report a fleet as broken that is
seconds from conformant. `settle_operands` waits, with the API's watch, until

1. every operand DaemonSet has a pod on each GPU node that its kubelet has started (startTime and an IP), up
   to the `cluster_policy` timeout, or until nothing has moved for `operands_settle` seconds (pods that wait
   for what provisioning could not do on a node it skipped);
2. each of those pods is Ready, or is crash-looping or failing to pull its image, or has been started for
   `operands_settle` seconds without becoming Ready (a pod stuck on a faulty node: waiting longer would not
   change the verdict, the checks report it);
3. when every pod is Ready, the ClusterPolicy reports `ready` (the operator's own roll-up), within the same
   `operands_settle` bound.

It returns None when everything settled and otherwise what is still missing; it never raises for a slow or
faulty fleet: the verification that follows reports each node precisely.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

from provision.context import RunContext
from provision.kube import CP_NAME, WaitTimeout, WatchResume, ready, slim_pod_dict

SLICE_S = 5.0  # a watch is re-opened this often so that a pod stuck without events is noticed


def _started_at(pod: dict) -> float | None:
    st = pod.get("status") or {}
    if not st.get("startTime") or not st.get("podIP"):
        return None
    try:
        return dt.datetime.fromisoformat(st["startTime"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


FAILING = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                     "CreateContainerError", "RunContainerError", "InvalidImageName"})


def _failing(pod: dict) -> bool:
    """A container of the pod is in a state that waiting will not end (crash loop, image pull failure)."""
    st = pod.get("status") or {}
    return any(((c.get("state") or {}).get("waiting") or {}).get("reason") in FAILING
               for c in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []))


# The ClusterPolicy component whose image each operand DaemonSet runs (spec.<component>.image/version).
OPERAND_COMPONENTS = {
    "nvidia-container-toolkit-daemonset": "toolkit", "nvidia-device-plugin-daemonset": "devicePlugin",
    "nvidia-dcgm-exporter": "dcgmExporter", "gpu-feature-discovery": "gfd", "nvidia-operator-validator": "validator",
}
TEMPLATE_GENERATION = "pod-template-generation"  # the DaemonSet controller's label on each pod it creates


def not_rendered(cp: dict | None, daemonsets: dict[str, dict], apps: Iterable[str]) -> list[str]:
    """Operand DaemonSets that do not yet run what the ClusterPolicy asks for: missing, an image other than
    spec.<component>.version (after `helm upgrade` the new operator renders them only once it holds its leader
    lease and has reconciled), or a generation the DaemonSet controller has not counted yet. Pure."""
    spec = (cp or {}).get("spec") or {}
    out = []
    for app in apps:
        ds = daemonsets.get(app)
        if ds is None:
            out.append(f"{app}: DaemonSet not created yet")
            continue
        comp = spec.get(OPERAND_COMPONENTS.get(app, ""), {}) or {}
        tmpl = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        images = [c.get("image", "") for c in (tmpl.get("containers") or []) + (tmpl.get("initContainers") or [])]
        want = f"/{comp['image']}:{comp['version']}" if comp.get("image") and comp.get("version") else None
        if want and not any(img.endswith(want) for img in images):
            out.append(f"{app}: runs {', '.join(sorted(set(images))) or 'no image'}, ClusterPolicy asks for "
                       f"...{want} (the operator has not rendered it yet)")
        elif ((ds.get("status") or {}).get("observedGeneration") or 0) < (ds["metadata"].get("generation") or 0):
            out.append(f"{app}: generation {ds['metadata'].get('generation')} not yet seen by the DaemonSet "
                       "controller")
    return out


def template_generations(daemonsets: dict[str, dict]) -> dict[str, str]:
    return {name: str(ds["metadata"].get("generation", "")) for name, ds in daemonsets.items()}


def pending_pods(pods: Iterable[dict], apps: Iterable[str], nodes: Iterable[str], now: float,
                 settle_s: float, generations: dict[str, str] | None = None) -> list[str]:
    """Which (operand, node) pairs are still worth waiting for: no started pod yet, or a started pod that is
    not Ready and was started less than `settle_s` seconds ago. With `generations` (app -> the DaemonSet's
    current generation), a pod of an earlier template does not count: it runs the previous configuration.
    Pure: the wait and the tests share it."""
    best: dict[tuple[str, str], dict] = {}
    for p in pods:
        meta = p.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        app = (meta.get("labels") or {}).get("app", "")
        if generations and app in generations and \
                (meta.get("labels") or {}).get(TEMPLATE_GENERATION) != generations[app]:
            continue
        key = (app, (p.get("spec") or {}).get("nodeName", ""))
        if key not in best or (ready(p) and not ready(best[key])):
            best[key] = p
    out = []
    for app in apps:
        for node in nodes:
            pod = best.get((app, node))
            started = _started_at(pod) if pod else None
            if started is None:
                out.append(f"{app} on {node}: not started")
            elif not ready(pod) and not _failing(pod) and now - started < settle_s:
                out.append(f"{app} on {node}: starting")
    return out


def settle_operands(ctx: RunContext, apps: Iterable[str], nodes: Iterable[str]) -> str | None:
    apps, nodes = tuple(apps), tuple(nodes)
    if not nodes:
        return None
    kube, s = ctx.kube, ctx.settings
    settle_s = s.timeout("operands_settle")
    deadline = time.monotonic() + s.timeout("cluster_policy")
    pods: dict[str, dict] = {}
    cp = kube.get_cluster_policy()
    try:
        daemonsets = kube.wait_for("the operator to render the operand DaemonSets", kube.apps.list_namespaced_daemon_set,
                                   lambda objs: not not_rendered(cp, objs, apps),
                                   lambda objs: not_rendered(cp, objs, apps),
                                   max(0.0, deadline - time.monotonic()), lambda _: "", s.namespace)
    except WaitTimeout as exc:
        return str(exc)
    generations = template_generations(daemonsets)

    def missing(objs: dict[str, dict]) -> list[str]:
        return pending_pods(objs.values(), apps, nodes, time.time(), settle_s, generations)

    last_missing, changed = "", time.monotonic()
    seen = WatchResume()   # each slice goes on from the last one's pods and resourceVersion: one LIST, not one per slice
    while True:
        left = deadline - time.monotonic()
        try:
            pods = kube.wait_for("the operands to settle on every GPU node", kube.core.list_namespaced_pod,
                                 lambda objs: not missing(objs), missing, max(0.0, min(SLICE_S, left)),
                                 lambda _: "", s.namespace, slim=slim_pod_dict, resume=seen)
            break
        except WaitTimeout as exc:
            if left <= SLICE_S:
                return str(exc)
            still = str(exc).partition("still missing: ")[2]
            if still != last_missing:
                last_missing, changed = still, time.monotonic()
            elif time.monotonic() - changed >= settle_s:
                # Nothing moved for a whole settle period: these pods wait for something provisioning could
                # not do (a node it skipped or failed); the checks that follow report them.
                return f"operands not settled, no progress for {settle_s:.0f}s; still missing: {still}"
    all_ready = not pending_pods(pods.values(), apps, nodes, time.time(), float("inf"), generations)
    if not all_ready:
        return None  # settled, with pods that are not ready: the checks say which and why
    cp_deadline = time.monotonic() + min(settle_s, max(0.0, deadline - time.monotonic()))

    def cp_missing(objs: dict[str, dict]) -> list[str]:
        state = ((objs.get(CP_NAME) or {}).get("status") or {}).get("state")
        return [] if state == "ready" else [f"ClusterPolicy {CP_NAME} state {state!r}"]

    try:
        kube.wait_for("ClusterPolicy to be ready", kube.custom.list_cluster_custom_object,
                      lambda objs: not cp_missing(objs), cp_missing, max(0.0, cp_deadline - time.monotonic()),
                      lambda _: "", "nvidia.com", "v1", "clusterpolicies")
    except WaitTimeout as exc:
        return str(exc)
    return None
