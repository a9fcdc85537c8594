"""What pytest itself costs per item, with the suite's libraries and nothing of the suite: the floor under any
fleet-scale figure of a suite that reports one item per (scenario, node).

It writes, in a temporary folder, a feature file of ``--scenarios`` scenarios of three steps each (Given, When,
Then; the step functions do nothing), parametrized over ``--nodes`` node names by a conftest the way the suite's
plugin does (one item per scenario and node), and times `pytest` on it in layers:

- ``plain``: the same number of empty test functions (pytest alone);
- ``bdd``: the pytest-bdd scenarios;
- ``bdd+reports``: the same with allure-pytest-bdd's results and pytest's JUnit XML, as every suite run writes.

    python -m bench.pytest_floor --nodes 1000 --scenarios 23

prints one line per layer (wall seconds, ms per item, peak RSS) and a JSON document at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jinja2 import Template

FEATURE = Template("""\
Feature: Floor
{% for i in range(scenarios) %}
  Scenario: Scenario {{ i }}
    Given a node
    When it is looked at
    Then it is fine
{% endfor %}
""")

CONFTEST = Template("""\
import pytest

NODES = [f"node-{i:04d}" for i in range({{ nodes }})]


def pytest_generate_tests(metafunc):
    if "node_name" in metafunc.fixturenames:
        metafunc.parametrize("node_name", NODES, ids=NODES)


@pytest.fixture
def node_name(request):
    return request.param
""")

BDD_TESTS = """\
import pytest
from pytest_bdd import given, scenarios, then, when

pytestmark = pytest.mark.usefixtures("node_name")  # as features/test_features.py does with gpu_node
scenarios("floor.feature")


@given("a node", target_fixture="node")
def a_node(node_name):
    return node_name


@when("it is looked at")
def looked_at(node):
    pass


@then("it is fine")
def fine(node):
    assert node
"""

PLAIN_TESTS = Template("""\
{% for i in range(scenarios) %}
def test_scenario_{{ i }}(node_name):
    assert node_name
{% endfor %}
""")


def run_layer(folder: Path, layer: str, items: int) -> dict:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:gpu_conformance.plugin",
            "-o", "addopts=", str(folder / layer)]
    if layer == "bdd+reports":
        args += ["--alluredir", str(folder / "allure"), "--junitxml", str(folder / "junit.xml")]
    else:
        args += ["-p", "no:allure_pytest_bdd"]
    t0 = time.monotonic()
    proc = subprocess.run(args, cwd=folder, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{layer}: pytest exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far, MB
    return {"layer": layer, "items": items, "wall_s": round(wall, 2), "ms_per_item": round(1000 * wall / items, 3),
            "peak_rss_mb_so_far": round(peak, 1), "last_line": proc.stdout.strip().splitlines()[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--scenarios", type=int, default=23, help="scenarios per node (the suite has 23 per GPU node)")
    args = parser.parse_args(argv)
    items = args.nodes * args.scenarios
    out = []
    with tempfile.TemporaryDirectory(prefix="pytest-floor-") as tmp:
        folder = Path(tmp)
        for layer in ("plain", "bdd", "bdd+reports"):
            d = folder / layer
            d.mkdir()
            (d / "conftest.py").write_text(CONFTEST.render(nodes=args.nodes))
            if layer == "plain":
                (d / "test_plain.py").write_text(PLAIN_TESTS.render(scenarios=args.scenarios))
            else:
                (d / "floor.feature").write_text(FEATURE.render(scenarios=args.scenarios))
                (d / "test_floor.py").write_text(BDD_TESTS)
        for layer in ("plain", "bdd", "bdd+reports"):
            row = run_layer(folder, layer, items)
            print(f"{layer:12s} {items} items: {row['wall_s']:7.1f} s, {row['ms_per_item']:.3f} ms per item "
                  f"({row['last_line']})", flush=True)
            out.append(row)
    print(json.dumps({"nodes": args.nodes, "scenarios": args.scenarios, "layers": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
