"""The pytest process's heap at fleet scale.

A 1000-node audit holds a few million long-lived objects (the cluster snapshot, 11 000 collected items, their
reports). CPython's cyclic garbage collector walks all of them on every full collection, a few seconds each at
that size, and again while the interpreter shuts down; most of a run's collections found nothing to free.
`HeapSettler` collects once and then freezes what survived (gc.freeze: later collections skip it), after the
first item (when the snapshot is loaded) and every `every` items after that, and freezes everything at the end
of the session so that pytest's own final collections and the interpreter's shutdown do not walk the heap.
Frozen objects are still freed by reference counting; only cycles created before a freeze and still alive then
stay until the process exits (the collection just before each freeze has freed the dead ones).

What pytest and its plugins keep per item until the session ends is released as soon as nobody reads it any more
(`release_item`, `release_report`). tracemalloc of a 100-node full-scope audit (growth from item 300 to the end,
2008 items, 25 MB: about 12.5 kB per item) found, per item: pytest-bdd's serialized scenario for each of the three
reports 3.7 kB, pytest's TestReports (kept by the terminal's statistics) 1.8 kB of which their `keywords` copies
1.2 kB, the suite's own result rows 1.6 kB, junitxml's elements 1.2 kB (the XML is written at the end).
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


def release_report(report: object, config: object) -> None:
    """After every plugin has logged ``report`` (call it from a trylast pytest_runtest_logreport): drop pytest-bdd's
    serialized scenario kept for it (read only by --cucumberjson and --gherkin-terminal-reporter, which keep it)
    and the report's copy of the item's keywords (read by nothing after the report is logged; xdist has sent
    the report to its controller by then)."""
    option = getattr(config, "option", None)
    if not (getattr(option, "cucumber_json_path", None) or getattr(option, "gherkin_terminal_reporter", False)):
        try:
            from pytest_bdd.reporting import test_report_context_registry
        except ImportError:
            pass
        else:
            test_report_context_registry.pop(report, None)
    if getattr(report, "keywords", None):
        report.keywords = {}
