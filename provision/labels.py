"""Label keys and values the suite puts on what it creates: one home for them (no Kubernetes client needed)."""

MANAGED_BY = "app.kubernetes.io/managed-by"   # the key
SUITE = "gpu-node-conformance"                # its value on every object the suite creates

# Node labels of the GPU Operator's stack (GFD, the device plugin, the operator's per-operand switches).
NVIDIA = "nvidia.com/"
GPU_PRODUCT = NVIDIA + "gpu.product"                     # GFD: <model>[-MIG-<profile>][-SHARED]
GPU_REPLICAS = NVIDIA + "gpu.replicas"                   # GFD: replicas per GPU
DEVICE_PLUGIN_CONFIG = NVIDIA + "device-plugin.config"   # the device plugin's config key for the node
DEPLOY_PREFIX = NVIDIA + "gpu.deploy."                   # + operand: "false" keeps the operand off the node


def deploy_label(operand: str) -> str:
    """The operator's switch for one operand on a node, e.g. nvidia.com/gpu.deploy.container-toolkit."""
    return DEPLOY_PREFIX + operand
