"""The private internals of allure-python-commons, allure-pytest-bdd, pytest-bdd and testinfra that the suite
still relies on, each with the reason (a measured figure, or a feature the library has no public API for).
When a release changes one of them, its test here fails naming the file of ours to update, instead of the
reports or the SSH backend breaking silently. The tested versions are pinned in pyproject.toml."""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def _broken(what: str, ours: str) -> str:
    return (f"{what} changed in the installed release; {ours} relies on it. Update {ours} for the new release, "
            "or pin the library to the range in pyproject.toml")


def test_installed_versions_are_in_the_pinned_ranges() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {Requirement(d).name: Requirement(d) for d in deps}
    for name in ("allure-python-commons", "allure-pytest-bdd", "pytest-bdd", "pytest-testinfra"):
        assert name in pinned, f"{name} is not pinned in pyproject.toml: the suite uses its internals"
        have = Version(metadata.version(name))
        assert pinned[name].specifier.contains(have), f"{name} {have} is outside the pinned {pinned[name].specifier}"


def test_allure_file_logger_report_item() -> None:
    """provision/reporting/allure_writer.py: the file logger's per-result writer (json.dumps instead of
    json.dump, about 1 ms per scenario at 1000 nodes)."""
    from allure_commons.logger import AllureFileLogger
    from allure_commons.model2 import TestResult

    ours = "provision/reporting/allure_writer.py"
    assert callable(getattr(AllureFileLogger, "_report_item", None)), _broken("AllureFileLogger._report_item", ours)
    assert list(inspect.signature(AllureFileLogger._report_item).parameters) == ["self", "item"], \
        _broken("AllureFileLogger._report_item(self, item)", ours)
    assert "_report_dir" in inspect.getsource(AllureFileLogger.__init__), _broken("AllureFileLogger._report_dir", ours)
    assert getattr(TestResult, "file_pattern", None) == "{prefix}-result.json", _broken("TestResult.file_pattern", ours)


def test_fast_writer_writes_what_the_logger_writes(tmp_path) -> None:
    """The replacement writes the same JSON as allure's own writer, so reports do not change."""
    import json
    from types import MethodType

    from allure_commons.logger import AllureFileLogger
    from allure_commons.model2 import Label, TestResult

    from provision.reporting.allure_writer import _report_item

    item = TestResult(name="s", uuid="u", fullName="f", labels=[Label(name="host", value="gpu-a")])
    theirs, ours = AllureFileLogger(str(tmp_path / "a")), AllureFileLogger(str(tmp_path / "b"))
    ours._report_item = MethodType(_report_item, ours)  # type: ignore[method-assign]
    theirs.report_result(item)
    ours.report_result(item)
    (a,), (b,) = (list((tmp_path / d).glob("*-result.json")) for d in ("a", "b"))
    assert json.loads(a.read_text()) == json.loads(b.read_text())


def test_allure_pytest_bdd_item_stash_key() -> None:
    """provision/heap.py: what allure-pytest-bdd keeps per item (its ExceptionInfo and frames) is dropped when the
    item is done (most of the memory that grew with the number of nodes)."""
    storage = pytest.importorskip("allure_pytest_bdd.storage")
    assert isinstance(getattr(storage, "ALLURE_PYTEST_BDD_HASHKEY", None), pytest.StashKey), \
        _broken("allure_pytest_bdd.storage.ALLURE_PYTEST_BDD_HASHKEY (a pytest.StashKey)", "provision/heap.py")


def test_pytest_bdd_scenario_registry() -> None:
    """gpu_conformance/reporting.py: the feature and scenario names of an item for summary.json (pytest-bdd has no
    public API from an item to its scenario)."""
    import importlib

    scenario_mod = importlib.import_module("pytest_bdd.scenario")   # `pytest_bdd.scenario` is also a function
    reg = getattr(scenario_mod, "scenario_wrapper_template_registry", None)
    assert reg is not None and hasattr(reg, "get"), \
        _broken("pytest_bdd.scenario.scenario_wrapper_template_registry", "gpu_conformance/reporting.py")


def test_testinfra_paramiko_backend_hooks() -> None:
    """provision/hosts/access.py StrictParamikoBackend: OpenSSH's host-key rules (testinfra's own backend accepts
    any host key); it overrides the ``client`` cached property and reads the backend's host/timeout/ssh options."""
    import testinfra.backend
    import testinfra.backend.base
    from testinfra.backend.paramiko import ParamikoBackend

    ours = "provision/hosts/access.py"
    assert "client" in vars(ParamikoBackend), _broken("ParamikoBackend.client", ours)
    assert callable(getattr(ParamikoBackend, "_load_ssh_config", None)), _broken("ParamikoBackend._load_ssh_config",
                                                                                 ours)
    params = inspect.signature(ParamikoBackend.__init__).parameters
    for name in ("ssh_config", "ssh_identity_file", "timeout"):
        assert name in params, _broken(f"ParamikoBackend(..., {name}=)", ours)
    assert callable(getattr(testinfra.backend, "parse_hostspec", None)), _broken("testinfra.backend.parse_hostspec",
                                                                                 ours)
    assert isinstance(getattr(testinfra.backend.base, "CommandResult", None), type), \
        _broken("testinfra.backend.base.CommandResult", ours)


def test_pytest_bdd_step_lookup_function() -> None:
    """gpu_conformance/step_lookup.py: pytest-bdd's per-step lookup of the step definitions, replaced by a cached one
    (the largest part of an API-only 1000-node audit). It must be a module global that the injection calls by name,
    with the signature (step, fixturemanager, node), and a step must have its type and text as .type and .name."""
    import importlib

    from pytest_bdd.parser import Step

    ours = "gpu_conformance/step_lookup.py"
    scenario_mod = importlib.import_module("pytest_bdd.scenario")
    find = getattr(scenario_mod, "find_fixturedefs_for_step", None)
    assert callable(find), _broken("pytest_bdd.scenario.find_fixturedefs_for_step", ours)
    find = getattr(find, "original", find)  # when the cached lookup is installed in this process
    assert list(inspect.signature(find).parameters) == ["step", "fixturemanager", "node"], \
        _broken("pytest_bdd.scenario.find_fixturedefs_for_step(step, fixturemanager, node)", ours)
    inject = getattr(scenario_mod, "inject_fixturedefs_for_step", None)
    code = getattr(getattr(inject, "__wrapped__", inject), "__code__", None)
    assert code is not None and "find_fixturedefs_for_step" in code.co_names, \
        _broken("pytest_bdd.scenario.inject_fixturedefs_for_step calling find_fixturedefs_for_step by name", ours)
    fields = {f.name for f in dataclasses.fields(Step)}
    assert {"type", "name"} <= fields, _broken("pytest_bdd.parser.Step.type / .name", ours)


def test_pytest_bdd_step_signature_functions() -> None:
    """gpu_conformance/step_lookup.py: pytest-bdd asks for each step function's signature twice per step of every
    item, through the module globals ``signature`` (inspect's) and ``get_required_args`` of pytest_bdd.scenario;
    both are replaced by versions cached per function."""
    import importlib

    from gpu_conformance import step_lookup

    ours = "gpu_conformance/step_lookup.py"
    scenario_mod = importlib.import_module("pytest_bdd.scenario")
    code = scenario_mod._execute_step_function.__code__
    for name in ("signature", "get_required_args"):
        assert name in code.co_names, _broken(f"pytest_bdd.scenario._execute_step_function calling {name} by name", ours)
    assert step_lookup._ORIGINAL_SIGNATURE is inspect.signature, _broken("pytest_bdd.scenario.signature (inspect's)", ours)
    from pytest_bdd.utils import get_required_args

    assert step_lookup._ORIGINAL_REQUIRED_ARGS is get_required_args, \
        _broken("pytest_bdd.scenario.get_required_args (pytest_bdd.utils')", ours)


def test_allure_pytest_bdd_step_traceback_formatter() -> None:
    """provision/reporting/allure_trace.py: allure-pytest-bdd formats each failed or skipped step's traceback through
    the module global ``format_traceback`` of allure_pytest_bdd.utils (allure-commons' ``format_tb`` join), replaced
    by one that formats each distinct chain of frames once; both must give the same text."""
    utils = pytest.importorskip("allure_pytest_bdd.utils")
    from allure_commons.utils import format_traceback as theirs

    from provision.reporting.allure_trace import format_traceback as ours

    where = "provision/reporting/allure_trace.py"
    assert "format_traceback" in utils.get_status_details.__code__.co_names, \
        _broken("allure_pytest_bdd.utils.get_status_details calling format_traceback by name", where)

    def fail(n: int) -> None:
        raise ValueError(n) if n else KeyError(n)

    tracebacks = []
    for n in (1, 2, 0):
        try:
            fail(n)
        except Exception as exc:  # noqa: BLE001 - any exception's traceback
            tracebacks.append(exc.__traceback__)
    for tb in tracebacks:
        assert ours(tb) == theirs(tb), _broken("allure_commons.utils.format_traceback's text", where)
    assert ours(None) is theirs(None) is None


def test_pytest_bdd_report_context_registry() -> None:
    """provision/heap.py release_report: pytest-bdd keeps each report's serialized scenario in a registry keyed by
    the report (3.7 kB per item at fleet scale, until the session ends)."""
    from weakref import WeakKeyDictionary

    from pytest_bdd import reporting

    ours = "provision/heap.py"
    assert isinstance(getattr(reporting, "test_report_context_registry", None), WeakKeyDictionary), \
        _broken("pytest_bdd.reporting.test_report_context_registry", ours)
    assert "test_report_context_registry[rep]" in inspect.getsource(reporting.runtest_makereport), \
        _broken("pytest_bdd.reporting.runtest_makereport's registry key", ours)
