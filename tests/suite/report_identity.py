"""What a run's reports say, without what differs between two runs of the same state (ids, times, the process):
the Allure results (with their attachments' text), the JUnit XML and summary.json. Two runs whose reports say
the same compare equal (tests/suite/test_audit.py: the suite with and without its library caches).

``python -m tests.suite.report_identity RUN_DIR_A RUN_DIR_B`` prints the first difference (exit 1) or "same"."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from xml.etree import ElementTree

TIMES = {"start", "stop"}
SUMMARY_RUN_FIELDS = {"run_id", "started", "finished", "changes_since_previous"}
JUNIT_RUN_ATTRS = {"time", "timestamp", "hostname"}
SECONDS = re.compile(r"\(\d+(?:\.\d+)?s\)")  # a converger's time in an attachment's name: "diff: helm (0.5s)"


def _allure_item(data: dict, attachments: Path) -> dict:
    out: dict = {}
    for key, value in data.items():
        if key in TIMES or key == "uuid":
            continue
        if key == "labels":
            value = sorted([lb["name"], lb.get("value")] for lb in value if lb["name"] != "thread")
        elif key in ("steps", "befores", "afters"):
            value = [_allure_item(s, attachments) for s in value]
        elif key == "attachments":
            value = [{"name": SECONDS.sub("(s)", a.get("name") or ""), "type": a.get("type"),
                      "text": (attachments / a["source"]).read_text(errors="replace")} for a in value]
        out[key] = value
    return out


def allure_results(run_dir: Path) -> list[dict]:
    folder = run_dir / "allure-results"
    items = [_allure_item(json.loads(p.read_text()), folder) for p in folder.glob("*-result.json")]
    return sorted(items, key=lambda d: json.dumps(d, sort_keys=True))


def junit(run_dir: Path) -> list:
    root = ElementTree.parse(run_dir / "junit.xml").getroot()

    def node(el: ElementTree.Element) -> list:
        attrs = {k: v for k, v in el.attrib.items() if k not in JUNIT_RUN_ATTRS}
        return [el.tag, sorted(attrs.items()), (el.text or "").strip(), sorted((node(c) for c in el), key=repr)]

    return node(root)


def summary(run_dir: Path) -> dict:
    data = json.loads((run_dir / "summary.json").read_text())
    for conv in data.get("convergers", []):
        conv.pop("seconds", None)
    return {k: v for k, v in data.items() if k not in SUMMARY_RUN_FIELDS}


# What differs per request or moment in a message: an apiserver error's headers (Audit-Id, Date) in a could-not-check
# message, and the time of a kernel log line the lab's twin writes when it is read (an Xid "at <time>").
PER_REQUEST = [(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
               (re.compile(r"'Date': '[^']*'"), "'Date': <date>"),
               (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<time>")]


def _scrub(value: object) -> object:
    if isinstance(value, str):
        for pattern, repl in PER_REQUEST:
            value = pattern.sub(repl, value)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def reports(run_dir: Path) -> dict:
    data = _scrub({"allure": allure_results(run_dir), "junit": junit(run_dir), "summary": summary(run_dir)})
    data["allure"].sort(key=lambda d: json.dumps(d, sort_keys=True))  # type: ignore[union-attr]
    return data  # type: ignore[return-value]


def first_difference(a: object, b: object, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'the second' if k not in a else 'the first'}"
            d = first_difference(a[k], b[k], f"{path}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} != {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if a == b:
        return None
    if isinstance(a, str) and isinstance(b, str):  # where the texts part, with some context
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        a, b = a[max(0, at - 80):at + 120], b[max(0, at - 80):at + 120]
    return f"{path}: {str(a)[:300]!r} != {str(b)[:300]!r}"


if __name__ == "__main__":
    diff = first_difference(reports(Path(sys.argv[1])), reports(Path(sys.argv[2])))
    print(diff or "same")
    sys.exit(1 if diff else 0)
