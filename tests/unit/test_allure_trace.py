"""provision/reporting/allure_trace.py: a traceback's text formatted once per chain of frames is the standard
library's text, for the same chain (any exception) and for a different one."""

from __future__ import annotations

import traceback

from provision.reporting import allure_trace


def _raise(kind: str) -> None:
    if kind == "a":
        raise ValueError("a")
    raise KeyError(kind)  # another line: another chain of frames


def _tb(kind: str):
    try:
        _raise(kind)
    except Exception as exc:  # noqa: BLE001
        return exc.__traceback__
    raise AssertionError("not raised")


def test_same_frames_same_text_and_other_frames_their_own():
    allure_trace._CACHE.clear()
    first, second, other = _tb("a"), _tb("a"), _tb("b")
    texts = [allure_trace.format_traceback(tb) for tb in (first, second, other)]
    assert texts == ["".join(traceback.format_tb(tb)) for tb in (first, second, other)]
    assert texts[0] == texts[1] != texts[2]
    assert 'raise KeyError(kind)' in texts[2] and 'raise ValueError("a")' in texts[0]
    assert len(allure_trace._CACHE) == 2  # the second "a" was a cache hit


def test_plain_env_leaves_allure_alone(monkeypatch):
    import allure_pytest_bdd.utils as utils

    monkeypatch.setenv(allure_trace._PLAIN_ENV, "1")
    monkeypatch.setattr(utils, "format_traceback", utils.format_traceback)
    before = utils.format_traceback
    assert allure_trace.use_cached_traceback() is False
    assert utils.format_traceback is before
    monkeypatch.delenv(allure_trace._PLAIN_ENV)
    assert allure_trace.use_cached_traceback() is True
    assert utils.format_traceback is allure_trace.format_traceback
