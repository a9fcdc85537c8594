"""The GPU Operator release (helm), and the rolling containerd restart that must follow its toolkit."""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
from dataclasses import replace
from datetime import datetime

import yaml
from packaging.version import InvalidVersion, Version

from provision.changes import ContainerdRestart as RestartPayload
from provision.changes import FileDelete, HelmRelease, changed_since_plan
from provision.context import NoHostAccess, RunContext
from provision.converge.adopt import merge_values
from provision.converge.settle import TEMPLATE_GENERATION, not_rendered
from provision.distribution import layout_for
from provision.engine import Change, ConvergeError, Result
from provision.helm import HelmError, unknown_value_paths
from provision.hostfacts import DEFAULT_BASE_DIR, containerd_facts, has_docker
from provision.hosts.results import HostUnreachable
from provision.kube import WaitTimeout, ready, ready_message
from provision.labels import deploy_label
from provision.observe import distribution as dist
from provision.observe.dra import detect_stack, sharing_values, stack_values, switch_refusal

TOOLKIT_APP = "nvidia-container-toolkit-daemonset"
REPAIR = "repair first: "
TOOLKIT_DEPLOY_LABEL = deploy_label("container-toolkit")
DROPIN_NAME = dist.DROPIN_NAME
CONTAINERD_SERVICE = "k8s.containerd"
# NotReady messages of a containerd that refused its configuration: waiting does not heal them.
PERMANENT_RUNTIME_ERRORS = ("failed to load plugin", "higher than root config version", "failed to load TOML")
# Labels and CRD groups the operator's chart (operator, NFD, GFD) brings to a cluster.
OPERATOR_LABELS = ("nvidia.com/", "feature.node.kubernetes.io/", "nfd.node.kubernetes.io/")
OPERATOR_CRD_GROUPS = ("nvidia.com", "nfd.k8s-sigs.io")


def _containerd_below_17(version: str) -> bool:
    raw = version.split("://", 1)[-1].split("-")[0].lstrip("v")
    try:
        return Version(raw) < Version("1.7")
    except InvalidVersion:
        return False


def desired_values(ctx: RunContext) -> tuple[dict, list[str]]:
    """Chart values that work on the GPU nodes' distribution (k8s-snap, kubeadm; k3s/RKE2/MicroK8s as the GPU
    Operator docs give them), read from the nodes themselves; plus notes on how."""
    notes: list[str] = []
    base_dirs: dict[str, str] = {}
    conf_ds: dict[str, str] = {}
    distributions: dict[str, str] = {}
    layouts: dict[str, dist.Layout] = {}
    snapshot_nodes = ctx.kube.snapshot().nodes
    for node in ctx.gpu_nodes:
        try:
            host = ctx.host(node)
            lay = layout_for(host, snapshot_nodes.get(node))
            facts = containerd_facts(host, lay)
        except (NoHostAccess, HostUnreachable) as exc:
            notes.append(f"{node}: containerd paths not read ({exc})")
            found = dist.detect_node(snapshot_nodes.get(node) or {})
            if found.name:
                distributions[node] = found.name
            continue
        distributions[node] = facts.distribution
        if lay is not None:
            layouts[facts.distribution] = lay
        if facts.distribution != dist.K8S_SNAP:
            conf_ds[node] = facts.conf_d
            continue
        base_dirs[node] = facts.base_dir
        conf_ds[node] = facts.conf_d
    mixed = dist.mixed_message(distributions)
    if mixed:
        raise ConvergeError(mixed)
    kind = next(iter(distributions.values()), dist.K8S_SNAP)
    if kind != dist.K8S_SNAP:
        lay = layouts.get(kind) or dist.layout(kind)
        if conf_ds and kind == dist.KUBEADM:
            lay = replace(lay, conf_d=sorted(set(conf_ds.values()))[0])
        env = dist.toolkit_env(lay)
        notes.append(f"{kind} nodes ({', '.join(sorted(distributions))}): toolkit paths of {kind} "
                     f"({lay.root_config}, socket {lay.socket})")
        old = [n for n in ctx.gpu_nodes if _containerd_below_17(dist.node_info(snapshot_nodes.get(n) or {})[
            "containerRuntimeVersion"])]
        if old:
            notes.append(f"cdi.enabled=false: containerd older than 1.7 on {', '.join(old)}")
        return {"driver": {"enabled": False}, "toolkit": {"env": env}, "cdi": {"enabled": not old}}, notes
    bases = set(base_dirs.values())
    if len(bases) > 1:
        raise ConvergeError("GPU nodes use different containerd base dirs "
                            f"({base_dirs}); the operator's toolkit settings are cluster-wide: align the nodes")
    base = bases.pop() if bases else DEFAULT_BASE_DIR
    conf_d = sorted(set(conf_ds.values()))[0] if conf_ds else posixpath.join(base, "k8s-containerd/etc/containerd/conf.d")
    snap = posixpath.join(base, "k8s-containerd")
    nodes = ctx.kube.snapshot().nodes
    old = [n for n in ctx.gpu_nodes if _containerd_below_17(
        ((nodes.get(n, {}).get("status") or {}).get("nodeInfo") or {}).get("containerRuntimeVersion", ""))]
    values = {
        "driver": {"enabled": False},
        "toolkit": {"env": [
            {"name": "CONTAINERD_CONFIG", "value": posixpath.join(snap, "etc/containerd/config.toml")},
            {"name": "CONTAINERD_SOCKET", "value": posixpath.join(snap, "run/containerd/containerd.sock")},
            {"name": "RUNTIME_DROP_IN_CONFIG", "value": posixpath.join(conf_d, DROPIN_NAME)},
            {"name": "RUNTIME_CONFIG_SOURCE", "value": "file"},
            # the installer's default (signal) makes every node's containerd exit at once when the toolkit pods
            # start (SIGHUP; systemd restarts it): the suite restarts them one by one instead (containerd-restart)
            {"name": "RUNTIME_RESTART_MODE", "value": "none"},
        ]},
        "cdi": {"enabled": not old},
    }
    if ctx.settings.cdi_nri_plugin:   # issue 16: the toolkit's NRI plugin (the chart renders it only with CDI on)
        if old:
            raise ConvergeError(f"cdi_nri_plugin needs CDI, which containerd older than 1.7 on {', '.join(old)} "
                                "cannot do: upgrade containerd (>= 1.7.30 or 2.1+) or leave the NRI plugin off")
        values["cdi"]["nriPluginEnabled"] = True
        notes.append("cdi.nriPluginEnabled=true: runtime mode nri (no nvidia RuntimeClass, no containerd drop-in)")
    if old:
        notes.append(f"cdi.enabled=false: containerd older than 1.7 on {', '.join(old)}")
    from provision import mig

    mig_values, mig_notes = mig.chart_values(ctx)  # ClusterPolicy spec.mig.strategy for the MIG nodes
    values.update(mig_values)
    notes += mig_notes
    if ctx.settings.stack == "dra":
        # GPUCluster mode (docs/dra.md): the chart's singleton GPUCluster instead of the ClusterPolicy; ClusterPolicy
        # mode adds nothing here (a v26.3.0 chart has no gpuCluster value).
        values.update(stack_values("dra"))
        values.update(sharing_values(ctx.settings.dra_sharing))
        notes.append("stack dra: gpuCluster.deployCR=true, clusterPolicy.deployCR=false (the GPUCluster stack runs "
                     "the DRA driver, no device plugin and no container toolkit)")
    docker = [n for n in ctx.gpu_nodes if n in base_dirs and has_docker(ctx.host(n))]
    if docker:
        notes.append(f"RUNTIME_CONFIG_SOURCE=file on {', '.join(docker)}: the toolkit's default source `command` "
                     "runs the containerd on PATH, Docker's there, and copies its config (CRI disabled, no runc) into "
                     "the drop-in, which the snap's containerd 1.x then refuses (canonical/k8s-snap#1991)")
    return values, notes


DOWNGRADE_REFUSED = "a downgrade: --provision refuses it"


def _version(v: str) -> Version | None:
    try:
        return Version(v.lstrip("v"))
    except InvalidVersion:
        return None


def is_downgrade(installed: str, wanted: str) -> bool:
    have, want = _version(installed), _version(wanted)
    return have is not None and want is not None and want < have


def downgrade_error(ns: str, release: str, installed: str, wanted: str) -> str:
    return (f"helm release {ns}/{release} runs chart {installed}; {wanted} is older. The GPU Operator has no "
            f"downgrade path: helm would keep the newer CRDs' stored fields, the chart's pre-upgrade hook would "
            f"apply the older CRDs over them, and the older operator would reconcile a ClusterPolicy written for "
            f"the newer one. Nothing was changed. To go back: `pytest features/ --rollback` (returns to the "
            f"revision before this suite's upgrade), or `helm rollback {release} -n {ns}`, or uninstall and "
            f"install {wanted}; or keep --chart-version {installed}")

def _node_runtime_failure(ctx: RunContext, node: str) -> str | None:
    """Audit of a node whose containerd restart the suite did not record: when the node's own containerd (config
    dump) already has no runc or no nvidia, say that with containerd's words instead of "not converged"."""
    from provision import checks  # late: checks imports this module

    try:
        finding = checks.containerd_runtimes(ctx, node)
    except checks.NotApplicable:   # runtime mode nri: containerd has no nvidia runtime to load
        return None
    return None if finding.ok else f"containerd on {node} does not run with runc and nvidia: {finding.message}"


def installed_stack(ctx: RunContext) -> tuple[str | None, str | None]:
    """(stack the cluster runs, error): from the ClusterPolicy and GPUCluster CRs that exist (docs/dra.md)."""
    from provision.dra import list_gpu_clusters

    cp = ctx.kube.get_cluster_policy()
    st = detect_stack([cp] if cp else [], list_gpu_clusters(ctx.kube))
    return st.mode, st.error


def stack_refusal(ctx: RunContext) -> str | None:
    """Why --provision must not touch the release: both CRs exist, or it runs the other stack and switching was
    not asked for. None: go ahead."""
    mode, error = installed_stack(ctx)
    if error:
        return error
    want = ctx.settings.stack
    if mode is not None and mode != want and not ctx.settings.switch_stack:
        return switch_refusal(mode, want)
    return None


class OperatorRelease:
    name = "operator-release"
    depends = ("docker-runtime", "host-driver", "runc-dropin")

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        s = ctx.settings
        values, notes = desired_values(ctx)
        result.notes += notes
        rel = ctx.helm.release()
        target = f"helm release {s.namespace}/{s.release}"
        if rel is None:
            return [Change(self.name, None, target, "install",
                           f"chart gpu-operator {s.chart_version} from {s.chart_repo}; values " + yaml.safe_dump(
                               values, default_flow_style=True, width=1000).strip(),
                           HelmRelease(s.chart_version, values, None, suite_values=values))]
        changes = []
        refused = stack_refusal(ctx)
        if refused:
            return [Change(self.name, None, target, "upgrade", f"stack {s.stack} (refused: {refused})",
                           HelmRelease(s.chart_version, {}, rel.revision, refused=refused))]
        user, effective = ctx.helm.values(), ctx.helm.values(all_values=True)
        # An existing release keeps its own values (the playbooks', a hand install's): the suite's are merged in.
        merged, value_changes, kept = merge_values(user, values, effective)
        upgrade = HelmRelease(s.chart_version, merged, rel.revision, suite_values=values)
        down = is_downgrade(rel.chart_version, s.chart_version)
        if down:   # refused whatever else the upgrade would do (also for a release that is not deployed)
            upgrade = replace(upgrade, refused=downgrade_error(s.namespace, s.release, rel.chart_version,
                                                               s.chart_version))
        adopted = self._adopting(ctx)
        if adopted:
            result.kept.append(f"helm release {s.namespace}/{s.release} revision {rel.revision} ({rel.chart}), "
                               "installed by other means: its own values are merged, not replaced; --rollback "
                               f"returns to revision {rel.revision}")
        result.kept += [f"value {k}" for k in kept]
        what = "; ".join(value_changes)
        if rel.status != "deployed":
            changes.append(Change(self.name, None, target, "upgrade",
                                  f"release status is {rel.status!r}, want deployed" + (f"; {what}" if what else ""),
                                  upgrade))
        elif rel.chart_version != s.chart_version:
            refused = f" ({DOWNGRADE_REFUSED})" if down else ""
            changes.append(Change(self.name, None, target, "upgrade",
                                  f"chart {rel.chart_version} -> {s.chart_version}{refused}" + (f"; {what}" if what else ""),
                                  upgrade))
        elif value_changes:
            changes.append(Change(self.name, None, target, "upgrade", ("adopt: " if adopted else "") + what, upgrade))
        return changes

    @staticmethod
    def _adopting(ctx: RunContext) -> bool:
        """The release exists and the suite's record has no entry for it: someone else installed it."""
        s = ctx.settings
        try:
            entries = ctx.record.entries()
        except Exception:  # noqa: BLE001 - no record readable: judged as not the suite's
            entries = []
        return not any(e["kind"] == "helm-release" and e["target"] == f"{s.namespace}/{s.release}" for e in entries)

    def validate(self, ctx: RunContext, values: dict) -> None:
        """Before any change: the chart version exists and every value exists in the chart's values.yaml."""
        s = ctx.settings
        ctx.helm.repo_add()
        versions = ctx.helm.chart_versions()
        if s.chart_version not in versions:
            raise ConvergeError(f"unknown GPU Operator chart version {s.chart_version} in {s.chart_repo}; "
                                f"available: {', '.join(versions[:10]) or 'none'}; fix --chart-version")
        unknown = unknown_value_paths(values, ctx.helm.chart_values(s.chart_version))
        if unknown:
            raise ConvergeError(f"values not in the chart's values.yaml (the chart would ignore them): {unknown}")

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        s = ctx.settings
        releases = [c.payload for c in changes if isinstance(c.payload, HelmRelease)]
        if len(releases) != 1 or len(changes) != 1:
            raise ConvergeError(f"{self.name}: expected one helm release change, planned: "
                                + "; ".join(c.line() for c in changes))
        planned = releases[0]
        if planned.refused:
            raise ConvergeError(planned.refused)
        self.validate(ctx, planned.suite_values)
        before = ctx.helm.release()
        if (before.revision if before else None) != planned.revision:
            now = f"revision {before.revision}" if before else "no release"
            raise changed_since_plan(f"helm release {s.namespace}/{s.release} (planned on "
                                     f"{'revision ' + str(planned.revision) if planned.revision else 'no release'}, "
                                     f"now {now})")
        if before is not None and before.status.startswith("pending-"):
            # A helm operation is running, or was killed before it could finish (helm would refuse with "another
            # operation is in progress"). Neither an upgrade nor a rollback is safe then: change nothing, say so.
            first = f" (or helm uninstall {s.release} -n {s.namespace}: it is a first install)" \
                if before.status == "pending-install" else ""
            raise ConvergeError(
                f"helm release {s.namespace}/{s.release} is {before.status} at revision {before.revision} "
                f"({before.chart}): another helm operation is running or was killed before it finished; nothing was "
                f"changed. If no helm operation is running, run helm rollback {s.release} -n {s.namespace}{first}, "
                "then --provision again")
        ns_existed = self._namespace_exists(ctx)
        if before is None:
            # What the operator, NFD and GFD will label, and which CRDs the chart brings, is only known
            # afterwards: keep the state from before so that rollback can return to it exactly.
            ctx.record.add("node-labels-baseline", "all-nodes", {
                name: {k: v for k, v in (obj["metadata"].get("labels") or {}).items() if k.startswith(OPERATOR_LABELS)}
                for name, obj in ctx.kube.snapshot(refresh=True).nodes.items()})
            ctx.record.add("crds-baseline", "operator-groups", sorted(self._crds(ctx)))
        if not ns_existed:  # recorded first: rollback replays newest first, the release goes before its namespace
            ctx.record.add("namespace", s.namespace, None)
        ctx.record.add("helm-release", f"{s.namespace}/{s.release}",
                       {"revision": before.revision, "chart": before.chart} if before else None)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(planned.values, f)
            values_file = f.name
        try:
            ctx.helm.upgrade_install(planned.chart_version, values_file, s.timeout("helm"))
        except HelmError as exc:
            restored = "nothing to restore"
            try:
                if before is not None:
                    ctx.helm.rollback(before.revision, s.timeout("helm"))
                    restored = f"restored revision {before.revision} ({before.chart})"
                else:
                    ctx.helm.uninstall(s.timeout("helm"))
                    restored = "removed the failed first install"
            except HelmError as rb:
                restored = f"could not restore: {rb}"
            raise ConvergeError(f"helm upgrade --install failed: {exc}; {restored}") from exc
        finally:
            os.unlink(values_file)

    @staticmethod
    def _crds(ctx: RunContext) -> set[str]:
        from kubernetes import client

        items = client.ApiextensionsV1Api(ctx.kube.api).list_custom_resource_definition(
            _request_timeout=ctx.kube.timeout).items
        return {c.metadata.name for c in items if c.spec.group.endswith(OPERATOR_CRD_GROUPS)}

    @staticmethod
    def _namespace_exists(ctx: RunContext) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            ctx.kube.core.read_namespace(ctx.settings.namespace, _request_timeout=ctx.kube.timeout)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise


class ContainerdRestart:
    """After the toolkit has written its drop-in on a node, restart that node's containerd, one node at a
    time, each Ready again before the next. On the first node that does not come back: restore its previous
    containerd files, restart it again, and fail with the node's error; the other nodes are not touched."""

    name = "containerd-restart"
    depends = ("operator-release",)

    def _dropin(self, ctx: RunContext) -> str | None:
        """Where the toolkit's drop-in is to be: the suite's RUNTIME_DROP_IN_CONFIG (also before an adopted release
        is upgraded to it: the plan names the file the new configuration writes), else the ClusterPolicy's."""
        try:
            values, _ = desired_values(ctx)
            want = {e["name"]: e["value"] for e in values["toolkit"]["env"]}.get("RUNTIME_DROP_IN_CONFIG")
            if want:
                return want
        except ConvergeError:
            pass
        return dist.policy_dropin(ctx.kube.snapshot().cluster_policy)

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        if ctx.settings.stack == "dra":
            result.notes.append("stack dra: the GPUCluster stack has no container toolkit (the DRA driver hands "
                                "devices to containerd through CDI): no containerd restart")
            return []
        changes = []
        if ctx.settings.cdi_nri_plugin or (not ctx.settings.provisioning and self._nri(ctx)):
            result.notes.append("runtime mode nri: the toolkit configures no containerd runtime (its installer's "
                                "no-op configurer with ENABLE_NRI_PLUGIN), so there is no drop-in to load and "
                                "containerd is not restarted")
            return changes
        dropin = self._dropin(ctx)
        nodes = ctx.kube.snapshot().nodes
        for node in ctx.gpu_nodes:
            labels = ((nodes.get(node) or {}).get("metadata") or {}).get("labels") or {}
            if labels.get(TOOLKIT_DEPLOY_LABEL) == "false":
                # No toolkit pod will ever run there (an unsupported GPU, or turned off by its owner): there is
                # no drop-in to load, and the operator leaves the node's containerd alone.
                result.node_skips[node] = f"{TOOLKIT_DEPLOY_LABEL}=false: no container toolkit on {node}"
                continue
            try:
                host = ctx.host(node)
            except NoHostAccess as exc:
                result.skip_host_off(node, exc)
                continue
            except HostUnreachable as exc:
                result.node_errors[node] = str(exc)
                continue
            text = host.read_text(dropin) if dropin else None
            state = ctx.host_record(node).state()
            restarted_for = state.get("containerd_restarted_for")
            needs_restart = text is None or restarted_for != _sha(text)
            if state.get("containerd_restart_failed") and needs_restart and ctx.settings.mode != "provision":
                result.node_failures[node] = (f"containerd on {node} does not run the NVIDIA runtime: the last "
                                              f"--provision had to revert it. {state['containerd_restart_failed']}")
            if needs_restart and ctx.settings.mode != "provision" and node not in result.node_failures:
                failure = _node_runtime_failure(ctx, node)   # the node's own containerd already refuses
                if failure:
                    result.node_failures[node] = failure
            restart = RestartPayload(dropin)
            stale_dropins = self._stale_dropins(host, dropin)
            if text is None:
                changes.append(Change(self.name, node, f"containerd on {node}", "restart",
                                      f"after the toolkit writes {dropin}", restart))
            elif restarted_for != _sha(text):
                changes.append(Change(self.name, node, f"containerd on {node}", "restart",
                                      f"load {dropin} ({' '.join(restart_argv(host))})", restart))
            elif stale_dropins:   # the restart that loads the drop-in without them
                changes.append(Change(self.name, node, f"containerd on {node}", "restart",
                                      f"load {dropin} without {', '.join(stale_dropins)}", restart))
            down = self._runtime_error(ctx, node)
            if down:
                changes.append(Change(self.name, node, f"containerd on {node}", "restart", REPAIR + (
                    f"containerd fails to load its configuration ({down}) and no new toolkit pod can start on a "
                    "NotReady node: restarted once with the previous toolkit's drop-in out of the way"),
                    RestartPayload(dropin, repair=True)))
            for stale in stale_dropins:
                changes.append(Change(
                    self.name, node, f"{stale} on {node}", "delete",
                    "the previous toolkit configuration's drop-in, still imported by containerd (its toolkit pod "
                    "removes it when it stops; what is left then is removed before the restart, kept in the record)",
                    FileDelete(stale)))
        return changes

    @staticmethod
    def _nri(ctx: RunContext) -> bool:
        """The operator renders the toolkit with the NRI plugin (ClusterPolicy / rendered env), issue 16."""
        from provision import expect
        from provision.observe import runtime_mode as rm

        return expect.runtime_mode(ctx)[0] == rm.NRI

    @staticmethod
    def _runtime_error(ctx: RunContext, node: str) -> str | None:
        """The node's NotReady message when its containerd refuses its configuration (waiting will not heal it)."""
        obj = ctx.kube.snapshot().nodes.get(node)
        if obj is None or ready(obj):
            return None
        msg = ready_message(obj)
        return msg if any(m in msg for m in PERMANENT_RUNTIME_ERRORS) else None

    @staticmethod
    def _remove_stale(ctx: RunContext, host, node: str, stale: list[str]) -> None:
        """Remove the planned stale drop-ins that are still there (the toolkit pod removes its own when it stops),
        each one's content and backup kept in the host record."""
        for path in stale:
            text = host.read_text(path)
            if text is None:
                continue
            ctx.host_record(node).file_changed(path, text)
            ctx.host_record(node).backup_made(host.remove(path).backup_path)

    def _repair(self, ctx: RunContext, host, node: str, stale: list[str], result: Result) -> bool:
        """A node whose containerd fails on the previous configuration (the playbooks' drop-in without runc on a
        Docker host): move that drop-in out of the way (recorded), and restart containerd if what is left has
        runc; True when the node is Ready again."""
        self._remove_stale(ctx, host, node, stale)
        facts = containerd_facts(host)
        eff = facts.effective
        if eff is None or "runc" not in eff.runtimes or eff.default_runtime_name not in (None, "runc"):
            found = facts.error or f"runtimes {sorted(eff.runtimes) if eff else []}"
            result.node_failures[node] = (f"containerd on {node} fails to load its configuration and the files "
                                          f"left give no runc default runtime ({found}); nothing restarted. Fix: "
                                          "read `snap logs k8s.containerd` on the node")
            return False
        # Judged by a Ready condition only: the node's NotReady message from before the restart would read as
        # the restart's own failure (_restart_and_wait stops at the first permanent error it sees).
        res = host.run(restart_argv(host), timeout=180, mutates=True)
        kube = ctx.kube
        try:
            if not res.ok:
                raise WaitTimeout(res.stderr.strip() or res.stdout.strip())
            kube.wait_for(f"{node} to be Ready after the repair restart of containerd", kube.core.list_node,
                          lambda objs: node in objs and ready(objs[node]), lambda _: [node],
                          ctx.settings.timeout("node_ready"), field_selector=f"metadata.name={node}")
        except WaitTimeout as exc:
            obj = kube.snapshot(refresh=True).nodes.get(node) or {}
            result.node_failures[node] = (f"containerd on {node} did not come back after the repair restart: "
                                          f"{ready_message(obj) if obj else exc}. Fix: read `snap logs k8s.containerd` "
                                          "on the node")
            return False
        return True

    @staticmethod
    def _stale_dropins(host, dropin: str | None) -> list[str]:
        """Toolkit drop-ins of the same name as `dropin` in another directory containerd imports: the previous
        configuration's (the playbooks' toolkit wrote /etc/containerd/conf.d/99-nvidia.toml). Read after ours,
        its CRI table would replace ours (imports do not deep-merge)."""
        if not dropin:
            return []
        facts = containerd_facts(host)
        name = posixpath.basename(dropin)
        return [p for p in facts.dropins() if posixpath.basename(p) == name and p != dropin]

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        restarts: dict[str, list[RestartPayload]] = {}
        stale: dict[str, list[str]] = {}
        for c in changes:
            if c.node is None:
                raise ConvergeError(f"{self.name}: a cluster-wide change is not one of its own: {c.line()}")
            if isinstance(c.payload, RestartPayload):
                restarts.setdefault(c.node, []).append(c.payload)
            elif isinstance(c.payload, FileDelete):
                stale.setdefault(c.node, []).append(c.payload.path)
            else:
                raise ConvergeError(f"{self.name}: no way to apply {c.line()} ({type(c.payload).__name__})")
        dropins = {p.dropin for ps in restarts.values() for p in ps}
        if len(dropins) != 1 or set(stale) - set(restarts):
            raise ConvergeError(f"{self.name}: the plan names drop-ins {sorted(dropins)} and stale drop-ins on nodes "
                                f"{sorted(set(stale) - set(restarts))} without a restart; expected one drop-in and a "
                                "restart on every node with a change")
        dropin = dropins.pop()
        repaired_failed = set()
        for node in sorted(n for n, ps in restarts.items() if any(p.repair for p in ps)):
            if not self._repair(ctx, ctx.host(node), node, stale.get(node, []), result):
                repaired_failed.add(node)
        generation = self._wait_rendered(ctx, dropin)
        todo = sorted(n for n in restarts if n not in repaired_failed)
        for i, node in enumerate(todo):
            host = ctx.host(node)
            self._wait_toolkit(ctx, node, generation)
            text = self._wait_dropin(ctx, host, node, dropin)
            self._remove_stale(ctx, host, node, stale.get(node, []))
            error = self._restart_and_wait(ctx, host, node)
            if error is None:
                ctx.host_record(node).set_state("containerd_restarted_for", _sha(text))
                ctx.host_record(node).set_state("containerd_restart_failed", None)
                continue
            revert = self._revert(ctx, host, node)
            result.node_failures[node] = (f"containerd on {node} did not come back after loading the NVIDIA "
                                          f"drop-in: {error}; {revert}. Other nodes were not restarted. Fix: "
                                          "make the toolkit copy a config that has runc (toolkit env "
                                          "RUNTIME_CONFIG_SOURCE=file, CONTAINERD_CONFIG=<the snap's config.toml>), "
                                          "read `snap logs k8s.containerd` on the node, then run --provision again "
                                          "(canonical/k8s-snap#1991: a drop-in whose CRI section lacks runc)")
            ctx.host_record(node).set_state("containerd_restart_failed", result.node_failures[node])
            for later in todo[i + 1:]:
                result.node_errors[later] = (f"containerd not restarted: the rolling restart stopped at {node} "
                                                  "(fix that node, then run --provision again)")
            return

    def _wait_rendered(self, ctx: RunContext, dropin: str) -> str:
        """Wait until the operator has rendered the toolkit DaemonSet for the current configuration (its image,
        a generation the DaemonSet controller has counted, and the drop-in path `dropin`); return that
        generation. After `helm upgrade` of an adopted release the DaemonSet runs the previous configuration
        until the new operator holds its lease and has reconciled."""
        kube, ns = ctx.kube, ctx.settings.namespace
        cp = kube.get_cluster_policy()

        def missing(objs: dict[str, dict]) -> list[str]:
            out = not_rendered(cp, objs, [TOOLKIT_APP])
            ds = objs.get(TOOLKIT_APP)
            have = toolkit_dropin(ds) if ds else None
            if ds is not None and not out and have != dropin:
                out.append(f"{TOOLKIT_APP}: renders the drop-in {have or 'at the default path'}, want {dropin}")
            return out

        objs = kube.wait_for(f"the operator to render {TOOLKIT_APP} for {dropin}", kube.apps.list_namespaced_daemon_set,
                             lambda o: not missing(o), missing, ctx.settings.timeout("toolkit_ready"), lambda _: "", ns,
                             field_selector=f"metadata.name={TOOLKIT_APP}")
        return str(objs[TOOLKIT_APP]["metadata"].get("generation", ""))

    def _wait_toolkit(self, ctx: RunContext, node: str, generation: str | None = None) -> None:
        """The node's toolkit pod of the DaemonSet's current template is ready (a pod of an earlier template runs
        the previous configuration and wrote its drop-in elsewhere: it never counts)."""
        ns = ctx.settings.namespace

        def current(p: dict) -> bool:
            labels = p["metadata"].get("labels") or {}
            return not p["metadata"].get("deletionTimestamp") and (
                generation is None or labels.get(TEMPLATE_GENERATION) == generation)

        def done(pods: dict[str, dict]) -> bool:
            return any(p["spec"].get("nodeName") == node and current(p) and ready(p) for p in pods.values())

        def diagnostics(pods: dict[str, dict]) -> str:
            mine = [p for p in pods.values() if p["spec"].get("nodeName") == node]
            lines = [f"{p['metadata']['name']}: phase {p.get('status', {}).get('phase')}, template generation "
                     f"{(p['metadata'].get('labels') or {}).get(TEMPLATE_GENERATION)} (want {generation})" for p in mine]
            for p in mine:
                lines += ctx.kube.events_for(p["metadata"]["name"], ns)[-3:]
            return "\n".join(lines) or f"no {TOOLKIT_APP} pod on {node}"

        # Only this node's pod: without the field selector each node's wait listed every toolkit pod of the fleet.
        ctx.kube.wait_for(f"the container toolkit pod on {node} (template generation {generation}) to be ready",
                          ctx.kube.core.list_namespaced_pod, done, lambda _: [node],
                          ctx.settings.timeout("toolkit_ready"), diagnostics, ns,
                          label_selector=f"app={TOOLKIT_APP}", field_selector=f"spec.nodeName={node}")

    def _wait_dropin(self, ctx: RunContext, host, node: str, dropin: str) -> str:
        text = host.read_text(dropin)
        if text is None:
            raise ConvergeError(f"the toolkit pod on {node} is ready but {dropin} is not on the host: the toolkit "
                                "writes somewhere containerd does not read; check RUNTIME_DROP_IN_CONFIG")
        return text

    def _restart_and_wait(self, ctx: RunContext, host, node: str) -> str | None:
        """Restart the node's containerd and judge it from the node's Ready condition: a Ready status posted
        after the restart means it came back; NotReady with a configuration error will not heal and fails at
        once; otherwise it must be Ready again within the node_ready timeout. If the node posts nothing new,
        staying Ready through the runtime_settle window counts as back."""
        restarted = time.time()
        argv = restart_argv(host)
        res = host.run(argv, timeout=180, mutates=True)
        if not res.ok:
            return f"`{' '.join(argv)}` failed: {res.stderr.strip() or res.stdout.strip()}"
        seen: dict[str, str] = {}

        def fresh_ready(objs: dict[str, dict]) -> bool:
            obj = objs.get(node)
            if obj is None:
                return False
            cond = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
            if cond.get("status") != "True":
                seen["down"] = ready_message(obj)
                return any(marker in seen["down"] for marker in PERMANENT_RUNTIME_ERRORS)
            return _epoch(cond.get("lastHeartbeatTime")) >= int(restarted)

        kube, s = ctx.kube, ctx.settings
        try:
            objs = kube.wait_for(f"{node} to post its status after the containerd restart", kube.core.list_node,
                                 fresh_ready, lambda _: [node], s.timeout("runtime_settle"),
                                 field_selector=f"metadata.name={node}")
            if ready(objs[node]):
                return None
            return seen.get("down") or ready_message(objs[node])
        except WaitTimeout:
            if "down" not in seen:
                return None  # stayed Ready through the settle window
        try:
            kube.wait_for(f"{node} to be Ready again after its containerd restart", kube.core.list_node,
                          lambda objs: node in objs and ready(objs[node]), lambda _: [node], s.timeout("node_ready"),
                          field_selector=f"metadata.name={node}")
            return None
        except WaitTimeout:
            return seen.get("down", "not Ready")

    def _revert(self, ctx: RunContext, host, node: str) -> str:
        baseline = ctx.host_record(node).state().get("containerd_baseline") or {}
        if not baseline:
            return "no baseline of containerd's files was kept, nothing reverted"
        res = restore_containerd_baseline(host, baseline)
        try:
            ctx.kube.wait_for(f"{node} to be Ready after the revert", ctx.kube.core.list_node,
                              lambda ns: node in ns and ready(ns[node]), lambda _: [node],
                              ctx.settings.timeout("node_ready"), field_selector=f"metadata.name={node}")
            return "its previous containerd files were restored and it is Ready again"
        except Exception as exc:  # noqa: BLE001
            return f"its previous containerd files were restored but it is not Ready yet ({exc}; restart rc {res.rc})"


def restore_containerd_baseline(host, baseline: dict[str, str], keep_backups: bool = True):
    """Put containerd's config files back as they were before the suite's first provisioning (files added
    since then in the imported directories are removed, changed ones rewritten), then restart containerd.
    After a failed restart the replaced files are kept as .bak copies for the post-mortem; rollback does not
    keep them (it returns the host to exactly how it was)."""
    facts = containerd_facts(host)
    for path in sorted(set(facts.files) - set(baseline)):
        host.remove(path, backup=keep_backups)
    for path, text in baseline.items():
        if facts.files.get(path) != text:
            host.write_text(path, text, backup=keep_backups)
    return host.run(restart_argv(host), timeout=180, mutates=True)


def restart_argv(host) -> list[str]:
    """How the host's containerd is restarted: `snap restart k8s.containerd` on k8s-snap (also when nothing is
    detected, as before), `systemctl restart containerd` on kubeadm (provision/observe/distribution.py)."""
    lay = layout_for(host)
    if lay is None or lay.distribution == dist.K8S_SNAP:
        return ["snap", "restart", CONTAINERD_SERVICE]
    return list(lay.restart)


def toolkit_dropin(ds: dict) -> str | None:
    """The drop-in host path a rendered toolkit DaemonSet writes (RUNTIME_DROP_IN_CONFIG_HOST_PATH, which the
    operator sets from the ClusterPolicy's RUNTIME_DROP_IN_CONFIG). Pure."""
    tmpl = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in (tmpl.get("containers") or []) + (tmpl.get("initContainers") or []):
        for e in c.get("env") or []:
            if e.get("name") == "RUNTIME_DROP_IN_CONFIG_HOST_PATH":
                return e.get("value")
    return None


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
