"""xdist scheduling of a run with GPU nodes: one scope per GPU node, dealt to the workers before the run
(gpu_conformance/xdist_nodes.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpu_conformance.xdist_nodes import NodeScheduling, own_nodes, partition, worker_index

F = "features/test_features.py"


def _config(workers: int) -> SimpleNamespace:
    return SimpleNamespace(getvalue=lambda name: [f"{workers}*popen"] if name == "tx" else None,
                           option=SimpleNamespace(loadscopereorder=False))


class FakeWorker:
    """The part of xdist's WorkerController a scheduler talks to."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway = SimpleNamespace(id=gateway_id)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices) -> None:
        self.sent += list(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    def __repr__(self) -> str:
        return self.gateway.id


def test_each_nodes_scenarios_are_one_scope_and_the_rest_are_their_own() -> None:
    sched = NodeScheduling(_config(2), None, ("gpu-a", "gpu-a-2", "gpu-b"))  # type: ignore[arg-type]
    assert sched.numnodes == 2
    assert sched._split_scope(f"{F}::test_driver[gpu-a]") == sched._split_scope(f"{F}::test_runtimes[gpu-a]")
    assert sched._split_scope(f"{F}::test_driver[gpu-a]") != sched._split_scope(f"{F}::test_driver[gpu-a-2]")
    assert sched._split_scope(f"{F}::test_driver[gpu-b]") == "gpu-node[gpu-b]"
    assert sched._split_scope(f"{F}::test_release[cluster]") == f"{F}::test_release[cluster]"
    assert sched._split_scope(f"{F}::test_release") == f"{F}::test_release"


def test_the_nodes_are_dealt_in_turn_and_each_worker_knows_its_own() -> None:
    nodes = ("gpu-c", "gpu-a", "gpu-d", "gpu-b", "gpu-e")
    assert partition(nodes, 2) == [("gpu-a", "gpu-c", "gpu-e"), ("gpu-b", "gpu-d")]
    assert partition(nodes, 7)[5:] == [(), ()]
    assert own_nodes(nodes, "gw1", 2) == ("gpu-b", "gpu-d")
    assert own_nodes(nodes, "gw2", 2) is None   # a worker xdist started in place of a crashed one
    assert worker_index("gw12") == 12 and worker_index("popen-3") is None


def _collection(nodes: tuple[str, ...]) -> list[str]:
    """Scenario-major, as pytest-bdd collects: each scenario once per node, and two cluster scenarios."""
    items = [f"{F}::test_operator_installed[cluster]"]
    for scenario in ("runtimes", "advertised", "dcgm"):
        items += [f"{F}::test_{scenario}[{n}]" for n in nodes]
    return [*items, f"{F}::test_release[cluster]"]


def _scheduled(nodes: tuple[str, ...], workers: list[FakeWorker]) -> tuple[NodeScheduling, list[str]]:
    sched = NodeScheduling(_config(len(workers)), None, nodes)  # type: ignore[arg-type]
    collection = _collection(nodes)
    for w in workers:
        sched.add_node(w)  # type: ignore[arg-type]
    for w in workers:
        sched.add_node_collection(w, collection)  # type: ignore[arg-type]
    sched.schedule()
    return sched, collection


def test_each_worker_is_sent_all_its_nodes_items_at_once_in_collection_order() -> None:
    nodes = ("gpu-a", "gpu-b", "gpu-c")
    gw1, gw0 = FakeWorker("gw1"), FakeWorker("gw0")   # the order xdist adds them in is not the order of their ids
    sched, collection = _scheduled(nodes, [gw1, gw0])
    ran = {w.gateway.id: [collection[i] for i in w.sent] for w in (gw0, gw1)}
    for w, mine in zip((gw0, gw1), partition(nodes, 2), strict=True):
        per_node = {item.rsplit("[", 1)[1].rstrip("]") for item in ran[w.gateway.id]} - {"cluster"}
        assert per_node == set(mine), ran
        assert w.sent == sorted(w.sent), "a worker runs its items in collection order"
        assert w.shutting_down, "everything was sent: the worker stops when its queue is empty"
    assert sorted(ran["gw0"] + ran["gw1"]) == sorted(collection), "every item once"
    cluster = [[i for i in ran[w] if i.endswith("[cluster]")] for w in ("gw0", "gw1")]
    assert [len(c) for c in cluster] == [1, 1], "cluster scenarios are dealt in turn"
    assert not sched.workqueue and sched.has_pending


def test_a_crashed_workers_unfinished_items_go_to_the_worker_started_in_its_place() -> None:
    nodes = ("gpu-a", "gpu-b", "gpu-c", "gpu-d")
    gw0, gw1 = FakeWorker("gw0"), FakeWorker("gw1")
    sched, collection = _scheduled(nodes, [gw0, gw1])
    done = gw0.sent[:2]
    for i in done:
        sched.mark_test_complete(gw0, i)  # type: ignore[arg-type]
    crashed = sched.remove_node(gw0)  # type: ignore[arg-type]
    assert crashed == collection[gw0.sent[2]]
    gw2 = FakeWorker("gw2")
    sched.add_node(gw2)  # type: ignore[arg-type]
    sched.add_node_collection(gw2, collection)  # type: ignore[arg-type]
    sched.schedule()
    finished: set[int] = set()
    while pending := [i for i in gw2.sent if i not in finished]:   # gw2 runs what it is sent, and is sent more
        for i in pending:
            finished.add(i)
            sched.mark_test_complete(gw2, i)  # type: ignore[arg-type]
    assert gw2.shutting_down and not sched.workqueue
    assert sorted(gw2.sent) == sorted(set(gw0.sent) - {*done, gw0.sent[2]}), \
        "the crashed worker's unfinished items but the one it crashed in (reported as crashed, as under load)"
    assert not gw1.sent or set(gw1.sent).isdisjoint(gw2.sent)


@pytest.mark.parametrize("workers", [1, 3])
def test_more_or_fewer_workers_than_nodes(workers: int) -> None:
    ws = [FakeWorker(f"gw{i}") for i in range(workers)]
    _, collection = _scheduled(("gpu-a", "gpu-b"), ws)
    assert sorted(i for w in ws for i in w.sent) == list(range(len(collection)))
    assert all(w.shutting_down for w in ws)
