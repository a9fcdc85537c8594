"""Then steps only observe and assert: no Then step converges, settles or writes (issue: assertions with side
effects). Read from the step modules' syntax tree, so a new Then step that calls one of these fails here."""

from __future__ import annotations

import ast
from pathlib import Path

STEPS = Path(__file__).resolve().parents[2] / "steps"
SIDE_EFFECTS = {"settle_operands", "settle_dra", "converged", "ensure", "apply", "require_node_level", "require_cluster_level"}


def test_no_then_step_has_a_side_effect() -> None:
    bad = []
    for path in sorted(STEPS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in tree.body:
            if not isinstance(fn, ast.FunctionDef) or not any(
                    isinstance(d, ast.Call) and getattr(d.func, "id", "") == "then" for d in fn.decorator_list):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                    if name in SIDE_EFFECTS:
                        bad.append(f"{path.name}:{fn.name} calls {name}")
    assert not bad, f"Then steps must only observe; move these into a Given: {bad}"
