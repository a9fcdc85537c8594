"""gpu_conformance/step_lookup.py: pytest-bdd's step lookup, cached per (item's parent, step type, step text),
finds the same step definitions as pytest-bdd's own (overriding by folder kept), and looks up each step once
per parent instead of once per item."""

from __future__ import annotations

import pytest

from gpu_conformance import step_lookup

pytest_plugins = ["pytester"]

FEATURE = """Feature: values
  Scenario: the value
    Given a value
    Then the value is {want}
"""
STEPS = """
import pytest
from pytest_bdd import given, parsers, scenarios, then

@given("a value", target_fixture="value")
def _value():
    return "{value}"
"""
TEST = """
import pytest
from pytest_bdd import parsers, scenarios, then

@then(parsers.parse("the value is {{want}}"))
def _check(value, want, number):
    assert value == want, (value, want)

@pytest.fixture(params=range({items}))
def number(request):
    return request.param

pytestmark = pytest.mark.usefixtures("number")  # parametrizes each scenario (pytest-bdd #620)
scenarios("{feature}")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    # The same step text, defined twice: the sub folder's conftest overrides the root's for the tests under it.
    pytester.makeconftest(STEPS.format(value="root"))
    pytester.makefile(".feature", root=FEATURE.format(want="root"))
    pytester.makepyfile(test_root=TEST.format(items=5, feature="root.feature"))
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(STEPS.format(value="sub"))
    (sub / "sub.feature").write_text(FEATURE.format(want="sub"))
    (sub / "test_sub.py").write_text(TEST.format(items=3, feature="sub.feature"))
    return pytester


def test_cached_lookup_finds_what_pytest_bdd_finds(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(step_lookup.PLAIN_ENV, raising=False)
    plain = project.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:gpu_conformance.plugin", "-q")
    plain.assert_outcomes(passed=8)
    cached = step_lookup.install()
    assert cached is not None
    try:
        again = project.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:gpu_conformance.plugin", "-q")
        again.assert_outcomes(passed=8)
        # 2 steps x 2 modules, whatever the number of items (8)
        assert cached.misses == 4, cached.misses
        # the root module sees the root conftest's "a value", the sub folder's module both (pytest-bdd sorts them
        # by folder and pytest takes the closest: the outcomes above show that it still does)
        assert sorted(len(v) for k, v in cached.cache.items() if k[2] == "given") == [1, 2]
    finally:
        step_lookup.uninstall()
    import importlib

    assert not isinstance(importlib.import_module("pytest_bdd.scenario").find_fixturedefs_for_step,
                          step_lookup.CachedStepLookup)


def test_plain_env_leaves_pytest_bdd_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(step_lookup.PLAIN_ENV, "1")
    assert step_lookup.install() is None
