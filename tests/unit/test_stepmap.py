"""ARCHITECTURE.md's table from each Gherkin line to its step and converger or check is generated
(gpu_conformance/stepmap.py) and kept current here; every line of every feature file has its row."""

from __future__ import annotations

import re
from pathlib import Path

import parse

from gpu_conformance import stepmap

ROOT = Path(__file__).resolve().parents[2]


def test_architecture_carries_the_current_table() -> None:
    doc = (ROOT / "ARCHITECTURE.md").read_text()
    want = stepmap.table()
    start, end = doc.find(stepmap.BEGIN), doc.find(stepmap.END)
    assert start >= 0 and end > start, "ARCHITECTURE.md lacks the step table: paste `python -m gpu_conformance.stepmap`"
    assert doc[start:end + len(stepmap.END)] == want, \
        "ARCHITECTURE.md's step table is stale: replace it with the output of `python -m gpu_conformance.stepmap`"


def test_every_gherkin_line_has_a_row() -> None:
    rows = list(stepmap.rows())
    assert rows and all(r.where.startswith("steps/") for r in rows)
    missing = []
    for feature in sorted((ROOT / "features").glob("*.feature")):
        keyword = None
        for line in feature.read_text().splitlines():
            m = re.match(r"\s*(Given|When|Then|And|But)\s+(.*)$", line)
            if not m:
                continue
            keyword = keyword if m.group(1) in ("And", "But") else m.group(1)
            text = m.group(2).strip()
            if not any(r.keyword == keyword and (r.text == text or parse.parse(r.text, text)) for r in rows):
                missing.append(f"{feature.name}: {keyword} {text}")
    assert not missing, f"Gherkin lines without a step in the table: {missing}"


def test_a_step_reaching_nothing_in_provision_shows_a_dash(tmp_path) -> None:
    f = tmp_path / "steps.py"
    f.write_text('from pytest_bdd import then\nfrom provision import checks\n\n\n@then("x")\ndef x(run):\n'
                 '    checks.node_ready(run.ctx)\n\n\n@then("y")\ndef y(run):\n    assert run\n')
    got = {r.text: r.calls for r in stepmap.rows((f,))}
    assert got == {"x": ("`checks.node_ready`",), "y": ()}
