"""Kube.wait_for's pacing and resumption (provision/kube.py): a slow predicate over thousands of watched objects is
not evaluated after every event of a burst, yet the wait still ends soon after the state it waits for arrives; a
wait resumed from an earlier one's WatchResume goes on from its resourceVersion without a second LIST."""

from __future__ import annotations

import time

import pytest

from provision import kube as kube_mod
from provision.kube import Kube, WaitTimeout, WatchResume


class FakeWatch:
    """kubernetes.watch.Watch over a scripted list of events; each stream serves the events after its
    resource_version, and ends at its timeout_seconds (as the apiserver does) when nothing is left."""

    events: list[dict] = []
    streams: list[str] = []
    gap_s = 0.0
    idle_cap_s = 0.3    # an idle stream's timeout, shortened (idle_cap_s = inf: the apiserver's own)

    def stop(self) -> None:
        pass

    def stream(self, _fn, *args, resource_version=None, timeout_seconds=1, **kw):
        FakeWatch.streams.append(resource_version)
        t0 = time.monotonic()
        for ev in FakeWatch.events:
            if int(ev["raw_object"]["metadata"]["resourceVersion"]) <= int(resource_version):
                continue
            time.sleep(FakeWatch.gap_s)
            yield ev
        while time.monotonic() - t0 < min(timeout_seconds, FakeWatch.idle_cap_s):   # idle until its timeout
            time.sleep(0.01)


def _spin(cpu_s: float) -> None:
    """Use this much of the thread's CPU (the pacer measures CPU, not wall time)."""
    t0 = time.thread_time()
    while time.thread_time() - t0 < cpu_s:
        pass


def _pod(i: int, rv: int, ready: bool) -> dict:
    return {"metadata": {"name": f"p{i}", "resourceVersion": str(rv)}, "status": {"ready": ready}}


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Kube:
    k = Kube.__new__(Kube)
    k.timeout = (5.0, 5.0)
    lists: list[int] = []
    k.lists = lists  # type: ignore[attr-defined]

    def list_at(fn, *args, slim=None, **kw):
        lists.append(1)
        return [_pod(i, 1, False) for i in range(50)], "1"

    monkeypatch.setattr(k, "_list_at", list_at)
    monkeypatch.setattr(kube_mod.watch, "Watch", FakeWatch)
    FakeWatch.streams, FakeWatch.gap_s, FakeWatch.idle_cap_s = [], 0.0, 0.3
    return k


def test_a_slow_predicate_is_paced_and_the_wait_still_ends_after_the_last_event(kube: Kube,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    FakeWatch.events = [{"type": "MODIFIED", "raw_object": _pod(i, 2 + i, True)} for i in range(50)]
    calls: list[int] = []

    def all_ready(objs: dict[str, dict]) -> bool:
        calls.append(1)
        _spin(0.02)   # 20 ms: 6000 pods' predicate at 1000 nodes
        return all(o["status"]["ready"] for o in objs.values())

    objs = kube.wait_for("all ready", None, all_ready, lambda o: [], 30)
    assert all(o["status"]["ready"] for o in objs.values())
    assert len(calls) < 25, f"a 20 ms predicate was evaluated {len(calls)} times for 50 events of one burst"


def test_a_predicate_that_turns_slow_in_a_long_watch_still_sees_the_last_event_soon(kube: Kube) -> None:
    # Seen in CI: one evaluation of a cheap predicate took over 2 ms on a loaded machine, the last event of the
    # rollout came within the pause that followed, and the watch (opened for the whole 300 s) then sat idle.
    FakeWatch.events = [{"type": "MODIFIED", "raw_object": _pod(i, 2 + i, True)} for i in range(50)]
    FakeWatch.idle_cap_s = float("inf")
    calls: list[int] = []

    def all_ready(objs: dict[str, dict]) -> bool:
        calls.append(1)
        if len(calls) > 40:
            _spin(0.02)       # slow from the 40th evaluation on: the 41st pauses the rest of the burst
        return all(o["status"]["ready"] for o in objs.values())

    t0 = time.monotonic()
    objs = kube.wait_for("all ready", None, all_ready, lambda o: [], 60)
    took = time.monotonic() - t0
    assert all(o["status"]["ready"] for o in objs.values())
    assert took < kube_mod.STALE_S + 5, f"the last event was evaluated after {took:.1f} s (the watch's timeout)"


def test_a_cheap_predicate_sees_every_event(kube: Kube) -> None:
    FakeWatch.events = [{"type": "MODIFIED", "raw_object": _pod(i, 2 + i, True)} for i in range(50)]
    seen: list[int] = []

    def count(objs: dict[str, dict]) -> bool:
        seen.append(sum(o["status"]["ready"] for o in objs.values()))
        return seen[-1] == 10

    objs = kube.wait_for("ten ready", None, count, lambda o: [], 30)
    assert seen == list(range(11)), "a cheap predicate is evaluated after every event: the wait ends at the 10th"
    assert sum(o["status"]["ready"] for o in objs.values()) == 10


def test_a_resumed_wait_goes_on_from_the_last_ones_resource_version_without_listing(kube: Kube) -> None:
    FakeWatch.events = [{"type": "MODIFIED", "raw_object": _pod(0, 2, True)},
                        {"type": "MODIFIED", "raw_object": _pod(1, 3, True)}]
    seen = WatchResume()
    with pytest.raises(WaitTimeout, match="still missing: p2"):
        kube.wait_for("three ready", None, lambda o: sum(x["status"]["ready"] for x in o.values()) >= 3,
                      lambda o: ["p2"], 0.5, resume=seen)
    assert seen.rv == "3" and seen.objs["p1"]["status"]["ready"]
    FakeWatch.events.append({"type": "MODIFIED", "raw_object": _pod(2, 4, True)})
    objs = kube.wait_for("three ready", None, lambda o: sum(x["status"]["ready"] for x in o.values()) >= 3,
                         lambda o: [], 5, resume=seen)
    assert sum(x["status"]["ready"] for x in objs.values()) == 3
    assert kube.lists == [1], "the second wait went on from the first one's resourceVersion"   # type: ignore[attr-defined]
    assert FakeWatch.streams[-1] == "3"
