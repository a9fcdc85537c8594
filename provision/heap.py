"""The pytest process's heap at fleet scale.

A 1000-node audit holds a few million long-lived objects (the cluster snapshot, 11 000 collected items, their
reports). CPython's cyclic garbage collector walks all of them on every full collection, a few seconds each at
that size, and again while the interpreter shuts down; most of a run's collections found nothing to free.
`HeapSettler` collects once and then freezes what survived (gc.freeze: later collections skip it), after the
first item (when the snapshot is loaded) and every `every` items after that, and freezes everything at the end
of the session so that pytest's own final collections and the interpreter's shutdown do not walk the heap.
Frozen objects are still freed by reference counting; only cycles created before a freeze and still alive then
stay until the process exits (the collection just before each freeze has freed the dead ones).
"""

from __future__ import annotations

import gc

SETTLE_EVERY = 250
YOUNG_THRESHOLD = 10_000  # CPython's default 700 runs a young collection every few hundred allocations


class HeapSettler:
    def __init__(self, every: int = SETTLE_EVERY) -> None:
        self.every = max(1, every)
        self.items = 0
        self.settled = 0  # how many times collect + freeze ran (for tests and the benchmark)

    def settle(self) -> None:
        gc.collect()
        gc.freeze()
        self.settled += 1

    def item_done(self) -> None:
        self.items += 1
        if self.items == 1:
            _, mid, old = gc.get_threshold()
            gc.set_threshold(max(YOUNG_THRESHOLD, gc.get_threshold()[0]), mid, old)
        if self.items == 1 or self.items % self.every == 0:
            self.settle()

    @staticmethod
    def finish() -> None:
        gc.freeze()


def release_item(item: object) -> None:
    """Drop what allure-pytest-bdd keeps of an item after the item is done: its per-item data in ``item.stash``
    holds the item's ExceptionInfo, and with it the traceback and every frame of a failed or skipped scenario,
    until the session ends (at 1000 nodes, most of the memory that grew with the number of items)."""
    try:
        from allure_pytest_bdd.storage import ALLURE_PYTEST_BDD_HASHKEY
    except ImportError:
        return
    stash = getattr(item, "stash", None)
    if stash is not None and ALLURE_PYTEST_BDD_HASHKEY in stash:
        del stash[ALLURE_PYTEST_BDD_HASHKEY]
