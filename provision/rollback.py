"""`--rollback`: restore exactly what the suite changed, from its records, newest first.

Cluster: the helm release (uninstalled when the suite installed it, else rolled back to the revision it
found), ConfigMaps it created (deleted) or keys it changed (restored), ClusterPolicy fields, node labels,
namespaces and CRDs it created. Hosts: files restored from their kept copies or removed when the suite
created them, units it enabled disabled, its state file removed. Nothing the suite did not create is
removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.rest import ApiException

from provision.context import NoHostAccess, RunContext
from provision.converge.hosts import VALIDATIONS_DIR
from provision.converge.operator import OPERATOR_CRD_GROUPS, OPERATOR_LABELS, restore_containerd_baseline
from provision.helm import HelmError
from provision.hosts.results import HostUnreachable
from provision.kube import CP_GROUP, CP_NAME, CP_PLURAL, CP_VERSION
from provision.record import HOST_RECORD, HOST_STATE


@dataclass
class RollbackReport:
    done: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)   # target -> error

    @property
    def changes(self) -> int:
        return len(self.done)


def _ignore_404(fn, *args, **kw) -> bool:
    try:
        fn(*args, **kw)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def rollback_cluster(ctx: RunContext, report: RollbackReport) -> None:
    kube, s = ctx.kube, ctx.settings
    entries = ctx.record.entries()
    for e in sorted(entries, key=lambda e: e["at"], reverse=True):
        kind, target, before = e["kind"], e["target"], e["before"]
        try:
            if kind == "helm-release":
                if before is None:
                    if ctx.helm.release() is not None:
                        ctx.helm.uninstall(s.timeout("helm"))
                        report.done.append(f"helm uninstall {target}")
                else:
                    rel = ctx.helm.release()
                    if rel is not None and rel.revision != before["revision"]:
                        ctx.helm.rollback(before["revision"], s.timeout("helm"))
                        report.done.append(f"helm rollback {target} to revision {before['revision']}")
            elif kind == "configmap":
                ns, name = target.split("/", 1)
                if _ignore_404(kube.guarded, f"delete ConfigMap {target}", kube.core.delete_namespaced_config_map,
                               name, ns):
                    report.done.append(f"delete ConfigMap {target}")
            elif kind == "configmap-keys":
                ns, name = target.split("/", 1)
                try:
                    cm = kube.core.read_namespaced_config_map(name, ns, _request_timeout=kube.timeout)
                except ApiException as exc:
                    if exc.status == 404:
                        continue
                    raise
                data = dict(cm.data or {})
                for k, v in before.items():
                    if v is None:
                        data.pop(k, None)
                    else:
                        data[k] = v
                body = {"metadata": {"name": name, "resourceVersion": cm.metadata.resource_version}, "data": data}
                kube.guarded(f"restore ConfigMap {target}", kube.core.replace_namespaced_config_map, name, ns, body)
                report.done.append(f"restore keys {sorted(before)} of ConfigMap {target}")
            elif kind == "clusterpolicy-field":
                path = target.split(".")
                patch: dict = {}
                cur = patch
                for p in path[:-1]:
                    cur = cur.setdefault(p, {})
                cur[path[-1]] = before
                if _ignore_404(kube.guarded, f"restore ClusterPolicy {target}", kube.custom.patch_cluster_custom_object,
                               CP_GROUP, CP_VERSION, CP_PLURAL, CP_NAME, patch):
                    report.done.append(f"restore ClusterPolicy {target}")
            elif kind == "node-label":
                node, key = target.split(":", 1)
                if _ignore_404(kube.guarded, f"restore label {key} on {node}", kube.core.patch_node, node,
                               {"metadata": {"labels": {key: before}}}):
                    report.done.append(f"restore label {key} on node {node}")
            elif kind == "namespace":
                if _ignore_404(kube.guarded, f"delete Namespace {target}", kube.core.delete_namespace, target):
                    # Wait until it is really gone: a new --provision cannot create in a terminating namespace.
                    kube.wait_for(f"namespace {target} to be deleted", kube.core.list_namespace,
                                  lambda objs, t=target: t not in objs, lambda objs, t=target: [t] if t in objs else [],
                                  s.timeout("helm"), field_selector=f"metadata.name={target}")
                    report.done.append(f"delete Namespace {target}")
            elif kind == "crds-baseline":
                ext = client.ApiextensionsV1Api(kube.api)
                now = {c.metadata.name for c in ext.list_custom_resource_definition(_request_timeout=kube.timeout).items
                       if c.spec.group.endswith(OPERATOR_CRD_GROUPS)}
                for name in sorted(now - set(before)):
                    if _ignore_404(kube.guarded, f"delete CRD {name}", ext.delete_custom_resource_definition, name):
                        report.done.append(f"delete CRD {name} (brought by the chart)")
            elif kind == "node-labels-baseline":
                for node_obj in kube.core.list_node(_request_timeout=kube.timeout).items:
                    name = node_obj.metadata.name
                    was = before.get(name, {})
                    labels = node_obj.metadata.labels or {}
                    patch = {k: None for k in labels if k.startswith(OPERATOR_LABELS) and k not in was}
                    patch.update({k: v for k, v in was.items() if labels.get(k) != v})
                    if patch:
                        kube.guarded(f"restore labels on {name}", kube.core.patch_node, name,
                                     {"metadata": {"labels": patch}})
                        report.done.append(f"restore {len(patch)} operator label(s) on node {name}")
        except (ApiException, HelmError) as exc:
            report.errors[f"{kind} {target}"] = str(exc)
    if not report.errors:
        ctx.record.clear()


def rollback_hosts(ctx: RunContext, report: RollbackReport) -> None:
    for node in ctx.gpu_nodes:
        try:
            host = ctx.host(node)
        except NoHostAccess:
            return
        except HostUnreachable as exc:
            report.errors[f"host {node}"] = str(exc)
            continue
        text = host.read_text(HOST_RECORD)
        if not text:
            continue
        rec = json.loads(text)
        for unit in rec.get("units", []):
            host.run(["systemctl", "disable", "--now", unit], timeout=120, mutates=True)
            report.done.append(f"disable {unit} on {node}")
        for path, entry in sorted(rec.get("files", {}).items()):
            if entry.get("created"):
                if host.exists(path):
                    host.remove(path, backup=False)
                    report.done.append(f"remove {path} on {node}")
            elif entry.get("backup"):
                original = host.read_text(entry["backup"])
                if original is not None and host.read_text(path) != original:
                    host.write_text(path, original, backup=False)
                    report.done.append(f"restore {path} on {node}")
                host.remove(entry["backup"], backup=False)
        if any(p == "/etc/docker/daemon.json" for p in rec.get("files", {})):
            host.run(["systemctl", "restart", "docker"], timeout=120, mutates=True)
        state = json.loads(host.read_text(HOST_STATE) or "{}")
        if "validations_baseline" in state:
            # The readiness markers on tmpfs that the operator's validator and the suite's unit created.
            for path in sorted(set(host.glob(VALIDATIONS_DIR + "/*")) - set(state["validations_baseline"])):
                host.remove(path, backup=False)
                report.done.append(f"remove {path} on {node}")
        baseline = state.get("containerd_baseline")
        if baseline:
            restore_containerd_baseline(host, baseline, keep_backups=False)
            report.done.append(f"restore containerd's config files on {node}")
        for backup in rec.get("backups", []):
            if host.exists(backup):
                host.remove(backup, backup=False)
        for p in (HOST_RECORD, HOST_STATE):
            if host.exists(p):
                host.remove(p, backup=False)


def rollback(ctx: RunContext) -> RollbackReport:
    report = RollbackReport()
    rollback_cluster(ctx, report)
    rollback_hosts(ctx, report)
    return report
