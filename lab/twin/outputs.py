"""Recorded outputs the twin's workloads print (from gpu-stack.md: the CUDA sample's real text)."""

VECTORADD_PASSED = """[Vector addition of 50000 elements]
Copy input data from the host memory to the CUDA device
CUDA kernel launch with 196 blocks of 256 threads
Copy output data from the CUDA device to the host memory
Test PASSED
Done
"""

VECTORADD_FAILED = """[Vector addition of 50000 elements]
Failed to allocate device vector A (error code CUDA-capable device(s) is/are busy or unavailable)!
"""

DEVICE_PLUGIN_START = "Starting NVIDIA Device Plugin\nLoading configuration\n"
DRIVER_IN_USE = "Could not unload NVIDIA driver kernel modules, driver is in use"

# Kernel log (journalctl -k / dmesg) of a lab GPU host. The boot lines are the real H200's (shared/fixtures/
# nvidia-smi/h200/health/dmesg-nvrm-xid.txt); the Xid 79 lines are those of a real GPU that fell off the bus
# (NVIDIA/open-gpu-kernel-modules#1151, tests/unit/data/health/xid-79-journal-rtx5080.txt) with the lab GPU's
# bus id and UUID: "{bus}" is the PCI address as the driver prints it (0000:00:06), "{uuid}" the GPU's UUID.
KERNEL_BOOT = (
    (0.0, "Linux version 6.18.44-fc-v973-gpu (builder@sandboxing) (gcc (GCC) 15.3.0, GNU ld (GNU Binutils) 2.46) "
          "#1 SMP PREEMPT_DYNAMIC @0"),
    (0.531758, "NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)  "),
)
XID_79 = (
    "NVRM: GPU at PCI:{bus}: {uuid}",
    "NVRM: Xid (PCI:{bus}): 79, GPU has fallen off the bus.",
    "NVRM: GPU {bus}.0: GPU has fallen off the bus.",
)
