"""lab/twin/operands/registry.py: which player the twin runs for a pod, by the labels the real charts and operator put
on it (the order of the former if-chain: operator, NFD worker, DRA stack, then the ClusterPolicy operands)."""

from __future__ import annotations

import pytest

from lab.twin import dra_plugin
from lab.twin.operands import OPERANDS
from lab.twin.operands.registry import BY_NAME, player_for


def _pod(labels: dict[str, str], claims: bool = False) -> dict:
    return {"metadata": {"uid": "u", "labels": labels}, "spec": {"resourceClaims": [{"name": "gpu"}] if claims else []}}


@pytest.mark.parametrize("operand", OPERANDS, ids=lambda o: o.component)
def test_each_clusterpolicy_operand_has_its_player(operand) -> None:
    assert player_for(_pod({"app": operand.app})).name == operand.component


@pytest.mark.parametrize(("labels", "claims", "player"), [
    ({"app": "gpu-operator", "app.kubernetes.io/component": "gpu-operator"}, False, "gpu-operator"),
    ({"app.kubernetes.io/name": "node-feature-discovery", "role": "worker"}, False, "nfd-worker"),
    ({"app": dra_plugin.PLUGIN_APP}, False, "dra-kubelet-plugin"),
    ({"app": "nvidia-operator-validator"}, True, "dra-validator"),   # the DRA validator carries the validator's app
    ({"app": "nvidia-operator-validator"}, False, "validator"),
])
def test_the_special_pods_go_to_their_player(labels: dict, claims: bool, player: str) -> None:
    assert player_for(_pod(labels, claims)).name == player


def test_a_pod_no_player_plays_is_the_kubelets() -> None:
    assert player_for(_pod({"app": "cuda-vectoradd"})) is None
    assert player_for({"metadata": {"uid": "u"}}) is None   # a deleted pod without labels or spec


def test_only_pods_whose_end_acts_on_the_node_have_a_stop() -> None:
    assert {n for n, p in BY_NAME.items() if p.stop} == {"toolkit", "devicePlugin", "dcgmExporter", "dra-kubelet-plugin",
                                                          "dra-operand"}   # the DRA DCGM exporter stops serving
