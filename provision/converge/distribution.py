"""Before any change: --provision changes only nodes of distributions it knows how to change (k8s-snap, kubeadm),
and only when all GPU nodes run one distribution (the toolkit's settings are cluster-wide). Elsewhere it stops and
says what to change by hand (provision/observe/distribution.py)."""

from __future__ import annotations

import json
from pathlib import Path

from provision.atomic import write_atomic
from provision.context import RunContext
from provision.distribution import node_distribution
from provision.engine import Change, ConvergeError, Result
from provision.labels import deploy_label
from provision.observe import distribution as dist

OPERANDS_OFF = deploy_label("operands")   # =false: the GPU Operator runs no operand on the node
DISTRIBUTIONS_FILE = "distributions.json"   # in the run folder: summary.json's per-node "distribution"


def write_distributions(run_dir: Path, data: dict[str, dict[str, str | None]]) -> None:
    write_atomic(Path(run_dir) / DISTRIBUTIONS_FILE, json.dumps(data, indent=2, sort_keys=True))


def read_distributions(run_dir: Path) -> dict[str, dict[str, str | None]]:
    try:
        return json.loads((Path(run_dir) / DISTRIBUTIONS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class DistributionGate:
    name = "distribution"
    depends: tuple[str, ...] = ()

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        found = {node: node_distribution(ctx, node) for node in ctx.gpu_nodes}
        write_distributions(ctx.run_dir, {n: {"distribution": d.name, "evidence": d.evidence} for n, d in found.items()})
        result.notes += [f"[{node}] distribution {d.name or 'not detected'} ({d.evidence})" for node, d in found.items()]
        if ctx.settings.mode != "provision":
            return []
        known = {node: d.name for node, d in found.items() if d.name}
        mixed = dist.mixed_message(known)
        if mixed:
            raise ConvergeError(mixed)
        groups: dict[str, list[str]] = {}
        for node, name in known.items():
            groups.setdefault(name, []).append(node)
        for name, nodes in sorted(groups.items()):
            if name not in dist.PROVISIONABLE:
                raise ConvergeError(dist.manual_steps(dist.layout(name), nodes))
        others = self._other_gpu_nodes(ctx, set(groups))
        if others:
            listed = "; ".join(f"{n} ({d})" for n, d in sorted(others.items()))
            raise ConvergeError(
                f"GPU nodes outside --gpu-nodes run another distribution ({listed}) and the GPU Operator will run its "
                f"toolkit there too, with the {', '.join(sorted(groups))} containerd settings the suite would install "
                "(the settings are cluster-wide): that node's containerd never gets the nvidia runtime and the "
                "ClusterPolicy never becomes ready. --provision changes nothing. Keep the operator off those nodes "
                f"(kubectl label node {' '.join(sorted(others))} {OPERANDS_OFF}=false) or provision them separately")
        return []

    @staticmethod
    def _other_gpu_nodes(ctx: RunContext, kinds: set[str]) -> dict[str, str]:
        """GPU nodes (the GPU or NFD PCI label) not in this run's set, the operator's operands not turned off,
        whose distribution differs from the run's."""
        if not kinds:
            return {}
        s = ctx.settings
        selectors = [sel.partition("=") for sel in (s.node_selector, s.fallback_selector)]
        others = []
        for name, obj in ctx.kube.snapshot().nodes.items():
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if name in ctx.gpu_nodes or labels.get(OPERANDS_OFF) == "false":
                continue
            if any(labels.get(k) == v for k, _, v in selectors):
                others.append(name)
        # the hosts of those whose node object names no distribution are asked: all at once, in the run's pool of
        # host_concurrency (one at a time, provisioning one node of a 1000-node lab asked 999 hosts in 190 s)
        ask = tuple(n for n in others if dist.detect_node(ctx.kube.snapshot().nodes[n]).name is None)
        if ask and s.host_backend != "none":
            ctx.prefetch_hosts(ask)
        out = {}
        for name in others:
            found = node_distribution(ctx, name).name
            if found and found not in kinds:
                out[name] = found
        return out

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:  # pragma: no cover - no changes
        return None
