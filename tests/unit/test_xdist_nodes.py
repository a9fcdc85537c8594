"""xdist scheduling with host checks: one scope per GPU node (gpu_conformance/xdist_nodes.py)."""

from __future__ import annotations

from types import SimpleNamespace

from gpu_conformance.xdist_nodes import NodeScheduling


def test_each_nodes_scenarios_are_one_scope_and_the_rest_are_their_own() -> None:
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"] if name == "tx" else None)
    sched = NodeScheduling(config, None, ("gpu-a", "gpu-a-2", "gpu-b"))  # type: ignore[arg-type]
    assert sched.numnodes == 2
    f = "features/test_features.py"
    assert sched._split_scope(f"{f}::test_driver[gpu-a]") == sched._split_scope(f"{f}::test_runtimes[gpu-a]")
    assert sched._split_scope(f"{f}::test_driver[gpu-a]") != sched._split_scope(f"{f}::test_driver[gpu-a-2]")
    assert sched._split_scope(f"{f}::test_driver[gpu-b]") == "gpu-node[gpu-b]"
    assert sched._split_scope(f"{f}::test_release[cluster]") == f"{f}::test_release[cluster]"
    assert sched._split_scope(f"{f}::test_release") == f"{f}::test_release"
