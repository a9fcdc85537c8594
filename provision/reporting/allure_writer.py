"""Allure result files written with one call of the C JSON encoder.

allure-commons' AllureFileLogger writes each result with ``json.dump(data, file)``; ``json.dump`` to a file
always runs the pure-Python encoder (the C encoder serves only ``json.dumps``), which made writing the result
files the largest single cost of a 1000-node audit after pytest itself (about 1 ms per scenario on the
benchmark machine). :func:`use_fast_writer` gives the run's file logger a writer that produces the same JSON
(same fields, same filter: empty values left out, ``False`` kept) from ``json.dumps`` and writes it atomically
the way the logger does (a ``.tmp`` file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import uuid
from types import MethodType
from typing import Any

import allure_commons
from allure_commons.logger import AllureFileLogger
from attr import asdict


def _report_item(self: AllureFileLogger, item: Any) -> None:
    filename = item.file_pattern.format(prefix=uuid.uuid4())
    data = asdict(item, filter=lambda _, v: v or v is False)
    text = json.dumps(data, ensure_ascii=False)
    tmp = self._report_dir / f"{filename}.tmp"
    with open(tmp, "w", encoding="utf8") as f:
        f.write(text)
    os.replace(tmp, self._report_dir / filename)


def use_fast_writer() -> int:
    """Switch every registered AllureFileLogger to the fast writer; returns how many were switched (0 when
    allure is not on for the run, when ALLURE_INDENT_OUTPUT asks for indented files, or when this allure-commons
    has no ``_report_item`` to replace)."""
    if os.environ.get("ALLURE_INDENT_OUTPUT"):
        return 0
    switched = 0
    for plugin in allure_commons.plugin_manager.get_plugins():
        if isinstance(plugin, AllureFileLogger) and callable(getattr(plugin, "_report_item", None)):
            plugin._report_item = MethodType(_report_item, plugin)  # type: ignore[method-assign]
            switched += 1
    return switched
