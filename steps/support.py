"""What the steps share: the run's state, converging through the engine, and turning results and findings
into outcomes (failed for non-conformance, broken for could-not-check, skipped for not applicable)."""

from __future__ import annotations

from dataclasses import dataclass, field

import allure
import pytest

from provision import checks
from provision.context import NoHostAccess, RunContext
from provision.converge.settle import settle_operands
from provision.engine import Engine, Result
from provision.outcomes import Broken

NO_GPU_NODES = "no-gpu-nodes"

# The drift the Given steps of the running scenario found (audit): the Then step still observes, and its verdict
# leads with what it observed, then lists these plan lines. One scenario at a time per process; reset by the
# autouse fixture `scenario_drift` (steps/given.py) before each scenario.
_DRIFT: list[str] = []


def reset_drift() -> None:
    _DRIFT.clear()


def current_drift() -> list[str]:
    return list(_DRIFT)


class ObservedFailure(pytest.fail.Exception):
    """A scenario's failure, with what was observed (`observation`: "ok" = the real state is right, only the
    drift from the desired state remains; "failed" = the observation itself failed) and the drift's plan lines.
    conftest.py copies both into summary.json; outcomes.classify counts it as failed."""

    def __init__(self, msg: str, observation: str, drift: list[str]) -> None:
        super().__init__(msg, pytrace=False)
        self.observation = observation
        self.drift = drift


@dataclass(repr=False)
class RunState:
    """The session's view of the run, shared by every step (one per pytest process)."""

    ctx: RunContext
    engine: Engine
    gpu_nodes: tuple[str, ...]
    discovery_error: str | None = None
    feature_numbers: dict[str, set] = field(default_factory=dict)
    operands_settled: bool = False
    dra_settled: bool = False

    def __repr__(self) -> str:
        # Allure records each step's arguments by repr, in every result file: keep it short (the default repr
        # listed every GPU node, 12 kB per step at 1000 nodes).
        return f"RunState(mode={self.ctx.settings.mode}, gpu_nodes={len(self.gpu_nodes)})"

    def node_under_test(self, node: str | None) -> str:
        if node is None:
            raise Broken("this step needs a GPU node, but the scenario is cluster-wide")
        if node == NO_GPU_NODES:
            pytest.fail(self.discovery_error or "no GPU nodes found", pytrace=False)
        if self.discovery_error:
            pytest.fail(self.discovery_error, pytrace=False)
        allure.dynamic.label("node", node)
        reason = checks.unsupported_reason(self.ctx, node)
        if reason:
            pytest.skip(reason)
        return node

    def note_feature_number(self, setting: str, value: int) -> None:
        """Numbers written in the features are the desired state; a setting given for the run wins and the
        report says so."""
        configured = getattr(self.ctx.settings, setting)
        if configured != value:
            allure.attach(f"feature says {setting}={value}; this run's setting {setting}={configured} applies",
                          f"setting {setting}", allure.attachment_type.TEXT)

    def settle_operands(self) -> None:
        """Part of the Given steps that provision (never of a Then, which only observes). In a --provision run,
        once per process before the operands are verified: wait (watching) until the
        operator's pods have started and become Ready on the GPU nodes that provisioning did not fail, and the
        ClusterPolicy is ready (provision/converge/settle.py). What did not settle goes to the report; the
        checks that follow say which node and why."""
        if self.ctx.settings.stack == "dra":
            self.settle_dra()   # the GPUCluster stack has no ClusterPolicy operands to wait for
            return
        if self.ctx.settings.mode != "provision" or self.operands_settled:
            return
        self.operands_settled = True
        # The operands depend on all of provisioning (the containerd restart that loads the nvidia runtime,
        # the time-slicing config), whichever scenario would have asked for it first: converge all of it now.
        for name in self.engine.by_name:
            self.engine.ensure(name)
        # Nodes provisioning failed, or skipped on the host (host checks off), cannot be expected to settle.
        failed = self.engine.unhealthy_nodes() | set(self.engine.ensure("containerd-restart").node_skips)
        nodes = [n for n in checks.supported_gpu_nodes(self.ctx) if n not in failed]
        note = settle_operands(self.ctx, checks.OPERAND_DAEMONSETS, nodes)
        self.ctx.kube.snapshot(refresh=True)
        if note:
            allure.attach(note, "operands not settled after provisioning", allure.attachment_type.TEXT)

    def settle_dra(self) -> None:
        """DRA mode's settle_operands: in a --provision run, once per process, converge everything and wait for
        GPUCluster ready and every GPU node's ResourceSlices (provision/dra.py settle)."""
        if self.ctx.settings.mode != "provision" or self.dra_settled:
            return
        self.dra_settled = True
        for name in self.engine.by_name:
            self.engine.ensure(name)
        from provision import dra

        note = dra.settle(self.ctx)
        self.ctx.kube.snapshot(refresh=True)
        if note:
            allure.attach(note, "DRA stack not settled after provisioning", allure.attachment_type.TEXT)

    def require_workload(self) -> None:
        if not self.ctx.settings.workload:
            pytest.skip("workload tests are off (--no-workload): a strictly read-only audit")


def converged(run: RunState, name: str, node: str | None = None) -> Result:
    """The converger's result for this run (it runs once per process); the scenario's report gets its plan or
    diff: a cluster-wide scenario the whole of it, a node's scenario the changes of that node and the cluster-wide
    ones, and only when there are any (an empty diff per node and scenario is 11 000 files at 1000 nodes)."""
    if run.discovery_error and run.gpu_nodes:
        # GPU nodes were named (--gpu-nodes) and some do not exist: nothing is planned or changed on any
        # node; every scenario fails with what to fix.
        pytest.fail(run.discovery_error, pytrace=False)
    result = run.engine.ensure(name)
    if run.ctx.settings.mode == "plan":
        allure.attach(result.plan_text(node), f"plan: {name}", allure.attachment_type.TEXT)
        pytest.skip(f"--plan: {len(result.planned_for(node))} change(s) by {name}{'' if node is None else ' for ' + node}; "
                    "nothing was changed")
    if node is None or result.touches(node):
        title = "applied" if result.mode == "provision" else "diff"
        allure.attach(result.plan_text(node), f"{title}: {name} ({result.seconds:.1f}s)", allure.attachment_type.TEXT)
    return result


def _pending_text(result: Result, changes) -> str:
    return "; ".join(c.line() for c in changes)


def require_node_level(result: Result, node: str, cluster_too: bool = False, engine: Engine | None = None) -> None:
    """Fail / break / skip the scenario of `node` from a converger's result (and those it depends on)."""
    problem = engine.node_problem(result.name, node) if engine else None
    if problem is None and node in result.node_failures:
        problem = ("failed", result.node_failures[node])
    if problem is None and node in result.node_errors:
        problem = ("broken", result.node_errors[node])
    if problem:
        kind, message = problem
        if kind == "failed":
            # A converger observed the node wrong (containerd without nvidia, nvidia-smi failing): an observation.
            if result.mode == "audit":
                _note_drift(result.for_node(node) + (result.for_node(None) if cluster_too else []))
            observed_failure(message)
        raise Broken(message)
    if node in result.node_skips:
        reason = result.node_skips[node]
        if node in result.host_off:
            raise NoHostAccess(reason)
        pytest.skip(reason)
    if result.error:
        raise Broken(f"{result.name}: {result.error}")
    pending = result.for_node(node) + (result.for_node(None) if cluster_too else [])
    if pending and result.mode == "audit":
        _note_drift(pending)
        return
    if pending:
        verb = "still differs after provisioning" if result.mode == "provision" else "is not converged"
        pytest.fail(f"{result.name} {verb} on {node}: {_pending_text(result, pending)}. "
                    "Fix: run `pytest features/ --provision` (see --plan for the exact changes)", pytrace=False)


def require_cluster_level(result: Result, every_node: bool = False) -> None:
    if result.error:
        if result.node_failures:
            pytest.fail(f"{result.name}: {result.error}", pytrace=False)
        raise Broken(f"{result.name}: {result.error}")
    if every_node and result.node_failures:
        observed_failure(checks.listed([f"{n}: {m}" for n, m in sorted(result.node_failures.items())]))
    pending = result.for_node(None) + (
        [c for c in (result.remaining if result.mode == "provision" else result.planned) if c.node] if every_node
        else [])
    if pending and result.mode == "audit":
        _note_drift(pending)
        return
    if pending:
        verb = "still differs after provisioning" if result.mode == "provision" else "is not converged"
        pytest.fail(f"{result.name} {verb}: {_pending_text(result, pending)}. "
                    "Fix: run `pytest features/ --provision` (see --plan for the exact changes)", pytrace=False)


def observed_failure(message: str) -> None:
    """Fail the scenario on what a converger observed, then the drift noted so far."""
    drift = current_drift()
    tail = (f" Drift from the desired state ({len(drift)} change(s) pending): {checks.listed(drift, limit=8)}. Fix: "
            "run `pytest features/ --provision` (see --plan for the exact changes)") if drift else ""
    raise ObservedFailure(f"Observed: {message.rstrip().rstrip('.')}.{tail}", "failed", drift)


def _note_drift(changes) -> None:
    """Audit: a Given's pending changes are drift; the scenario goes on to observe the real state."""
    for c in changes:
        if c.line() not in _DRIFT:
            _DRIFT.append(c.line())


def observed_verdict(finding: checks.Finding, drift: list[str]) -> tuple[str, str] | None:
    """(observation, message) of a scenario, or None when it passes: the observation first (the check's own
    message), then the drift from the desired state with its plan lines. Pure."""
    if finding.ok and not drift:
        return None
    observation = "ok" if finding.ok else "failed"
    if not drift:
        return observation, finding.message
    said = f"{finding.observed.rstrip('.')}. " if finding.observed else ""
    head = (f"Observed (as desired): {finding.observed_text().rstrip('.')}." if finding.ok
            else f"Observed: {said}{(finding.message[:1].upper() if said else finding.message[:1])}"
                 f"{finding.message[1:].rstrip().rstrip('.')}.")
    tail = (f" Drift{' only' if finding.ok else ''} from the desired state ({len(drift)} change(s) pending): "
            f"{checks.listed(drift, limit=8)}. Fix: run `pytest features/ --provision` (see --plan for the exact "
            "changes)")
    return observation, head + tail


def expect_check(check, *args) -> None:
    """Run a check; not applicable to this node -> skipped with the reason; else expect_finding."""
    try:
        finding = check(*args)
    except checks.NotApplicable as exc:
        pytest.skip(str(exc))
    expect_finding(finding)


def expect_finding(finding: checks.Finding) -> None:
    for title, body in finding.attachments.items():
        allure.attach(body or "(empty)", title, allure.attachment_type.TEXT)
    drift = current_drift()
    verdict = observed_verdict(finding, drift)
    if verdict is not None:
        raise ObservedFailure(verdict[1], verdict[0], drift)
