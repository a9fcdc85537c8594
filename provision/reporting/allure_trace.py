"""The traceback text of a failed or skipped step in the Allure results, formatted once per distinct frame.

allure-pytest-bdd records every failed or skipped step with ``traceback.format_tb`` of its exception
(``allure_pytest_bdd.utils.get_status_details`` -> ``allure_commons.utils.format_traceback``). On Python 3.11+
extracting a traceback reads each frame's source line (linecache, a stat per file) and formatting it parses that
line with ``ast`` to place the ``^~~~`` markers: about 8 % of an API-only audit's run loop (N = 100, cProfile),
because every node's skipped host scenarios and failed operand scenarios raise through the same few frames.
:func:`format_traceback` gives the same text, formatted by ``traceback.format_tb`` once per distinct chain of
frames: a traceback's text depends only on each frame's code object and position in it (file, function, line,
column markers and source line all come from those), so the chain of (code, last instruction, line) is the key.
"""

from __future__ import annotations

import os
import sys
import traceback
from types import TracebackType
from typing import Any

_PLAIN_ENV = "GPU_CONFORMANCE_PLAIN_PYTEST_BDD"  # gpu_conformance/step_lookup.py PLAIN_ENV: libraries left as shipped
_MAX_CACHED = 4096


_CACHE: dict[tuple, str] = {}


def format_traceback(exc_traceback: TracebackType | None) -> str | None:
    """allure_commons.utils.format_traceback's result (``"".join(traceback.format_tb(tb))`` or None)."""
    if not exc_traceback:
        return None
    if hasattr(sys, "tracebacklimit"):  # format_tb honours it: not worth a cache key
        return "".join(traceback.format_tb(exc_traceback))
    key = []
    tb: TracebackType | None = exc_traceback
    while tb is not None:
        key.append((tb.tb_frame.f_code, tb.tb_lasti, tb.tb_lineno))
        tb = tb.tb_next
    k = tuple(key)
    text = _CACHE.get(k)
    if text is None:
        text = "".join(traceback.format_tb(exc_traceback))
        if len(_CACHE) < _MAX_CACHED:
            _CACHE[k] = text
    return text


def use_cached_traceback() -> bool:
    """Give allure-pytest-bdd the cached formatter (False: left as shipped, or allure-pytest-bdd not installed)."""
    if os.environ.get(_PLAIN_ENV):
        return False
    try:
        import allure_pytest_bdd.utils as utils
    except ImportError:
        return False
    current: Any = getattr(utils, "format_traceback", None)
    if current is None:
        return False
    utils.format_traceback = format_traceback
    return True
