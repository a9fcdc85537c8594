"""The plugin package (gpu_conformance/): its option table, the settings it builds from the command line, and
what --rollback prints."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import pytest

from gpu_conformance import run as run_wiring
from gpu_conformance.options import OPTIONS, TESTINFRA, raw_settings
from provision.rollback import RollbackReport
from provision.settings import Settings, validate

pytest_plugins = ["pytester"]


def test_every_option_sets_a_real_setting_and_its_ini_key_is_accepted():
    known = {f.name for f in fields(Settings)}
    for opt in OPTIONS:
        assert opt.setting is None or opt.setting in known, f"{opt.flag} sets {opt.setting!r}, not a Settings field"
        assert opt.ini_key is None or opt.ini_key in known | {"lab"}, f"{opt.flag}: ini key {opt.ini_key!r} unknown"
    flags = [opt.flag for opt in OPTIONS]
    assert len(flags) == len(set(flags)), "an option is declared twice"


def test_testinfra_still_declares_the_options_the_suite_reads():
    """The suite reads --ansible-inventory, --ssh-config, --ssh-identity-file and --sudo from pytest-testinfra: a
    testinfra release that renames or drops one fails here, not silently in a user's run."""
    import testinfra.plugin

    declared: dict[str, dict] = {}

    class Group:
        def addoption(self, *names, **kw):
            for n in names:
                declared[n] = kw

    class Parser:
        def getgroup(self, *args, **kw):
            return Group()

    testinfra.plugin.pytest_addoption(Parser())
    ours = [opt for opt in OPTIONS if opt.owner == TESTINFRA]
    assert ours
    for opt in ours:
        assert opt.flag in declared, f"pytest-testinfra no longer declares {opt.flag} (it declares {sorted(declared)})"
        assert declared[opt.flag].get("dest") == opt.name, f"{opt.flag}: testinfra's dest changed"
        want = "store_true" if opt.kind == "switch" else "store"
        assert declared[opt.flag].get("action") == want, f"{opt.flag}: testinfra's action changed"


def test_command_line_to_settings(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    pytester.makepyprojecttoml('[tool.gpu-conformance]\nreplicas = 3\nchart_version = "v26.3.0"\n')
    config = pytester.parseconfig("--gpu-nodes", "b-1, a-1", "--expected-gpus", "a-1=2,b-1=8", "--no-workload",
                                  "--timeouts", "helm=60", "--chart-version", "v26.7.0", "--provision",
                                  "--replica-profile", "NVIDIA H200=8")
    monkeypatch.chdir(pytester.path)
    raw = raw_settings(config)
    s = validate(raw)
    assert s.mode == "provision"
    assert s.gpu_nodes == ("b-1", "a-1")
    assert s.expected_gpus == {"a-1": 2, "b-1": 8}
    assert s.workload is False
    assert s.timeout("helm") == 60
    assert s.replicas == 3                 # from pyproject
    assert s.chart_version == "v26.7.0"    # the command line wins
    assert s.replica_profiles == {"NVIDIA H200": 8}


@pytest.mark.parametrize(("args", "message"), [
    (["--expected-gpus", "a-1"], "--expected-gpus: expected name=value, got 'a-1'"),
    (["--expected-gpus", "a-1=two"], "--expected-gpus: counts must be integers"),
    (["--timeouts", "helm=soon"], "--timeouts: values are seconds"),
    (["--plan", "--rollback"], "choose one of --provision, --plan, --rollback (got plan, rollback)"),
])
def test_bad_command_line_says_what_is_wrong(pytester: pytest.Pytester, args, message):
    config = pytester.parseconfig(*args)
    with pytest.raises(pytest.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        raw_settings(config)


def test_kubeconfig_from_the_environment_unless_pyproject_names_one(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECONFIG", "/from/env")
    assert raw_settings(pytester.parseconfig())["kubeconfig"] == "/from/env"
    assert raw_settings(pytester.parseconfig("--kubeconfig", "/given"))["kubeconfig"] == "/given"
    pytester.makepyprojecttoml('[tool.gpu-conformance]\nkubeconfig = "/pinned"\n')
    assert raw_settings(pytester.parseconfig())["kubeconfig"] == "/pinned"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str = "", **markup) -> None:
        self.lines.append(text)


class _Config:
    def __init__(self) -> None:
        self.writer = _Writer()

    def get_terminal_writer(self) -> _Writer:
        return self.writer


@pytest.mark.parametrize(("done", "expected"), [
    ([], "\n--rollback:\n  nothing to roll back"),
    (["helm uninstall gpu-operator", "delete ConfigMap x"],
     "\n--rollback:\n  helm uninstall gpu-operator\n  delete ConfigMap x"),
])
def test_rollback_prints_what_it_restored_or_that_there_was_nothing(monkeypatch, tmp_path: Path, done, expected):
    @contextmanager
    def fake_open_run(settings, run_dir, nodes):
        yield run_wiring.OpenRun(ctx=None, engine=None)  # type: ignore[arg-type]

    monkeypatch.setattr(run_wiring, "open_run", fake_open_run)
    monkeypatch.setattr("provision.rollback.rollback", lambda ctx: RollbackReport(done=list(done)))
    setup = run_wiring.Setup(validate({"mode": "rollback"}), "run-1", tmp_path, started=0.0)
    config = _Config()
    row = run_wiring.run_controller_mode(config, setup)  # type: ignore[arg-type]
    assert config.writer.lines == [expected]
    assert row is not None and row["outcome"] == "passed"
    assert setup.rollback_changes == len(done)



def test_host_facts_are_read_once_per_node_and_errors_raised_fresh(tmp_path: Path):
    from provision.context import RunContext
    from provision.hosts.results import HostUnreachable

    ctx = RunContext(validate({}), None, tmp_path, ("a", "b"))  # type: ignore[arg-type]
    reads: list[str] = []

    def read(node: str):
        def go():
            reads.append(node)
            if node == "b":
                raise HostUnreachable(node, "ssh refused")
            return {"gpus": 1}
        return go

    assert ctx.host_fact("a", "smi", read("a")) == {"gpus": 1}
    assert ctx.host_fact("a", "smi", read("a")) == {"gpus": 1}
    errors = []
    for _ in range(2):
        with pytest.raises(HostUnreachable, match="ssh refused") as info:
            ctx.host_fact("b", "smi", read("b"))
        errors.append(info.value)
    assert reads == ["a", "b"]
    assert errors[0] is not errors[1]  # a new exception each time: no traceback chain kept alive
    other = RunContext(validate({}), None, tmp_path, ("a",))  # type: ignore[arg-type]
    other.host_fact("a", "smi", read("a"))
    assert reads == ["a", "b", "a"]  # another run's context reads again


def test_pytest_bdd_still_maps_a_test_function_to_its_scenario(pytester: pytest.Pytester):
    """gpu_conformance/reporting.py names each result by its feature and scenario through pytest-bdd's
    scenario_wrapper_template_registry (not a public API; pytest-bdd pinned >=8.1,<10 in pyproject.toml). A
    release that drops or changes it fails here instead of reports with test-function names."""
    pytester.makefile(".feature", one="Feature: Shapes\n  Scenario: A square has four sides\n    Given a square\n")
    pytester.makepyfile(test_one="""
        from pytest_bdd import given, scenarios

        scenarios("one.feature")

        @given("a square")
        def _():
            pass
    """)
    pytester.makeconftest("""
        import json
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_call(item):
            from pytest_bdd.scenario import scenario_wrapper_template_registry
            sc = scenario_wrapper_template_registry.get(item.obj)
            with open("seen.json", "w") as f:
                json.dump([sc.feature.name, sc.name] if sc else None, f)
    """)
    result = pytester.runpytest_inprocess("-p", "no:gpu_conformance.plugin", "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "seen.json").read_text()) == ["Shapes", "A square has four sides"], \
        "pytest-bdd's scenario_wrapper_template_registry no longer maps the test function to its scenario"
