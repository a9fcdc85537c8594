"""The driver container: the lab's nodes have a pre-installed driver, so the operator's driver container
crash-loops with the real "driver in use" message (lab/twin/outputs.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import NodeSpec
from lab.twin import outputs

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    twin.crashloop(pod, outputs.DRIVER_IN_USE)
