"""Chart version order for the operator release: an older chart than the installed one is a downgrade."""

from __future__ import annotations

import pytest

from provision.converge.operator import downgrade_error, is_downgrade


@pytest.mark.parametrize(("installed", "wanted", "down"), [
    ("v26.7.0", "v26.3.0", True), ("v26.3.0", "v26.7.0", False), ("v26.3.0", "v26.3.0", False),
    ("v26.3.1", "v26.3.0", True), ("v25.10.1", "v26.3.0", False), ("not-a-version", "v26.3.0", False),
])
def test_downgrades_are_recognised_by_version_order(installed, wanted, down):
    assert is_downgrade(installed, wanted) is down


def test_the_downgrade_message_names_both_versions_and_the_ways_back():
    msg = downgrade_error("gpu-operator", "gpu-operator", "v26.7.0", "v26.3.0")
    assert "runs chart v26.7.0; v26.3.0 is older" in msg
    assert "--rollback" in msg and "helm rollback gpu-operator -n gpu-operator" in msg
    assert "Nothing was changed" in msg
