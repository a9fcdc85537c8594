"""The mig-config converger: each node's desired MIG profile (setting mig_profiles, by node or GPU product) is
applied the way the GPU Operator's MIG manager expects it: the node label nvidia.com/mig.config=<profile>, then
a wait until the MIG manager reports nvidia.com/mig.config.state=success (or failed). The old label is recorded
first, so --rollback restores it. A MIG profile asked of GPUs that GFD labels nvidia.com/mig.capable=false fails
the node with the reason; a profile the MIG manager's mig-parted config does not have fails it too."""

from __future__ import annotations

from provision import expect, mig
from provision.changes import MigWait, NodeLabels, apply_node_labels
from provision.context import NoHostAccess, RunContext
from provision.engine import Change, ConvergeError, Result
from provision.hosts.results import HostUnreachable
from provision.kube import WaitTimeout
from provision.observe import mig as obs


class MigConfig:
    name = "mig-config"
    depends = ("containerd-restart",)

    def _supported(self, ctx: RunContext, result: Result | None = None) -> list[str]:
        skip: set[str] = set(result.node_failures) | set(result.node_errors) if result else set()
        if ctx.engine is not None and ctx.settings.provisioning:   # --plan and the audit show every node's label
            skip |= set(ctx.engine.ensure("host-driver").node_skips) | ctx.engine.unhealthy_nodes()
        return [n for n in ctx.gpu_nodes if n not in skip]

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        nodes = self._supported(ctx, result)
        wanted = {n: mig.desired_profile(ctx.settings.mig_profiles, n, expect.product(ctx, n)) for n in nodes}
        wanted = {n: w for n, w in wanted.items() if w is not None}
        if not wanted:
            return []
        configs, where = mig.mig_parted_configs(ctx)
        if configs is None:
            result.notes.append(f"{where}: MIG profiles are checked against it once the operator runs")
        changes = []
        modes = mig.desired_modes(ctx, sorted(wanted))
        for node, (profile, source) in sorted(wanted.items()):
            labels = (ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
            got = obs.parse_labels(labels)
            if configs is not None and profile not in configs:
                result.node_failures[node] = (
                    f"{node} judged in MIG mode: the desired MIG profile {profile} ({source}) is not a config of the "
                    f"MIG manager's mig-parted config ({where}; known: {', '.join(sorted(configs)[:10])} ...). Fix: "
                    "pick one of its configs, or name your own config in ClusterPolicy spec.migManager.config.name")
                continue
            if got.capable is False and obs.profile_enables_mig(configs, profile):
                result.node_failures[node] = (
                    f"{node} judged in MIG mode: the desired MIG profile {profile} ({source}) cannot be applied: its "
                    f"GPUs ({expect.product(ctx, node) or 'unknown product'}) are not MIG-capable (GFD "
                    f"{obs.CAPABLE_LABEL}=false). Fix: remove the node (or its GPU product) from mig_profiles, or "
                    "set it to all-disabled")
                continue
            mode = modes.get(node)
            wait = MigWait(profile, source, mode.strategy if mode else None)
            if got.config != profile:
                changes.append(Change(self.name, node, f"node {node} label {obs.CONFIG_LABEL}", "label",
                                      f"{got.config} -> {profile} ({source}); the MIG manager repartitions the GPUs "
                                      f"(recorded, --rollback restores {got.config or 'no label'})",
                                      # no `before`: the operator labels MIG-capable nodes all-disabled on its
                                      # own, in its own time (seen between a plan and its apply in the lab); the
                                      # value at apply is what the record keeps for --rollback
                                      NodeLabels({obs.CONFIG_LABEL: profile})))
                changes.append(Change(self.name, node, f"MIG manager on {node}", "wait",
                                      f"{obs.STATE_LABEL} -> success for {profile}", wait))
            elif got.state in ("pending", "rebooting"):
                changes.append(Change(self.name, node, f"MIG manager on {node}", "wait",
                                      f"{obs.STATE_LABEL} {got.state} -> success", wait))
            elif got.state == "failed":
                result.notes.append(f"{node}: the MIG manager reports {obs.STATE_LABEL}=failed for {profile} "
                                    "(the MIG scenarios report it)")
        return changes

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        waits: dict[str, MigWait] = {}
        for c in changes:
            if c.node is None:
                raise ConvergeError(f"{self.name}: a cluster-wide change is not one of its own: {c.line()}")
            if isinstance(c.payload, NodeLabels):
                apply_node_labels(ctx, c.node, c.payload)
            elif isinstance(c.payload, MigWait):
                waits[c.node] = c.payload
            else:
                raise ConvergeError(f"{self.name}: no way to apply {c.line()} ({type(c.payload).__name__})")
        nodes = sorted(waits)
        seen_busy: set[str] = set()

        def layout_done(node: str) -> bool:
            """The MIG manager may have gone pending -> success before the first LIST: then nvidia-smi -L shows
            the profile's devices (a fresh read)."""
            w = waits[node]
            configs, _ = mig.mig_parted_configs(ctx)
            if w.strategy is None or configs is None:
                return True
            mode = mig.MigMode(w.profile, w.source, w.strategy)
            try:
                res = ctx.host(node).run(["nvidia-smi", "-L"], timeout=60)
            except (NoHostAccess, HostUnreachable):
                return False
            return res.rc == 0 and not mig.judge_devices(res.stdout, configs, mode)[0]

        def busy(objs: dict[str, dict]) -> dict[str, str | None]:
            """node -> its MIG manager state, for the nodes not done yet."""
            out = {}
            for n in nodes:
                labels = (objs.get(n, {}).get("metadata") or {}).get("labels") or {}
                state = labels.get(obs.STATE_LABEL)
                if state in ("pending", "rebooting"):
                    seen_busy.add(n)
                if state == "failed" or (state == "success" and (n in seen_busy or layout_done(n))):
                    continue
                out[n] = state
            return out

        def waiting(objs: dict[str, dict]) -> list[str]:
            return [f"{n} ({obs.STATE_LABEL}={state})" for n, state in busy(objs).items()]

        if not nodes:
            return
        try:
            ctx.kube.wait_for("the MIG manager to apply each node's MIG profile", ctx.kube.core.list_node,
                              lambda objs: not busy(objs), waiting, ctx.settings.timeout("mig"))
        except WaitTimeout as exc:
            for node, state in busy(ctx.kube.snapshot(refresh=True).nodes).items():
                result.node_failures[node] = (
                    f"{node} judged in MIG mode: timed out after {ctx.settings.timeout('mig'):.0f}s waiting for the MIG "
                    f"manager: {obs.STATE_LABEL}={state}. Fix: read the nvidia-mig-manager pod's log on "
                    f"the node ({str(exc).splitlines()[0]})")
