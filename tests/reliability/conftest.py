"""Fixtures of the reliability tests: labs of their own per module (started once, torn down after the
module), a folder per test for reports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Lab
from tests.reliability.support import OwnLab, own_lab


@pytest.fixture(scope="module")
def module_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Callable[[dict, str], OwnLab]]:
    """Start labs from spec documents for this module (own state folder, own ports); all stopped after it."""
    started: list[OwnLab] = []

    def make(spec_doc: dict, name: str) -> OwnLab:
        handle = own_lab(spec_doc, tmp_path_factory.mktemp(name))
        started.append(handle)
        return handle

    yield make
    for handle in started:
        handle.down()


@pytest.fixture
def fresh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[dict, str], Lab]]:
    """One lab for one test, from a spec document; stopped after the test."""
    started: list[OwnLab] = []

    def make(spec_doc: dict, name: str) -> Lab:
        handle = own_lab(spec_doc, tmp_path_factory.mktemp(name))
        started.append(handle)
        return handle.lab

    yield make
    for handle in started:
        handle.down()
