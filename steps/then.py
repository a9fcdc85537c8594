"""Then steps: assert the guarantee, with a message a cluster operator can act on."""

from __future__ import annotations

from pytest_bdd import parsers, then

from provision import checks, dra
from steps.support import expect_check, expect_finding


@then("at least one GPU node is found")
def gpu_nodes_found(run):
    assert run.gpu_nodes, run.discovery_error or "no GPU nodes found"
    assert not run.discovery_error, run.discovery_error


@then("the Helm release is deployed at the expected chart version")
def release_deployed(run):
    expect_finding(checks.release_deployed(run.ctx))


@then("the gpu-operator Deployment is available")
def operator_available(run):
    expect_finding(checks.operator_available(run.ctx))


@then(parsers.parse('ClusterPolicy cluster-policy is "{state}"'))
def cluster_policy_state(run, state):
    expect_finding(checks.cluster_policy_state(run.ctx, state))


@then("every operand DaemonSet has a ready pod on each GPU node")
def operands_ready(run):
    expect_finding(checks.operands_ready(run.ctx))


@then(parsers.parse('RuntimeClass "{name}" exists with handler "{handler}"'))
def runtime_class(run, name, handler):
    expect_check(checks.runtime_class, run.ctx, name, handler)


@then(parsers.parse("the time-slicing ConfigMap is valid with at least {minimum:d} replicas and ClusterPolicy uses it"))
def time_slicing_valid(run, minimum):
    expect_finding(checks.time_slicing_configmap(run.ctx, minimum))


@then("the discovery ConfigMap has its labels and both endpoints")
def discovery_cm(run):
    expect_finding(checks.discovery_configmap(run.ctx))


@then("the node reports Ready")
def node_ready(run, node):
    expect_finding(checks.node_ready(run.ctx, node))


@then(parsers.parse("nvidia-smi works and the driver is at least version {minimum:d}"))
def driver_version(run, node, minimum):
    run.note_feature_number("min_driver", minimum)
    expect_finding(checks.driver(run.ctx, node, run.ctx.settings.min_driver))


@then("the node has its expected number of physical GPUs")
def physical_gpus(run, node):
    expect_finding(checks.physical_count(run.ctx, node))


@then("the runc and nvidia drop-ins are in a directory containerd imports")
def dropins_imported(run, node):
    expect_check(checks.containerd_dropins, run.ctx, node)


@then("containerd's effective runtimes include runc as default and nvidia")
def effective_runtimes(run, node):
    expect_check(checks.containerd_runtimes, run.ctx, node)


@then("no containerd drop-in has a higher version than the root config")
def dropin_versions(run, node):
    expect_finding(checks.containerd_versions(run.ctx, node))


@then("/etc/docker/daemon.json has the nvidia runtime")
def docker_runtime(run, node):
    expect_check(checks.docker_runtime, run.ctx, node)


@then("allocatable nvidia.com/gpu equals physical GPUs times replicas")
def allocatable(run, node):
    expect_finding(checks.allocatable(run.ctx, node))


@then("the GPU feature discovery labels show the physical count, replicas and a shared product")
def gfd_labels(run, node):
    expect_finding(checks.gfd_labels(run.ctx, node))


@then(parsers.parse('a CUDA vectoradd pod on the node exits 0 and prints "{text}"'))
def vectoradd(run, node, text):
    run.require_workload()
    expect_finding(checks.vectoradd(run.ctx, node))


@then("the DCGM exporter on the node reports a metric for every GPU of nvidia-smi")
def dcgm_metrics(run, node):
    expect_finding(checks.dcgm_metrics(run.ctx, node))


@then(parsers.parse('a CUDA vector addition built with nvcc on the host prints "{text}"'))
def cuda_native(run, node, text):
    run.require_workload()
    expect_check(checks.cuda_native, run.ctx, node)


@then("the host's containerd has runc as default and the nvidia runtime")
def host_containerd(run, node):
    expect_check(checks.host_containerd, run.ctx, node)


# ------------------------------------------------------------------------------------------------ GPU health
def _health(run, node, name: str, request) -> None:
    import json

    import pytest

    from provision import health

    try:
        finding = health.check(run.ctx, node, name)
    except checks.NotApplicable as exc:
        pytest.skip(str(exc))
    request.node.user_properties.append(("gpu_conformance_health", json.dumps(
        {"node": node, "check": name, "measured": finding.measured}, default=str)))
    expect_finding(finding)


@then("no GPU of the node reported a critical Xid error within the health window")
def health_xid(run, node, request):
    _health(run, node, "xid", request)


@then("no GPU has uncorrectable ECC errors, a pending row remap or a remapping failure")
def health_memory(run, node, request):
    _health(run, node, "memory", request)


@then("every GPU's PCIe link runs at its maximum generation and width")
def health_pcie(run, node, request):
    _health(run, node, "pcie", request)


@then("no GPU's clocks are held back by a hardware, thermal or power-brake slowdown")
def health_throttling(run, node, request):
    _health(run, node, "throttling", request)


@then("every NVIDIA GPU on the PCI bus is listed by nvidia-smi")
def health_presence(run, node, request):
    _health(run, node, "presence", request)


@then("persistence mode and the persistence daemon are as the desired state asks")
def health_persistence(run, node, request):
    _health(run, node, "persistence", request)


# ------------------------------------------------------------------------------------------------ MIG
@then("the MIG manager has applied the node's MIG profile")
def mig_state(run, node):
    from provision import mig

    expect_check(mig.check_state, run.ctx, node)


@then("nvidia-smi lists the MIG devices the profile gives each GPU")
def mig_devices(run, node):
    from provision import mig

    expect_check(mig.check_devices, run.ctx, node)


@then("the node advertises its MIG devices under the resource of its MIG strategy")
def mig_advertised(run, node):
    from provision import mig

    expect_check(mig.check_advertised, run.ctx, node)


@then("GPU feature discovery labels the MIG devices")
def mig_gfd(run, node):
    from provision import mig

    expect_check(mig.check_gfd, run.ctx, node)


@then("the DCGM exporter reports every MIG instance")
def mig_dcgm(run, node):
    from provision import mig

    expect_check(mig.check_dcgm, run.ctx, node)


@then("the node has what its runtime mode needs")
def runtime_mode_needs(run, node):
    expect_check(checks.runtime_mode_needs, run.ctx, node)


# ----------------------------------------------------------------- DRA mode (features/dra_*.feature, docs/dra.md)
@then("the cluster runs exactly the desired GPU stack")
def dra_stack(run):
    from provision.converge.operator import stack_refusal

    refused = stack_refusal(run.ctx)
    assert refused is None, refused


@then("the apiserver serves resource.k8s.io/v1")
def dra_api(run):
    expect_finding(dra.api_served(run.ctx))


@then("the DeviceClasses of the NVIDIA DRA driver exist")
def dra_device_classes(run):
    expect_finding(dra.device_classes(run.ctx))


@then(parsers.parse('GPUCluster gpu-cluster is "{state}"'))
def dra_gpu_cluster(run, state):
    assert state == "ready", f"only the state ready is checked, the feature asks for {state!r}"
    expect_finding(dra.gpu_cluster_ready(run.ctx))


@then("the DRA driver's controller is ready")
def dra_controller(run):
    expect_finding(dra.driver_controller(run.ctx))


@then("no gpu.nvidia.com ResourceClaim is held for a pod that no longer exists")
def dra_claims(run):
    expect_finding(dra.claims_released(run.ctx))


@then("the DRA kubelet plugin pod on the node is ready")
def dra_plugin(run, node):
    expect_finding(dra.kubelet_plugin(run.ctx, node))


@then("the node's ResourceSlices list one device per GPU with nvidia-smi's UUIDs and driver version")
def dra_slices(run, node):
    expect_check(dra.node_slices, run.ctx, node)


@then("the node does not also advertise nvidia.com/gpu")
def dra_not_twice(run, node):
    expect_finding(dra.no_double_advertisement(run.ctx, node))


@then('a pod with a ResourceClaim for one gpu.nvidia.com device on the node prints "Test PASSED" and its claim is released')
def dra_workload(run, node):
    from provision.dra_workload import claim_vectoradd

    run.require_workload()
    expect_finding(claim_vectoradd(run.ctx.kube, run.ctx.settings, node))


@then('two pods naming one ResourceClaim with the desired GPU sharing on the node both print "Test PASSED"')
def dra_sharing(run, node):
    import pytest

    from provision.dra_workload import shared_claim_vectoradd

    strategy = run.ctx.settings.dra_sharing
    if strategy == "none":
        pytest.skip("no GPU sharing asked for (dra_sharing = none)")
    run.require_workload()
    expect_finding(shared_claim_vectoradd(run.ctx.kube, run.ctx.settings, node, strategy))


@then("a pod without a ResourceClaim on the node sees no /dev/nvidia* device")
def dra_isolation(run, node):
    from provision.dra_workload import unclaimed_pod_sees_no_gpu

    run.require_workload()
    expect_finding(unclaimed_pod_sees_no_gpu(run.ctx.kube, run.ctx.settings, node))
