"""Which player the twin runs for a pod: the first of PLAYERS that plays it, in the order the twin always
asked (the operator, NFD's worker, the DRA stack, then the ClusterPolicy operands by their `app` label). A pod
none plays is the twin's kubelet's (workloads, Jobs, anything else: lab/twin/twin.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab.spec import NodeSpec
from lab.twin import dra_plugin
from lab.twin.operands import (
    BY_APP,
    BY_COMPONENT,
    dcgm_exporter,
    device_plugin,
    dra,
    driver,
    gfd,
    is_nfd_worker,
    is_operator,
    mig_manager,
    nfd_worker,
    toolkit,
    validator,
)

if TYPE_CHECKING:
    from lab.twin.twin import Twin


@dataclass(frozen=True)
class Player:
    name: str                                          # the ClusterPolicy component, or what else it plays
    plays: Callable[[dict], bool]                      # the pod is one of this player's
    start: Callable[[Twin, dict, NodeSpec], None]      # the pod landed on a lab node and its sandbox is up
    stop: Callable[[Twin, dict], None] | None = None   # the pod is gone: what its end does on the node


def _labels(pod: dict) -> dict[str, str]:
    return pod["metadata"].get("labels") or {}


def _component(name: str) -> Callable[[dict], bool]:
    app = BY_COMPONENT[name].app
    return lambda pod: _labels(pod).get("app") == app


def _dra_validator(pod: dict) -> bool:
    return _labels(pod).get("app") == BY_COMPONENT["validator"].app and bool((pod.get("spec") or {}).get("resourceClaims"))


PLAYERS: tuple[Player, ...] = (
    Player("gpu-operator", lambda pod: is_operator(_labels(pod)), lambda twin, pod, node: twin.start_operator_pod(pod)),
    Player("nfd-worker", lambda pod: is_nfd_worker(_labels(pod)), nfd_worker.start),
    Player("dra-kubelet-plugin", lambda pod: _labels(pod).get("app") == dra_plugin.PLUGIN_APP, dra.start_plugin,
           dra.stop_plugin),
    Player("dra-validator", _dra_validator, dra.start_validator),
    Player("dra-operand", lambda pod: _labels(pod).get("app") in dra_plugin.DRA_OPERAND_APPS, dra.start_operand,
           dra.stop_operand),
    Player("toolkit", _component("toolkit"), toolkit.start, toolkit.stop),
    Player("devicePlugin", _component("devicePlugin"), device_plugin.start, device_plugin.stop),
    Player("dcgmExporter", _component("dcgmExporter"), dcgm_exporter.start, dcgm_exporter.stop),
    Player("gfd", _component("gfd"), gfd.start),
    Player("validator", _component("validator"), validator.start),
    Player("driver", _component("driver"), driver.start),
    Player("migManager", _component("migManager"), mig_manager.start),
)
BY_NAME = {p.name: p for p in PLAYERS}
assert {o.component for o in BY_APP.values()} <= set(BY_NAME), "every ClusterPolicy operand has its player"


def player_for(pod: dict) -> Player | None:
    return next((p for p in PLAYERS if p.plays(pod)), None)
