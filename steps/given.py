"""Given steps: converge (or, in an audit, observe and diff) the state a scenario depends on."""

from __future__ import annotations

import pytest
from pytest_bdd import given, parsers

from steps.support import converged, require_cluster_level, require_node_level, reset_drift


@pytest.fixture(autouse=True)
def scenario_drift():
    """Each scenario starts with no drift noted (steps/support.py keeps what its Given steps find)."""
    reset_drift()
    yield


@given("a GPU node of the cluster", target_fixture="node")
def a_gpu_node(gpu_node, run):
    return run.node_under_test(gpu_node)


@given("a GPU host", target_fixture="node")
def a_gpu_host(gpu_node, run):
    return run.node_under_test(gpu_node)


@given("its host driver is marked ready for the GPU Operator")
def host_driver_ready(node, run):
    require_node_level(converged(run, "host-driver", node), node, engine=run.engine)


@given("containerd on the node has loaded the NVIDIA runtime")
def containerd_loaded(node, run):
    require_node_level(converged(run, "containerd-restart", node), node, engine=run.engine)


@given("containerd on every GPU node has loaded the NVIDIA runtime")
def containerd_loaded_everywhere(run):
    require_cluster_level(converged(run, "containerd-restart"), every_node=True)


@given("Docker on the node is configured with the nvidia runtime")
def docker_configured(node, run):
    require_node_level(converged(run, "docker-runtime", node), node, engine=run.engine)


@given(parsers.parse("time-slicing is configured with {replicas:d} replicas per GPU"))
def time_slicing(replicas, run, gpu_node):
    run.note_feature_number("replicas", replicas)
    node = gpu_node
    result = converged(run, "time-slicing", node)
    if node:
        require_node_level(result, node, cluster_too=True, engine=run.engine)
    else:
        require_cluster_level(result)
    run.settle_operands()   # --provision: the operands restarted for the config have settled before any Then


@given("the GPU Operator is installed")
def operator_installed(run):
    require_cluster_level(converged(run, "operator-release"))
    run.settle_operands()   # --provision: the fleet converged, its operands (DRA: GPUCluster, slices) settled


@given("the discovery ConfigMap is published")
def discovery_published(run):
    require_cluster_level(converged(run, "discovery"))


@given("its MIG configuration is applied")
def mig_configured(node, run, request):
    """MIG nodes (provision/mig.py node_mode): the mig-config converger's result for the node; the mode the node
    is judged in goes to summary.json `nodes.<node>.mig`. Nodes without MIG go on (their Then steps skip)."""
    import json

    from provision import mig

    require_node_level(converged(run, "mig-config", node), node, engine=run.engine)
    run.settle_operands()   # --provision: the operands restarted by the MIG manager have settled before any Then
    mode = mig.node_mode(run.ctx, node)
    if mode is not None:
        labels = (run.ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
        request.node.user_properties.append(("gpu_conformance_node", json.dumps(
            {"node": node, "fields": {"mig": mode.to_json(labels.get("nvidia.com/mig.config.state"))}})))


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("pytest", "given", "parsers", "reset_drift")]
_ = pytest
