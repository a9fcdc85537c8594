"""No import cycle among the twin's modules (lab/twin/**): every import counts, also one inside a function (a late
import hides a cycle, it does not remove it); only `if TYPE_CHECKING:` blocks, which never run, are left out."""

from __future__ import annotations

import ast
from pathlib import Path

TWIN = Path(__file__).resolve().parents[2] / "lab" / "twin"


def _module(path: Path) -> str:
    parts = path.relative_to(TWIN.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in TWIN.rglob("*.py")}


def _runs(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return not ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
                or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST, here: str) -> set[str]:
    """The lab.twin modules (and their packages) this module imports, anywhere in its code."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and not _runs(node):
            stack.extend(node.orelse)
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".") if MODULES[here].name == "__init__.py" else here.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(3, len(parts) + 1) if ".".join(parts[:i]) in MODULES}
        stack.extend(ast.iter_child_nodes(node))
    found.discard(here)
    return found


def _graph() -> dict[str, set[str]]:
    return {m: _imports(ast.parse(p.read_text()), m) for m, p in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_twin_modules_import_each_other_without_a_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, ("import cycle among the twin's modules: " + " -> ".join(cycle or []) + "; move the code that "
                           "needs both into a module above them (as lab/twin/toolkit.py and lab/twin/seeding.py sit "
                           "above containerd, hostcmd and hostview) instead of hiding the cycle in a late import")


def test_the_check_sees_a_cycle_hidden_in_a_function() -> None:
    a = ast.parse("from lab.twin import hostview\n")
    b = ast.parse("def f():\n    from lab.twin import containerd\n")
    graph = {"lab.twin.containerd": _imports(a, "lab.twin.containerd"), "lab.twin.hostview": _imports(b, "lab.twin.hostview")}
    assert _cycle(graph) == ["lab.twin.containerd", "lab.twin.hostview", "lab.twin.containerd"]
    typing_only = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lab.twin import containerd\n")
    assert _imports(typing_only, "lab.twin.hostview") == set()


def test_every_twin_module_is_seen() -> None:
    assert {"lab.twin.twin", "lab.twin.containerd", "lab.twin.hostview", "lab.twin.hostcmd", "lab.twin.toolkit",
            "lab.twin.seeding", "lab.twin.nvidia_smi"} <= set(MODULES)
    assert "lab.twin.hostview" in _graph()["lab.twin.containerd"]
