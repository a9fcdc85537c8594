"""What the chart's node-feature-discovery worker reports for a lab host: the labels NFD's master then puts
on the node (feature sources kernel, system, cpu and pci, with the chart's pci whitelist and
deviceLabelFields [vendor]). The real operator reads system-os_release.ID / VERSION_ID and kernel-version.full
and selects GPU nodes by pci-10de.present; names and value forms as NFD v0.17/v0.18 writes them."""

from __future__ import annotations

from lab.spec import NodeSpec

PREFIX = "feature.node.kubernetes.io/"
NVIDIA_PCI = PREFIX + "pci-10de.present"
CPU_VENDOR = {"amd64": "Intel", "arm64": "ARM"}


def labels(node: NodeSpec) -> dict[str, str]:
    kernel = node.kernel.split("-", 1)[0].split(".")
    version = node.os_version.split(".")
    out = {
        PREFIX + "kernel-version.full": node.kernel,
        PREFIX + "kernel-version.major": kernel[0],
        PREFIX + "kernel-version.minor": kernel[1] if len(kernel) > 1 else "0",
        PREFIX + "kernel-version.revision": kernel[2] if len(kernel) > 2 else "0",
        PREFIX + "system-os_release.ID": node.os_id,
        PREFIX + "system-os_release.VERSION_ID": node.os_version,
        PREFIX + "system-os_release.VERSION_ID.major": version[0],
        PREFIX + "system-os_release.VERSION_ID.minor": version[1] if len(version) > 1 else "0",
        PREFIX + "cpu-model.vendor_id": CPU_VENDOR.get(node.arch, "Intel"),
    }
    if node.is_gpu:
        out[NVIDIA_PCI] = "true"
    return out
