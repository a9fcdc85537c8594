"""CUDA facts for the workload checks: the driver a CUDA image needs, and what a CUDA error in a log means
(no I/O).

Driver minimum (NVIDIA, "CUDA Compatibility", Minor Version Compatibility, Table 1 "CUDA Toolkit 11.x, 12.x,
and 13.x Driver Version Ranges", https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html):
an application built with any CUDA 13.x runs on a driver >= 580, 12.x on >= 525, 11.x on >= 450 (450.80.02),
with a limited feature set below the driver its toolkit shipped with. The driver each toolkit release shipped
with (CUDA Toolkit Release Notes, Table 3 "CUDA Toolkit and Corresponding Driver Versions", Linux x86_64,
https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/) is in TOOLKIT_DRIVERS: it is what the full feature
set needs, and below the major minimum the CUDA runtime fails with cudaErrorInsufficientDriver ("CUDA driver
version is insufficient for CUDA runtime version") unless the image carries the forward-compatibility
libraries (cuda-compat, data center GPUs only).

CUDA errors: the runtime's cudaGetErrorString texts as the samples and user programs print them
(``Failed to allocate device vector A (error code <text>)!``); newer CUDA releases word some of them
differently ("CUDA-capable device(s) is/are busy or unavailable" for the older "all CUDA-capable devices are
busy or unavailable"), both are recognised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MINOR_VERSION_MINIMUM",
    "TOOLKIT_DRIVERS",
    "CudaError",
    "DriverNeed",
    "classify_log",
    "driver_need",
    "image_cuda_version",
]

# CUDA major -> minimum driver major for minor version compatibility (Table 1 of the CUDA Compatibility guide).
MINOR_VERSION_MINIMUM: dict[int, int] = {11: 450, 12: 525, 13: 580}
# CUDA major.minor -> the Linux x86_64 driver its GA toolkit shipped with (Release Notes, Table 3).
TOOLKIT_DRIVERS: dict[str, str] = {
    "11.0": "450.36.06", "11.1": "455.23", "11.2": "460.27.03", "11.3": "465.19.01", "11.4": "470.42.01",
    "11.5": "495.29.05", "11.6": "510.39.01", "11.7": "515.43.04", "11.8": "520.61.05",
    "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03", "12.3": "545.23.06", "12.4": "550.54.14",
    "12.5": "555.42.02", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03",
    "13.0": "580.65.06",
}
_COMPAT_DOC = "docs.nvidia.com/deploy/cuda-compatibility, minor version compatibility"

# "...:vectoradd-cuda12.5.0-ubuntu22.04", "nvidia/cuda:12.5.0-base-ubuntu22.04", "...:cuda-11.8", "...-cuda12.1"
_CUDA_IN_TAG = re.compile(r"(?:^|[^0-9a-z])cuda[-_]?([0-9]+)\.([0-9]+)", re.IGNORECASE)
_LEADING_VERSION = re.compile(r"^([0-9]+)\.([0-9]+)(?:\.[0-9]+)?(?:$|-)")


def image_cuda_version(image: str) -> str | None:
    """The CUDA ``major.minor`` an image's tag names ("cuda12.5.0" in the tag, or an nvidia/cuda tag that starts
    with the version); None when the tag does not say."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not tag:
        return None
    match = _CUDA_IN_TAG.search(tag)
    if match is None and name.rsplit("/", 1)[-1] == "cuda":
        match = _LEADING_VERSION.match(tag)
    return f"{int(match.group(1))}.{int(match.group(2))}" if match else None


@dataclass(frozen=True)
class DriverNeed:
    """What the driver must be for a CUDA version: ``minimum`` (driver major, minor version compatibility) and
    ``toolkit_driver`` (the driver the toolkit shipped with, None when not in the table)."""

    cuda: str
    minimum: int
    toolkit_driver: str | None

    def describe(self) -> str:
        full = (f"; its toolkit shipped with {self.toolkit_driver}, which the full CUDA {self.cuda} feature set "
                "needs") if self.toolkit_driver else ""
        return f"CUDA {self.cuda} needs driver >= {self.minimum} ({_COMPAT_DOC}{full})"


def driver_need(cuda: str | None) -> DriverNeed | None:
    """The DriverNeed for a CUDA ``major.minor``; None when unknown (no version, or a major not in the table)."""
    if not cuda:
        return None
    major = int(cuda.split(".")[0])
    if major not in MINOR_VERSION_MINIMUM:
        return None
    return DriverNeed(cuda, MINOR_VERSION_MINIMUM[major], TOOLKIT_DRIVERS.get(cuda))


@dataclass(frozen=True)
class CudaError:
    """A CUDA error found in a workload log: ``kind`` (insufficient-driver | devices-busy | no-device |
    compat-unsupported | driver-mismatch), the log ``line`` that says it, and the ``fix``."""

    kind: str
    line: str
    fix: str


_ERRORS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("insufficient-driver", re.compile(r"CUDA driver version is insufficient for CUDA runtime version", re.I)),
    ("devices-busy", re.compile(r"(?:all CUDA-capable devices are|CUDA-capable device\(s\) is/are) busy or "
                                r"unavailable", re.I)),
    ("no-device", re.compile(r"no CUDA-capable device is detected", re.I)),
    ("compat-unsupported", re.compile(r"forward compatibility was attempted on non supported HW", re.I)),
    ("driver-mismatch", re.compile(r"system has unsupported display driver / cuda driver combination", re.I)),
)


def _fix(kind: str, runtime_class: str | None, cuda: str | None, driver: str | None) -> str:
    need = driver_need(cuda)
    if kind == "insufficient-driver":
        runtime = (f"the pod ran without the NVIDIA runtime (without it the container has no libcuda and the CUDA "
                   f"runtime reports exactly this: check runtimeClassName {runtime_class} on the pod, RuntimeClass "
                   f"{runtime_class} and containerd's {runtime_class} runtime)" if runtime_class else
                   "libcuda.so of the driver is missing from the host's library path (ldconfig -p | grep libcuda)")
        pair = f"host driver {driver or '(unknown: run nvidia-smi)'}, image CUDA {cuda or '(unknown from the tag)'}"
        if need is None:
            return f"either {runtime}, or the host driver is older than the image's CUDA ({pair})"
        older = driver is not None and int(driver.split(".")[0]) < need.minimum
        verdict = ("the driver is too old: upgrade it, or use an image built for an older CUDA" if older else
                   "the driver is new enough, so look at the runtime" if driver else "compare the two")
        return f"either {runtime}, or the host driver is older than the image's CUDA: {pair}; {need.describe()}: {verdict}"
    if kind == "devices-busy":
        return ("the GPU refuses a new CUDA context: its compute mode is exclusive (nvidia-smi shows 'E. Process' "
                "or 'E. Thread' under Compute M.; `nvidia-smi -q -d COMPUTE`; set `nvidia-smi -i <gpu> -c DEFAULT` "
                "for time-slicing) or another process holds it (nvidia-smi's process list, a MIG/MPS setup, a GPU "
                "in a bad state after an Xid: `dmesg | grep -i xid`)")
    if kind == "no-device" and not runtime_class:
        return ("CUDA sees no GPU on the host: check CUDA_VISIBLE_DEVICES, that /dev/nvidia* exist and are readable, "
                "and `dmesg | grep -i nvrm`")
    if kind == "no-device":
        return (f"no GPU was injected into the container: check that the pod requests nvidia.com/gpu and runs with "
                f"runtimeClassName {runtime_class} (RuntimeClass {runtime_class}, containerd's {runtime_class} "
                "runtime), that the device plugin allocated a device (NVIDIA_VISIBLE_DEVICES is not void in the "
                "container) and that /dev/nvidia* exist on the host")
    if kind == "compat-unsupported":
        return ("the image's CUDA forward-compatibility libraries (cuda-compat) run only on data center GPUs: use an "
                "image whose CUDA the host driver supports, or upgrade the driver")
    return ("the container's libcuda does not match the host's kernel module: the NVIDIA runtime mounts the host's "
            "driver libraries; check that the pod runs with the NVIDIA runtime and that the host has no "
            "driver/library version mismatch (nvidia-smi on the host)")


def classify_log(log: str, runtime_class: str | None = "nvidia", cuda: str | None = None,
                 driver: str | None = None) -> CudaError | None:
    """The first CUDA error a workload log names, with the fix for that error (None when the log has none).
    ``runtime_class``: the pod's RuntimeClass (None: a program run on the host itself); ``cuda``: the image's
    CUDA version (:func:`image_cuda_version`); ``driver``: the host's driver version."""
    for line in log.splitlines():
        for kind, pattern in _ERRORS:
            if pattern.search(line):
                return CudaError(kind, line.strip(), _fix(kind, runtime_class, cuda, driver))
    return None
