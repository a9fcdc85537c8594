"""pytest-bdd's step lookup, done once per step text instead of once per step of every item.

For each step of each scenario, pytest-bdd (``pytest_bdd.scenario.find_fixturedefs_for_step``) walks every
registered fixture name, asks pytest which definitions of it the item sees, and tries each step definition's
parser on the step's text. At 1000 GPU nodes that is 11 000 items x 4-5 steps x some 150 fixture names: the
largest part of an API-only audit (docs/performance.md "Where a 1000-node audit's time goes").

The answer depends only on the step (its type and text) and on the fixtures the item sees. Step definitions are
fixtures of modules, classes, conftest files and plugins, all registered at collection; an item's own fixtures
(pytest-bdd's ``target_fixture`` values, registered on the item while it runs) are never step definitions. So
the answer is the same for every item of one parent (the test module, or class), and is kept per
(parent, step type, step text). pytest-bdd then injects the found definitions and resolves them through pytest
as before: overriding and scoping rules stay pytest's own.

The same holds for each step function's signature, which pytest-bdd asks ``inspect`` for twice per step of every
item (``signature`` and ``get_required_args`` in ``pytest_bdd.scenario``): kept per function.

Installed by the plugin for runs of feature files (``install``); ``GPU_CONFORMANCE_PLAIN_PYTEST_BDD=1`` leaves
pytest-bdd as it is (the report identity test runs the suite both ways). The private name it replaces is
guarded by tests/unit/test_library_internals.py.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable, Iterable
from typing import Any

PLAIN_ENV = "GPU_CONFORMANCE_PLAIN_PYTEST_BDD"

_Lookup = Callable[[Any, Any, Any], Iterable[Any]]


class CachedStepLookup:
    """A drop-in for ``find_fixturedefs_for_step(step, fixturemanager, node)`` that remembers its answers."""

    def __init__(self, original: _Lookup) -> None:
        self.original = original
        self.cache: dict[tuple[int, int, str | None, str], list[Any]] = {}
        self.parents: dict[int, Any] = {}  # keeps each keyed parent alive, so that its id is never reused
        self.misses = 0

    def __call__(self, step: Any, fixturemanager: Any, node: Any) -> Iterable[Any]:
        parent = getattr(node, "parent", None)
        if parent is None:
            return self.original(step, fixturemanager, node)
        key = (id(fixturemanager), id(parent), step.type, step.name)
        found = self.cache.get(key)
        if found is None:
            self.misses += 1
            found = self.cache[key] = list(self.original(step, fixturemanager, node))
            self.parents[id(parent)] = parent
        return iter(found)

    def clear(self) -> None:
        self.cache.clear()
        self.parents.clear()


@functools.cache
def cached_signature(func: Callable[..., object]) -> inspect.Signature:
    return inspect.signature(func)


@functools.cache
def _required_args(func: Callable[..., object]) -> tuple[str, ...]:
    return tuple(_ORIGINAL_REQUIRED_ARGS(func))


def cached_required_args(func: Callable[..., object]) -> list[str]:
    return list(_required_args(func))  # a fresh list, as pytest-bdd's own returns


def _scenario_module():
    return importlib.import_module("pytest_bdd.scenario")  # `pytest_bdd.scenario` is also a function


_ORIGINAL_REQUIRED_ARGS = _scenario_module().get_required_args
_ORIGINAL_SIGNATURE = _scenario_module().signature


def install() -> CachedStepLookup | None:
    """Replace pytest-bdd's lookup with the cached one (once per process); None when left plain (PLAIN_ENV)."""
    if os.environ.get(PLAIN_ENV):
        return None
    scenario_mod = _scenario_module()
    current = scenario_mod.find_fixturedefs_for_step
    if isinstance(current, CachedStepLookup):
        return current
    cached = CachedStepLookup(current)
    scenario_mod.find_fixturedefs_for_step = cached
    scenario_mod.signature = cached_signature
    scenario_mod.get_required_args = cached_required_args
    return cached


def uninstall() -> None:
    """Put pytest-bdd's own functions back (at the end of the session: pytester runs share the module)."""
    scenario_mod = _scenario_module()
    current = scenario_mod.find_fixturedefs_for_step
    if isinstance(current, CachedStepLookup):
        current.clear()
        scenario_mod.find_fixturedefs_for_step = current.original
    scenario_mod.signature = _ORIGINAL_SIGNATURE
    scenario_mod.get_required_args = _ORIGINAL_REQUIRED_ARGS
    cached_signature.cache_clear()
    _required_args.cache_clear()
