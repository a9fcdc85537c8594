"""Cluster convergers: time-slicing (ConfigMap, ClusterPolicy, plugin restart, advertised GPUs) and the
discovery ConfigMap. Objects are updated with optimistic concurrency; other parties' keys are kept."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time

import yaml
from kubernetes.client.rest import ApiException

from provision import expect
from provision import labels as labels_mod
from provision.changes import (
    AdvertiseWait,
    ClusterPolicyPatch,
    ConfigMapWrite,
    NodeLabels,
    RolloutRestart,
    apply_node_labels,
    changed_since_plan,
)
from provision.context import RunContext
from provision.converge.settle import not_rendered, pending_pods, template_generations
from provision.engine import Change, ConvergeError, Result
from provision.kube import CP_GROUP, CP_NAME, CP_PLURAL, CP_VERSION, MANAGED_BY, SUITE, WaitTimeout, slim_pod_dict
from provision.observe.timeslicing import render_config

TIME_SLICING_CM = "time-slicing-config"
SINGLE_KEY = "any"
DEVICE_PLUGIN_DS = "nvidia-device-plugin-daemonset"
GFD_DS = "gpu-feature-discovery"
GFD_REPLICAS = labels_mod.GPU_REPLICAS
DEFAULT_CONFIG_ENV = "DEFAULT_CONFIG"
PLUGIN_CONFIG_PATH = ("spec", "devicePlugin", "config")


def template_env(ds: dict, value: str) -> set[str]:
    """Names of the env variables of a DaemonSet's pod template (any container) that are set to `value`. Pure."""
    tmpl = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {e.get("name", "") for c in (tmpl.get("containers") or []) + (tmpl.get("initContainers") or [])
            for e in c.get("env") or [] if e.get("value") == value}
CONFIG_LABEL = labels_mod.DEVICE_PLUGIN_CONFIG
DISCOVERY_CM = "thinkube-service-config"
GPU = "nvidia.com/gpu"


def _allocatable(node: dict, resource: str = GPU) -> int:
    return int(((node.get("status") or {}).get("allocatable") or {}).get(resource, "0") or 0)


def desired_resource(ctx: RunContext, node: str) -> str:
    """The resource the node's GPUs are advertised under by the desired state: nvidia.com/gpu.shared when its
    product's sharing profile renames (renameByDefault), else nvidia.com/gpu."""
    prof = ctx.settings.sharing_profiles.get(expect.product(ctx, node) or "")
    return f"{GPU}.shared" if prof and prof["rename"] else GPU


def desired_timeslicing(ctx: RunContext, nodes: list[str]) -> tuple[dict[str, str], str, dict[str, str]]:
    """(ConfigMap data, default key, node -> config label). One value for every node, or profiles per
    GPU product chosen through the node label nvidia.com/device-plugin.config."""
    s = ctx.settings
    if not s.replica_profiles and not s.sharing_profiles:
        return {SINGLE_KEY: render_config(s.replicas)}, SINGLE_KEY, {}
    data = {SINGLE_KEY: render_config(s.replicas)}
    labels: dict[str, str] = {}
    for product, replicas in sorted(s.replica_profiles.items()):
        data[expect.profile_key(product)] = render_config(replicas)
    for product, prof in sorted(s.sharing_profiles.items()):   # a sharing profile wins over a replica profile
        data[expect.sharing_key(s, product)] = render_config(prof["replicas"], rename_by_default=prof["rename"],
                                                             mps=prof["mps"])
    for node in nodes:
        p = expect.product(ctx, node)
        if p and (p in s.replica_profiles or p in s.sharing_profiles):
            labels[node] = expect.sharing_key(s, p)
    return data, SINGLE_KEY, labels


def _with_mig(ctx: RunContext, nodes: list[str], desired: tuple[dict[str, str], str, dict[str, str]]
              ) -> tuple[dict[str, str], str, dict[str, str]]:
    """desired_timeslicing plus the config keys of MIG nodes (provision/mig.py timeslicing_keys)."""
    from provision import mig

    data, default, labels = desired
    mig.timeslicing_keys(ctx, nodes, data, labels)
    return data, default, labels


class TimeSlicing:
    name = "time-slicing"
    depends = ("containerd-restart", "mig-config")

    def _supported(self, ctx: RunContext, result: Result | None = None) -> list[str]:
        """GPU nodes this converger works on: not unsupported, not already failed by an earlier converger
        (or by this one, when it plans again after applying)."""
        engine = ctx.engine
        skip: set[str] = set(result.node_failures) | set(result.node_errors) if result else set()
        if engine is not None:
            skip |= set(engine.ensure("host-driver").node_skips) | engine.unhealthy_nodes()
        return [n for n in ctx.gpu_nodes if n not in skip]

    def _expected(self, ctx: RunContext, nodes: list[str]) -> dict[str, int | None]:
        from provision import mig

        out = {}
        for n in nodes:
            is_mig, want = mig.expected_gpu_allocatable(ctx, n, expect.replicas(ctx, n))
            if is_mig:  # MIG devices (single) or the GPUs without MIG (mixed) x replicas
                out[n] = want
                continue
            count, _ = expect.physical_gpus(ctx, n)
            out[n] = None if count is None else count * expect.replicas(ctx, n)
        return out

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        s = ctx.settings
        if s.stack == "dra":
            result.notes.append("stack dra: GPU sharing comes from a ResourceClaim's opaque GpuConfig, not from the "
                                "device plugin's time-slicing ConfigMap (docs/dra.md): nothing to configure")
            return []
        snap = ctx.kube.snapshot()
        nodes = self._supported(ctx, result)
        data, default, labels = _with_mig(ctx, nodes, desired_timeslicing(ctx, nodes))
        changes: list[Change] = []
        cm = snap.configmaps.get(TIME_SLICING_CM)
        have = (cm or {}).get("data") or {}
        diff_keys = sorted(k for k in data if have.get(k) != data[k])
        cm_target = f"ConfigMap {s.namespace}/{TIME_SLICING_CM}"
        if cm is None:
            changes.append(Change(self.name, None, cm_target, "create",
                                  f"keys {sorted(data)}; default {default}; replicas {s.replicas}",
                                  ConfigMapWrite(s.namespace, TIME_SLICING_CM, data, {MANAGED_BY: SUITE})))
        elif diff_keys:
            changes.append(Change(self.name, None, cm_target, "update", f"keys {diff_keys} -> replicas per config",
                                  ConfigMapWrite(s.namespace, TIME_SLICING_CM, {k: data[k] for k in diff_keys},
                                                 before={k: have.get(k) for k in diff_keys})))
        foreign = sorted(k for k in have if k not in data)
        if foreign:
            result.kept.append(f"ConfigMap {s.namespace}/{TIME_SLICING_CM} keys {foreign} (another installer's "
                               "configs, e.g. the playbooks' profiles: left as they are)")
        for node in sorted(nodes):
            key = labels.get(node)
            cur = (snap.nodes.get(node, {}).get("metadata", {}).get("labels") or {}).get(CONFIG_LABEL)
            if cur != key and not (key is None and cur in data):
                why = "" if key else (f" (a config this run does not set, e.g. the playbooks' profile label: the "
                                      f"node takes the default {default}; recorded, --rollback restores it)")
                changes.append(Change(self.name, node, f"node {node} label {CONFIG_LABEL}", "label",
                                      f"{cur} -> {key or 'unset'}{why}",
                                      NodeLabels({CONFIG_LABEL: key}, before={CONFIG_LABEL: cur})))
        cp = snap.cluster_policy
        want_cfg = {"name": TIME_SLICING_CM, "default": default}
        if cp is None:
            result.notes.append("ClusterPolicy cluster-policy does not exist yet (operator not installed)")
            changes.append(Change(self.name, None, "ClusterPolicy cluster-policy spec.devicePlugin.config", "patch",
                                  f"-> name {TIME_SLICING_CM}, default {default} (after the operator install)",
                                  ClusterPolicyPatch(PLUGIN_CONFIG_PATH, want_cfg, unseen=True)))
        else:
            raw_cfg = ((cp.get("spec") or {}).get("devicePlugin") or {}).get("config")
            cur_cfg = raw_cfg or {}
            if cur_cfg.get("name") != TIME_SLICING_CM or cur_cfg.get("default") != default:
                changes.append(Change(self.name, None, "ClusterPolicy cluster-policy spec.devicePlugin.config",
                                      "patch", f"{cur_cfg or '{}'} -> name {TIME_SLICING_CM}, default {default}",
                                      ClusterPolicyPatch(PLUGIN_CONFIG_PATH, want_cfg, before=raw_cfg)))
        expected = self._expected(ctx, nodes)
        wrong = {n: (_allocatable(snap.nodes.get(n, {}), desired_resource(ctx, n)), want) for n, want in expected.items()
                 if want is not None and _allocatable(snap.nodes.get(n, {}), desired_resource(ctx, n)) != want}
        for n, want in expected.items():
            if want is None:
                result.node_errors[n] = "cannot tell how many GPUs the node has (no host access, no setting, no label)"
        if changes:
            changes.append(Change(self.name, None, f"DaemonSet {s.namespace}/{DEVICE_PLUGIN_DS}", "restart",
                                  "rollout restart so the plugin loads the new config",
                                  RolloutRestart(s.namespace, DEVICE_PLUGIN_DS, tuple(sorted(nodes)))))
        for n, (have_n, want) in sorted(wrong.items()):
            changes.append(Change(self.name, n, f"device plugin on {n}", "restart",
                                  f"{desired_resource(ctx, n)} allocatable {have_n} -> {want} (physical x replicas)",
                                  RolloutRestart(s.namespace, DEVICE_PLUGIN_DS, (n,))))
        if changes:
            from provision import mig

            # After a cluster-wide change every node is waited for (one cluster-wide wait); after device plugin
            # restarts of single nodes only those (a wait per node: no drift for the other nodes in an audit).
            cluster_wide = any(c.node is None for c in changes)
            counted = {n: w for n, w in expected.items() if w is not None and (cluster_wide or n in wrong)}
            groups = [(None, tuple(sorted(nodes)))] if cluster_wide else [(n, (n,)) for n in sorted(wrong)]
            for where, group in groups:
                mine = {n: w for n, w in counted.items() if n in group}
                changes.append(Change(
                    self.name, where, "GPU nodes advertise physical GPUs x replicas" if where is None
                    else f"device plugin on {where} advertises physical GPUs x replicas", "wait",
                    ", ".join(f"{n}: {w} {desired_resource(ctx, n)}" for n, w in sorted(mine.items())) or "no node",
                    AdvertiseWait(nodes=group, expected=mine, resources={n: desired_resource(ctx, n) for n in mine},
                                  replicas={n: str(mig.expected_replicas_label(ctx, n, expect.replicas(ctx, n)))
                                            for n in mine},
                                  config=want_cfg)))
        return changes

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        waits = [c.payload for c in changes if isinstance(c.payload, AdvertiseWait)]
        if not waits or len({json.dumps(w.config, sort_keys=True) for w in waits}) != 1:
            raise ConvergeError(f"{self.name}: the plan has no advertise wait, or waits for different configs: "
                                + "; ".join(c.line() for c in changes))
        wait = AdvertiseWait(nodes=tuple(sorted({n for w in waits for n in w.nodes})),
                             expected={n: v for w in waits for n, v in w.expected.items()},
                             resources={n: v for w in waits for n, v in w.resources.items()},
                             replicas={n: v for w in waits for n, v in w.replicas.items()}, config=waits[0].config)
        restart: set[str] = set()
        for c in changes:   # in the plan's order: ConfigMap, node labels, ClusterPolicy, then the restarts
            p = c.payload
            if isinstance(p, ConfigMapWrite):
                write_configmap(ctx, p)
            elif isinstance(p, NodeLabels) and c.node:
                apply_node_labels(ctx, c.node, p)
            elif isinstance(p, ClusterPolicyPatch):
                patch_cluster_policy(ctx, p)
            elif isinstance(p, RolloutRestart):
                restart |= set(p.nodes)
            elif not isinstance(p, AdvertiseWait):
                raise ConvergeError(f"{self.name}: no way to apply {c.line()} ({type(p).__name__})")
        nodes = list(wait.nodes)
        # The operator renders the device plugin DaemonSet for the config (config manager, the ConfigMap volume) in
        # its own time: a plugin restarted before that comes back from the old template with no config at all.
        self._wait_plugin_rendered(ctx, wait.config)
        self._wait_config_rendered(ctx, wait.config["default"])
        # GFD of the new template first, then the plugin restart: GFD labels what the plugin loaded.
        self._wait_rollout(ctx, nodes, (GFD_DS,))
        self._restart_plugin(ctx, sorted(restart), ctx.settings.namespace)
        self._wait_rollout(ctx, nodes, (DEVICE_PLUGIN_DS,))
        self._wait_advertised(ctx, wait, result)

    def _wait_plugin_rendered(self, ctx: RunContext, cfg: dict[str, str]) -> None:
        def missing(objs: dict[str, dict]) -> list[str]:
            why = plugin_not_rendered(objs.get(DEVICE_PLUGIN_DS), cfg["name"], cfg["default"])
            return [why] if why else []

        try:
            ctx.kube.wait_for(f"the operator to render {DEVICE_PLUGIN_DS} for devicePlugin.config",
                              ctx.kube.apps.list_namespaced_daemon_set, lambda objs: not missing(objs), missing,
                              ctx.settings.timeout("cluster_policy"), lambda _: "", ctx.settings.namespace)
        except WaitTimeout as exc:
            raise ConvergeError(f"{exc}. The ClusterPolicy asks for devicePlugin.config {cfg}; the operator has not "
                                "put it into the device plugin DaemonSet: read the gpu-operator pod's log") from exc

    def _wait_config_rendered(self, ctx: RunContext, default: str) -> None:
        """After the ClusterPolicy patch the operator re-renders the device plugin and GFD (their config managers'
        DEFAULT_CONFIG), asynchronously: a restart before that starts the plugin on the previous template, and
        the generations read before it would wait for pods of a template that is being replaced."""
        kube, ns, apps = ctx.kube, ctx.settings.namespace, (DEVICE_PLUGIN_DS, GFD_DS)
        cp = kube.get_cluster_policy()

        def missing(objs: dict[str, dict]) -> list[str]:
            out = not_rendered(cp, objs, [a for a in apps if a in objs or a == DEVICE_PLUGIN_DS])  # GFD may be off
            out += [f"{app}: config manager's DEFAULT_CONFIG is not {default!r} yet" for app in apps
                    if app in objs and DEFAULT_CONFIG_ENV not in template_env(objs[app], default)]
            return out

        kube.wait_for(f"the operator to render the device plugin and GFD with config {default}",
                      kube.apps.list_namespaced_daemon_set, lambda o: not missing(o), missing,
                      ctx.settings.timeout("advertise"), lambda _: "", ns)

    def _wait_rollout(self, ctx: RunContext, nodes: list[str], apps: tuple[str, ...]) -> None:
        """The pods of the DaemonSets' (device plugin, GFD) current templates run and are ready on the nodes: a
        pod of a previous template advertises and labels the previous config (provision/converge/settle.py)."""
        kube, ns = ctx.kube, ctx.settings.namespace
        daemonsets = {d["metadata"]["name"]: d for d in json.loads(kube.apps.list_namespaced_daemon_set(
            ns, _preload_content=False, _request_timeout=kube.timeout).data).get("items", [])}
        apps = tuple(a for a in apps if a in daemonsets)   # GFD may be off (gfd.enabled=false)
        generations = template_generations({a: d for a, d in daemonsets.items() if a in apps})
        # A rolling update stalls behind pods that cannot become ready on broken nodes (maxUnavailable): the pods
        # of an earlier template on these nodes are deleted, so the DaemonSet controller recreates them current.
        snap = kube.snapshot(refresh=True)  # once for every app: at 1000 nodes a refresh LISTs 6000 pods
        for app in apps:
            old = [p["spec"].get("nodeName") for p in snap.pods_of(app)
                   if p["spec"].get("nodeName") in nodes
                   and (p["metadata"].get("labels") or {}).get("pod-template-generation") != generations[app]]
            if old:
                self._delete_pods(ctx, app, old, ns, "a pod of an earlier template")

        def missing(objs: dict[str, dict]) -> list[str]:
            return pending_pods(objs.values(), apps, nodes, time.time(), float("inf"), generations)

        with contextlib.suppress(WaitTimeout):  # what did not roll out is reported by the advertise wait
            kube.wait_for(f"{', '.join(apps)} to roll out", kube.core.list_namespaced_pod,
                          lambda o: not missing(o), missing, ctx.settings.timeout("advertise"), lambda _: "", ns,
                          slim=slim_pod_dict)

    def _restart_plugin(self, ctx: RunContext, nodes: list[str], ns: str) -> None:
        """Restart the device plugin so it reloads its config (the operator does not watch the ConfigMap).
        The DaemonSet's template is stamped like `kubectl rollout restart` does, and the pods on the nodes
        that need it are deleted: a DaemonSet rolling update stalls behind pods that cannot become ready on
        broken nodes (maxUnavailable), which must not keep the healthy nodes from converging."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ctx.kube.guarded(f"rollout restart DaemonSet {ns}/{DEVICE_PLUGIN_DS}", ctx.kube.apps.patch_namespaced_daemon_set,
                         DEVICE_PLUGIN_DS, ns,
                         {"spec": {"template": {"metadata": {"annotations": {
                             "kubectl.kubernetes.io/restartedAt": stamp}}}}})
        wanted = set(nodes)
        for pod in ctx.kube.snapshot().pods_of(DEVICE_PLUGIN_DS):
            if pod["spec"].get("nodeName") in wanted and not pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(ApiException):
                    ctx.kube.guarded(f"delete Pod {ns}/{pod['metadata']['name']} (device plugin restart)",
                                     ctx.kube.core.delete_namespaced_pod, pod["metadata"]["name"], ns)

    def _delete_pods(self, ctx: RunContext, app: str, nodes: list[str], ns: str, why: str) -> None:
        wanted = set(nodes)
        for pod in ctx.kube.snapshot(refresh=True).pods_of(app):
            if pod["spec"].get("nodeName") in wanted and not pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(ApiException):
                    ctx.kube.guarded(f"delete Pod {ns}/{pod['metadata']['name']} ({why})",
                                     ctx.kube.core.delete_namespaced_pod, pod["metadata"]["name"], ns)

    def _wait_advertised(self, ctx: RunContext, wait: AdvertiseWait, result: Result) -> None:
        """Wait (watch) until every node advertises physical x replicas; nodes still wrong at the timeout
        fail with diagnostics, the others are converged."""
        expected, replicas, resources = wait.expected, wait.replicas, wait.resources
        ns = ctx.settings.namespace

        def stale_gfd(objs: dict[str, dict]) -> dict[str, str]:
            """node -> what GFD labels wrong on it."""
            out = {}
            for n, r in sorted(replicas.items()):
                got = ((objs.get(n, {}).get("metadata") or {}).get("labels") or {}).get(GFD_REPLICAS)
                if got != r:
                    out[n] = f"GFD label gpu.replicas={got}, want {r}"
            return out

        def wrong(objs: dict[str, dict], labels: bool = True) -> dict[str, list[str]]:
            """node -> what is still wrong on it (advertised count, GFD label)."""
            out: dict[str, list[str]] = {}
            for n, w in sorted(expected.items()):
                have = _allocatable(objs.get(n, {}), resources[n])
                if have != w:
                    out.setdefault(n, []).append(
                        f"advertises {have}{'' if resources[n] == GPU else ' ' + resources[n]}, want {w}")
            for n, what in (stale_gfd(objs) if labels else {}).items():
                out.setdefault(n, []).append(what)
            return out

        def missing(objs: dict[str, dict], labels: bool = True) -> list[str]:
            return [f"{n} ({what})" for n, whats in wrong(objs, labels).items() for what in whats]

        def diagnostics(objs: dict[str, dict]) -> str:
            lines = []
            pods = {p["spec"].get("nodeName"): p for p in ctx.kube.snapshot(refresh=True).pods_of(DEVICE_PLUGIN_DS)}
            for n in sorted(expected):
                p = pods.get(n)
                if p is None:
                    lines.append(f"{n}: no device-plugin pod")
                    continue
                st = p.get("status") or {}
                cs = (st.get("containerStatuses") or [{}])[0]
                waiting = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
                state = ", ".join(str(x) for x in (st.get("phase"), waiting,
                                                   cs.get("restartCount") and f"{cs['restartCount']} restarts") if x)
                log = ctx.kube.pod_log(p["metadata"]["name"], ns, tail=3, container=DEVICE_PLUGIN_CONTAINER
                                       ).strip().replace("\n", " | ")
                lines.append(f"{n}: device-plugin pod {p['metadata']['name']} {state}; log: {log}")
            return "\n".join(lines)

        try:
            objs = ctx.kube.wait_for("every GPU node to advertise physical GPUs x replicas", ctx.kube.core.list_node,
                                     lambda objs: not wrong(objs, labels=False), lambda o: missing(o, labels=False),
                                     ctx.settings.timeout("advertise"), diagnostics)
            # GPU feature discovery labels from the config it started with: a GFD pod that started before the
            # plugin loaded the new config keeps the old replicas label until it restarts.
            stale = sorted(stale_gfd(objs))
            if stale:
                self._delete_pods(ctx, GFD_DS, stale, ns, "GFD relabels when it restarts")
                self._wait_rollout(ctx, stale, (GFD_DS,))
                self._delete_pods(ctx, DEVICE_PLUGIN_DS, stale, ns, "device plugin restart after GFD's")
            ctx.kube.wait_for("GPU feature discovery to label the replicas", ctx.kube.core.list_node,
                              lambda objs: not wrong(objs), missing, ctx.settings.timeout("advertise"), diagnostics)
        except WaitTimeout as exc:
            objs = ctx.kube.snapshot(refresh=True).nodes
            lines = str(exc).splitlines()
            for node, whats in wrong(objs).items():   # one or two per node: keep them all
                detail = next((ln for ln in lines[1:] if ln.startswith(f"{node}:")), "")
                result.node_failures[node] = (
                    f"timed out after {ctx.settings.timeout('advertise'):.0f}s waiting for {node} to advertise its "
                    f"GPUs: {'; '.join(whats)}" + (f". {detail.rstrip().rstrip('.')}" if detail else "") +
                    ". Fix: check the device-plugin pod's log on the node")


DEVICE_PLUGIN_CONTAINER = "nvidia-device-plugin"  # the plugin's own container (beside the config manager)


def plugin_not_rendered(ds: dict | None, cm_name: str, default: str) -> str | None:
    """Why the device plugin DaemonSet does not yet carry the sharing config the ClusterPolicy names (None when it
    does): the real operator mounts the ConfigMap into the plugin's pods and gives its config manager
    DEFAULT_CONFIG; the DaemonSet controller must have seen that generation. Pure."""
    if ds is None:
        return f"{DEVICE_PLUGIN_DS}: not created yet"
    tmpl = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    volumes = {(v.get("configMap") or {}).get("name") for v in tmpl.get("volumes") or []}
    if cm_name not in volumes:
        return f"{DEVICE_PLUGIN_DS}: ConfigMap {cm_name} not mounted yet"
    defaults = {e.get("value", "") for c in (tmpl.get("containers") or []) + (tmpl.get("initContainers") or [])
                for e in c.get("env") or [] if e.get("name") == "DEFAULT_CONFIG"}
    if default not in defaults:
        return f"{DEVICE_PLUGIN_DS}: config manager DEFAULT_CONFIG {sorted(defaults)}, want {default!r}"
    if ((ds.get("status") or {}).get("observedGeneration") or 0) < (ds["metadata"].get("generation") or 0):
        return f"{DEVICE_PLUGIN_DS}: generation {ds['metadata'].get('generation')} not yet seen by the DaemonSet controller"
    return None


def update_configmap_keys(ctx: RunContext, namespace: str, name: str, data: dict[str, str],
                          labels: dict[str, str] | None = None, before: dict[str, str | None] | None = None) -> bool:
    """Set `data` keys (and labels) on a ConfigMap, keeping every other key; 409 conflicts are retried (another
    party's keys are kept). `before`: the values of these keys the plan saw; a key changed since is refused
    (ChangedSincePlan), on every try."""
    core = ctx.kube.core

    def read() -> dict:
        try:
            return json.loads(core.read_namespaced_config_map(name, namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404 and before is not None:
                raise changed_since_plan(f"ConfigMap {namespace}/{name} (deleted)") from exc
            raise

    def mutate(obj: dict) -> dict | None:
        cur = obj.get("data") or {}
        cur_labels = obj["metadata"].get("labels") or {}
        if all(cur.get(k) == v for k, v in data.items()) and all(
                cur_labels.get(k) == v for k, v in (labels or {}).items()):
            return None
        moved = sorted(k for k, v in (before or {}).items() if cur.get(k) != v)
        if moved:
            raise changed_since_plan(f"ConfigMap {namespace}/{name} key(s) {', '.join(moved)}")
        ctx.record.add("configmap-keys", f"{namespace}/{name}", {k: cur.get(k) for k in data})
        obj["data"] = {**cur, **data}
        obj["metadata"]["labels"] = {**cur_labels, **(labels or {})}
        return obj

    return ctx.kube.update_with_retry(f"update ConfigMap {namespace}/{name}", read, mutate,
                                      lambda body: core.replace_namespaced_config_map(name, namespace, body))


def write_configmap(ctx: RunContext, p: ConfigMapWrite) -> bool:
    """Execute a planned ConfigMapWrite: create it (the plan saw none; refused when it exists now), or set its
    planned keys (refused when one of them changed since the plan). True when something was written."""
    if p.before is not None:
        return update_configmap_keys(ctx, p.namespace, p.name, p.data, p.labels or None, before=p.before)
    core, what = ctx.kube.core, f"ConfigMap {p.namespace}/{p.name}"
    try:
        core.read_namespaced_config_map(p.name, p.namespace, _request_timeout=ctx.kube.timeout)
        raise changed_since_plan(f"{what} (created by someone else)")
    except ApiException as exc:
        if exc.status != 404:
            raise
    ctx.record.add("configmap", f"{p.namespace}/{p.name}", None)
    try:
        ctx.kube.guarded(f"create {what}", core.create_namespaced_config_map, p.namespace,
                         {"metadata": {"name": p.name, "labels": dict(p.labels)}, "data": dict(p.data)})
    except ApiException as exc:
        if exc.status == 409:
            raise changed_since_plan(f"{what} (created by someone else)") from exc
        raise
    return True


def _field(obj: dict | None, path: tuple[str, ...]) -> dict | None:
    for key in path:
        obj = (obj or {}).get(key)
    return obj


def patch_cluster_policy(ctx: RunContext, p: ClusterPolicyPatch, attempts: int = 3) -> None:
    """Execute a planned ClusterPolicyPatch: refused when the field is not what the plan saw (or there is no
    ClusterPolicy). The merge patch carries the resourceVersion of the object it checked: 409 (written in
    between, e.g. the operator's status) reads and checks again. The field's value before is recorded first."""
    where = f"ClusterPolicy {CP_NAME} {'.'.join(p.path)}"
    for attempt in range(attempts):
        cp = ctx.kube.get_cluster_policy()
        if cp is None:
            raise ConvergeError(f"ClusterPolicy {CP_NAME} does not exist: the operator release did not create it")
        cur = _field(cp, p.path)
        if not p.unseen and (cur or None) != (p.before or None):
            raise changed_since_plan(f"{where} (planned from {p.before}, now {cur})")
        body: dict = dict(p.value)
        for key in reversed(p.path):
            body = {key: body}
        body["metadata"] = {"resourceVersion": cp["metadata"]["resourceVersion"]}
        if attempt == 0:
            ctx.record.add("clusterpolicy-field", ".".join(p.path), cur)
        try:
            ctx.kube.guarded(f"patch {where}", ctx.kube.custom.patch_cluster_custom_object, CP_GROUP, CP_VERSION,
                             CP_PLURAL, CP_NAME, body)
            return
        except ApiException as exc:
            if exc.status != 409 or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def discovery_service(ns: str) -> dict:
    return {
        "name": "gpu-operator",
        "display_name": "GPU Operator",
        "type": "core",
        "category": "ai",
        "endpoints": [
            {"name": "metrics", "type": "http", "url": f"http://nvidia-dcgm-exporter.{ns}.svc.cluster.local:9400",
             "health_url": f"http://nvidia-dcgm-exporter.{ns}.svc.cluster.local:9400/metrics", "primary": True},
            {"name": "operator", "type": "internal", "url": f"http://gpu-operator.{ns}.svc.cluster.local:8080"},
        ],
        "scaling": {"resource_type": "deployment", "resource_name": "gpu-operator", "min_replicas": 1,
                    "can_disable": False},
    }


DISCOVERY_LABELS = {"thinkube.io/managed": "true", "thinkube.io/service-type": "core",
                    "thinkube.io/service-name": "gpu-operator"}


class Discovery:
    name = "discovery"
    depends = ("operator-release",)

    def desired(self, ctx: RunContext) -> dict[str, str]:
        return {"service.yaml": yaml.safe_dump({"service": discovery_service(ctx.settings.namespace)},
                                               sort_keys=False)}

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        ns = ctx.settings.namespace
        cm = ctx.kube.snapshot().configmaps.get(DISCOVERY_CM)
        if cm is None:
            return [Change(self.name, None, f"ConfigMap {ns}/{DISCOVERY_CM}", "create", "service discovery entry",
                           ConfigMapWrite(ns, DISCOVERY_CM, self.desired(ctx), {**DISCOVERY_LABELS, MANAGED_BY: SUITE}))]
        data = cm.get("data") or {}
        labels = cm["metadata"].get("labels") or {}
        want = self.desired(ctx)
        wrong = [k for k in want if data.get(k) != want[k]] + [k for k, v in DISCOVERY_LABELS.items()
                                                               if labels.get(k) != v]
        if wrong:
            return [Change(self.name, None, f"ConfigMap {ns}/{DISCOVERY_CM}", "update", f"fix {wrong}",
                           ConfigMapWrite(ns, DISCOVERY_CM, want, DISCOVERY_LABELS, before={k: data.get(k) for k in want}))]
        return []

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        for c in changes:
            if not isinstance(c.payload, ConfigMapWrite):
                raise ConvergeError(f"{self.name}: no way to apply {c.line()} ({type(c.payload).__name__})")
            write_configmap(ctx, c.payload)
