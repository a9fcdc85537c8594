"""What the NVIDIA DRA driver's kubelet plugin (container `gpus` of the operator's nvidia-dra-driver-kubelet-plugin
DaemonSet) publishes for a node: its ResourceSlice, built from the node's recorded nvidia-smi as the real plugin
builds it from NVML (NVIDIA/k8s-dra-driver-gpu cmd/gpu-kubelet-plugin deviceinfo.go / nvlib.go / driver.go; the
lab's reading is in docs/dra.md):

* one pool per node, named after the node, one slice (no DynamicMIG), driver ``gpu.nvidia.com``, nodeName set;
* a device ``gpu-<minor>`` per GPU with attributes type "gpu", uuid, productName, brand, architecture,
  cudaComputeCapability / driverVersion / cudaDriverVersion as semver (Masterminds: 580.159.04 -> 580.159.4,
  9.0 -> 9.0.0, CUDA 13.0 -> 13.0.0), resource.kubernetes.io/pciBusID (nvidia-smi's bus id lowercased with the
  first "0000" of the 8-digit domain dropped), capacity memory.

* a GPU with MIG enabled (static MIG: the host's partitions, lab/twin/mig.py; no DynamicMIG) is not published
  itself: each of its MIG devices is, named ``gpu-<minor>-mig-<profile without dots>-<GI profile ID>-<placement
  start>`` (mig.go ToCanonicalName), attributes type "mig", uuid (the MIG UUID), parentUUID, profile and the
  parent's productName, brand, architecture, versions and PCI bus id (mig.go CommonAttributesMig), capacity
  multiprocessors, copyEngines, decoders, encoders, jpegEngines, ofaEngines, memory (bytes) from the GPU instance
  profile (the node's ``nvidia-smi mig -lgip``, else GFD's profile attributes) and memorySlice<i> = 1 for each
  memory slice of its placement (deviceinfo.go MigDeviceInfo.GetDevice).

Faults (lab/spec.py): dra-slice-missing-gpu drops the node's last GPU, dra-driver-version-differs publishes another
driverVersion. Pure: the twin does the API calls.
"""

from __future__ import annotations

import re

from lab.spec import Fault, NodeSpec
from lab.twin import mig, nvidia_smi
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


# NVML GPU instance profile IDs where the node has no `nvidia-smi mig -lgip` capture (the IDs of the H200 capture's
# table, the same on A100 and H100): 1 slice 19 (its +me variant 20, its double-memory variant 15), 2g 14, 3g 9,
# 4g 5, 7g 0
_GI_PROFILE_IDS = {1: 19, 2: 14, 3: 9, 4: 5, 7: 0}
_LGIP = re.compile(r"\|\s+(\d+)\s+MIG (\S+)\s+(\d+)\s+\d+/\d+\s+([\d.]+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\n"
                   r"\|\s+(\d+)\s+(\d+)\s+(\d+)\s+\|")


def gi_profiles(lgip_text: str) -> dict[str, dict[str, int]]:
    """GPU 0's rows of `nvidia-smi mig -lgip`: profile -> id, multiprocessors, decoders, encoders, copyEngines,
    jpegEngines, ofaEngines, memory_mib (the table prints GiB)."""
    out: dict[str, dict[str, int]] = {}
    for m in _LGIP.finditer(lgip_text):
        if m.group(1) != "0":
            continue
        out[m.group(2)] = {"id": int(m.group(3)), "memory_mib": round(float(m.group(4)) * 1024),
                           "multiprocessors": int(m.group(5)), "decoders": int(m.group(6)),
                           "encoders": int(m.group(7)), "copyEngines": int(m.group(8)),
                           "jpegEngines": int(m.group(9)), "ofaEngines": int(m.group(10))}
    return out


def _profile_info(profile: str, lgip: dict[str, dict[str, int]]) -> dict[str, int]:
    """The GPU instance profile: from the node's lgip table, else GFD's attributes of the profile (lab/twin/mig.py)."""
    if profile in lgip:
        return lgip[profile]
    a = mig.attributes(profile)
    size = int(re.match(r"([0-9]+)g", profile).group(1)) if re.match(r"([0-9]+)g", profile) else 1
    pid = 20 if profile.endswith("+me") else _GI_PROFILE_IDS.get(size, 19)

    def n(key: str) -> int:
        return int(a.get(key) or 0)
    return {"id": pid, "memory_mib": n("memory"), "multiprocessors": n("multiprocessors"),
            "decoders": n("engines.decoder"), "encoders": n("engines.encoder"), "copyEngines": n("engines.copy"),
            "jpegEngines": n("engines.jpeg"), "ofaEngines": n("engines.ofa")}


def mig_device_name(minor: int, profile: str, profile_id: int, start: int) -> str:
    """mig.go ToCanonicalName: gpu-<minor>-mig-<profile, dots removed, RFC 1123>-<GI profile ID>-<placement start>."""
    pname = re.sub(r"[^a-z0-9-.]", "-", profile.replace(".", "").lower()).strip("-").removesuffix(".")
    return f"gpu-{minor}-mig-{pname}-{profile_id}-{start}"


def devices(node: NodeSpec, mig_state: dict | None = None, lgip_text: str = "") -> list[dict]:
    """The node's published devices; `mig_state` the host's MIG partitions (lab/twin/mig.py read), `lgip_text` its
    `nvidia-smi mig -lgip`."""
    records = gpus_for(node)
    if Fault.DRA_SLICE_MISSING_GPU in node.faults:
        records = records[:-1]
    driver = WRONG_DRIVER if Fault.DRA_DRIVER_VERSION_DIFFERS in node.faults else node.driver
    cuda = cuda_version(node.driver, capture_dir(node))
    on = mig.enabled(mig_state or {})
    lgip = gi_profiles(lgip_text) if on else {}
    out = []
    for r in records:
        cc = r.compute_cap or node.compute_cap
        common = {
            "productName": {"string": r.name},
            "brand": {"string": "Nvidia"},
            "architecture": {"string": architecture(r.name, cc)},
            "cudaComputeCapability": {"version": semver(cc)},
            "driverVersion": {"version": semver(driver)},
            "cudaDriverVersion": {"version": semver(cuda)},
            "resource.kubernetes.io/pciBusID": {"string": pci_bus_id(r.pci_bus_id)},
        }
        if r.index in on:   # static MIG: the MIG devices only, not their parent (nvlib.go GetPerGpuAllocatableDevices)
            for d in on[r.index]:
                info = _profile_info(d["profile"], lgip)
                start, size = d.get("start", 0), d.get("size", 1)
                capacity = {k: {"value": str(info[k])} for k in ("multiprocessors", "copyEngines", "decoders",
                                                                 "encoders", "jpegEngines", "ofaEngines")}
                capacity["memory"] = {"value": str(info["memory_mib"] * 1024 * 1024)}
                capacity.update({f"memorySlice{i}": {"value": "1"} for i in range(start, start + size)})
                out.append({"name": mig_device_name(r.index, d["profile"], info["id"], start), "attributes": {
                    "type": {"string": "mig"}, "uuid": {"string": d["uuid"]}, "parentUUID": {"string": r.uuid},
                    "profile": {"string": d["profile"]}, **common}, "capacity": capacity})
            continue
        dev = {"name": f"gpu-{r.index}", "attributes": {
            "type": {"string": "gpu"},
            "uuid": {"string": r.uuid},
            **common,
        }}
        if r.memory_total_mib is not None:
            dev["capacity"] = {"memory": {"value": f"{r.memory_total_mib}Mi"}}
        out.append(dev)
    return out


def resource_slice(node: NodeSpec, node_uid: str, generation: int = 1, mig_state: dict | None = None,
                   lgip_text: str = "") -> dict:
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"generateName": f"{node.name}-{DRIVER}-",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid,
                                          "controller": True}]},
        "spec": {"driver": DRIVER, "nodeName": node.name,
                 "pool": {"name": node.name, "generation": generation, "resourceSliceCount": 1},
                 "devices": devices(node, mig_state, lgip_text)},
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
        m = re.match(r"gpu-([0-9]+)(-mig-)?", str(r.get("device", "")))
        if r.get("driver") == DRIVER and m:   # a MIG device: its parent's node (plus its MIG caps, not listed here)
            out += [f"/dev/nvidia{m.group(1)}", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    return out


def ls_output(devices: list[str]) -> str:
    """`ls -1 /dev/nvidia*` as a shell prints it (GNU coreutils' message when the glob matches nothing)."""
    if not devices:
        return "ls: cannot access '/dev/nvidia*': No such file or directory\n"
    return "".join(f"{d}\n" for d in devices)


# ----------------------------------------------------------------- what the twin's plugin writes, and as whom
PLUGIN_SERVICE_ACCOUNT = "nvidia-dra-driver-kubeletplugin"   # the DaemonSet's serviceAccountName
# The audience of the lab apiserver's service-account tokens (its --service-account-issuer, the default audience)
TOKEN_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def node_slice(node: NodeSpec, node_uid: str, host_root) -> dict:
    """The node's ResourceSlice from its host: the MIG partitions (lab/twin/mig.py) and `nvidia-smi mig -lgip`."""

    state = mig.read(host_root) if node.mig is not None else {}
    lgip = ""
    if mig.enabled(state):
        rc, lgip = nvidia_smi.mig_profiles(capture_dir(node), gpus_for(node))
        lgip = lgip if rc == 0 else ""
    return resource_slice(node, node_uid, mig_state=state, lgip_text=lgip)


def as_plugin(api_client, core, pod: dict):
    """A CustomObjectsApi that acts as the plugin pod's ServiceAccount, as the real plugin's writes do: a token
    bound to the pod (TokenRequest), so the apiserver adds the pod's node name to the user's extra and the driver's
    ValidatingAdmissionPolicy resourceslices-policy-nvidia-dra-driver lets it write only that node's slices."""
    import copy

    from kubernetes import client

    md = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName") or PLUGIN_SERVICE_ACCOUNT
    token = core.create_namespaced_service_account_token(sa, md["namespace"], {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [TOKEN_AUDIENCE], "expirationSeconds": 3600,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]}}})
    cfg = copy.copy(api_client.configuration)
    cfg.cert_file = cfg.key_file = None
    cfg.api_key = {"authorization": f"Bearer {token.status.token}"}
    cfg.api_key_prefix = {}
    return client.CustomObjectsApi(client.ApiClient(cfg))
