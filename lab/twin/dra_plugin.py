"""What the NVIDIA DRA driver's kubelet plugin (container `gpus` of the operator's nvidia-dra-driver-kubelet-plugin
DaemonSet) publishes for a node: its ResourceSlice, built from the node's recorded nvidia-smi as the real plugin
builds it from NVML (NVIDIA/k8s-dra-driver-gpu cmd/gpu-kubelet-plugin deviceinfo.go / nvlib.go / driver.go; the
lab's reading is in docs/dra.md):

* one pool per node, named after the node, one slice (no DynamicMIG), driver ``gpu.nvidia.com``, nodeName set;
* a device ``gpu-<minor>`` per GPU with attributes type "gpu", uuid, productName, brand, architecture,
  cudaComputeCapability / driverVersion / cudaDriverVersion as semver (Masterminds: 580.159.04 -> 580.159.4,
  9.0 -> 9.0.0, CUDA 13.0 -> 13.0.0), resource.kubernetes.io/pciBusID (nvidia-smi's bus id lowercased with the
  first "0000" of the 8-digit domain dropped), capacity memory.

Faults (lab/spec.py): dra-slice-missing-gpu drops the node's last GPU, dra-driver-version-differs publishes another
driverVersion. Pure: the twin does the API calls.
"""

from __future__ import annotations

from lab.spec import Fault, NodeSpec
from lab.twin.gpus import capture_dir, gpus_for
from lab.twin.nvidia_smi import cuda_version

DRIVER = "gpu.nvidia.com"
PLUGIN_APP = "nvidia-dra-driver-kubelet-plugin"
# The other operands of the GPUCluster stack: pods the twin runs as plain ready pods (their claims are admin access)
DRA_OPERAND_APPS = ("nvidia-dra-driver-controller", "nvidia-dcgm-exporter-dra", "nvidia-dra-validator",
                    "nvidia-dcgm-dra")
WRONG_DRIVER = "550.54.15"  # dra-driver-version-differs: what the plugin says instead of the host's driver


def semver(v: str) -> str:
    """Masterminds semver's String() of a version NVML reports (missing parts 0, leading zeros dropped)."""
    parts = [str(int(p)) for p in v.split(".")[:3]]
    return ".".join(parts + ["0"] * (3 - len(parts)))


def architecture(product: str, compute_cap: str) -> str:
    major = compute_cap.split(".")[0]
    return {"7": "Volta" if compute_cap.startswith("7.0") else "Turing", "8": "Ampere", "9": "Hopper",
            "10": "Blackwell", "12": "Blackwell"}.get(major, "Unknown") if "GB" not in product else "Blackwell"


def pci_bus_id(nvidia_smi_bus_id: str) -> str:
    bus = nvidia_smi_bus_id.lower()
    return bus if bus.startswith("0000:") else bus.removeprefix("0000")


def devices(node: NodeSpec) -> list[dict]:
    records = gpus_for(node)
    if Fault.DRA_SLICE_MISSING_GPU in node.faults:
        records = records[:-1]
    driver = WRONG_DRIVER if Fault.DRA_DRIVER_VERSION_DIFFERS in node.faults else node.driver
    cuda = cuda_version(node.driver, capture_dir(node))
    out = []
    for r in records:
        cc = r.compute_cap or node.compute_cap
        dev = {"name": f"gpu-{r.index}", "attributes": {
            "type": {"string": "gpu"},
            "uuid": {"string": r.uuid},
            "productName": {"string": r.name},
            "brand": {"string": "Nvidia"},
            "architecture": {"string": architecture(r.name, cc)},
            "cudaComputeCapability": {"version": semver(cc)},
            "driverVersion": {"version": semver(driver)},
            "cudaDriverVersion": {"version": semver(cuda)},
            "resource.kubernetes.io/pciBusID": {"string": pci_bus_id(r.pci_bus_id)},
        }}
        if r.memory_total_mib is not None:
            dev["capacity"] = {"memory": {"value": f"{r.memory_total_mib}Mi"}}
        out.append(dev)
    return out


def resource_slice(node: NodeSpec, node_uid: str, generation: int = 1) -> dict:
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"generateName": f"{node.name}-{DRIVER}-",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid,
                                          "controller": True}]},
        "spec": {"driver": DRIVER, "nodeName": node.name,
                 "pool": {"name": node.name, "generation": generation, "resourceSliceCount": 1},
                 "devices": devices(node)},
    }


def left_claim(node: NodeSpec) -> dict:
    """dra-claim-left-allocated: a claim of a pod that is gone, its allocation (the node's last GPU) still there. Made
    without the resource claim controller's finalizer, as a claim allocated before it existed or by hand: the
    controller then drops the gone pod from reservedFor but keeps the allocation."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": f"left-behind-{node.name}", "namespace": "default"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}}}


def left_claim_status(node: NodeSpec) -> dict:
    last = gpus_for(node)[-1].index
    return {"allocation": {
        "devices": {"results": [{"request": "gpu", "driver": DRIVER, "pool": node.name, "device": f"gpu-{last}"}]},
        "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node.name]}]}]}},
        "reservedFor": [{"resource": "pods", "name": "finished-job-pod",
                         "uid": "00000000-0000-4000-8000-000000000001"}]}


SHARING_GATES = {"TimeSlicing": "TimeSlicingSettings", "MPS": "MPSSupport"}  # pkg/featuregates, alpha, off by default
GATE_ERROR = "%r is selected as the GPU sharing strategy, but the %r feature gate is not enabled"  # api/.../validate.go


def feature_gates(env: dict[str, str]) -> dict[str, bool]:
    """The plugin's FEATURE_GATES env (the operator renders draDriver.featureGates as A=true,B=false)."""
    out = {}
    for item in (env.get("FEATURE_GATES") or "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip().lower() == "true"
    return out


def sharing_error(claim: dict, gates: dict[str, bool]) -> str | None:
    for cfg in ((claim.get("spec") or {}).get("devices") or {}).get("config") or []:
        opaque = cfg.get("opaque") or {}
        params = opaque.get("parameters") or {}
        if opaque.get("driver") != DRIVER or params.get("kind") != "GpuConfig":
            continue
        strategy = (params.get("sharing") or {}).get("strategy")
        gate = SHARING_GATES.get(strategy or "")
        if gate and not gates.get(gate):
            return (GATE_ERROR % (strategy, gate)).replace("'", '"')
    return None


LIST_DEVICES = "/dev/nvidia*"


def lists_devices(pod: dict) -> bool:
    """A container whose command lists the NVIDIA device nodes (the suite's isolation check: `ls /dev/nvidia*`)."""
    return any(LIST_DEVICES in " ".join((c.get("command") or []) + (c.get("args") or []))
               for c in pod["spec"].get("containers", []))


def claim_device_nodes(claim: dict) -> list[str]:
    """Device nodes CDI injects for a claim's allocated gpu.nvidia.com devices (the driver's CDI spec: the GPU's
    /dev/nvidia<minor> plus the control devices)."""
    out = []
    for r in (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or []:
        if r.get("driver") == DRIVER and str(r.get("device", "")).startswith("gpu-"):
            out += [f"/dev/nvidia{r['device'].removeprefix('gpu-')}", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    return out


def ls_output(devices: list[str]) -> str:
    """`ls -1 /dev/nvidia*` as a shell prints it (GNU coreutils' message when the glob matches nothing)."""
    if not devices:
        return "ls: cannot access '/dev/nvidia*': No such file or directory\n"
    return "".join(f"{d}\n" for d in devices)
