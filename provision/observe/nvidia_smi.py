"""Pure parsers for nvidia-smi output (no I/O).

The suite runs one query form, :func:`query_argv`, and parses it with :func:`parse_query_csv`. The parser also
accepts the other shapes nvidia-smi prints for ``--query-gpu`` (``csv`` with a header and units, ``noheader``,
``nounits``) so that captures taken by hand can be fed to it as well. ``nvidia-smi -L`` is parsed by
:func:`parse_list` / :func:`parse_mig_devices`; a failed run is classified by :func:`classify_failure`.

Facts used here (see /work/shared/reference/gpu-stack.md, section nvidia-smi): the separator is ", ", names
contain spaces, unsupported fields print ``[N/A]`` (``[Not Supported]`` and other bracketed states exist too),
``nounits`` drops the ``MiB`` suffix, driver versions have two or three parts, exit 9 means the driver is not
loaded and exit 14 is an infoROM warning.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from packaging.version import InvalidVersion, Version

__all__ = [
    "DRIVER_NOT_LOADED_MESSAGE",
    "QUERY_FIELDS",
    "DriverVersion",
    "DriverVersionError",
    "Gpu",
    "ListedGpu",
    "MigDevice",
    "NvidiaSmiParseError",
    "SmiFinding",
    "classify_failure",
    "compute_capability_below",
    "driver_at_least",
    "lowest_compute_capability",
    "parse_driver_version",
    "parse_list",
    "parse_mig_devices",
    "parse_query_csv",
    "query_argv",
]

QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "uuid",
    "driver_version",
    "memory.total",
    "mig.mode.current",
    "compute_cap",
    "pci.bus_id",
)

# nvidia-smi accepts several spellings for a field; the header always prints the canonical one. Map every
# spelling we care about onto the Gpu attribute it fills.
_FIELD_TO_ATTR: dict[str, str] = {
    "index": "index",
    "name": "name",
    "gpu_name": "name",
    "uuid": "uuid",
    "gpu_uuid": "uuid",
    "driver_version": "driver_version",
    "memory.total": "memory_total_mib",
    "mig.mode.current": "mig_mode",
    "compute_cap": "compute_cap",
    "pci.bus_id": "pci_bus_id",
    "gpu_bus_id": "pci_bus_id",
}

# Values nvidia-smi prints instead of a value. Every state it prints in square brackets ("[N/A]",
# "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]", "[GPU requires reset]", ...) is treated
# as "no value"; the bare forms below appear in older drivers and in hand-edited captures.
_NO_VALUE = frozenset({"n/a", "not supported", "unknown error", "insufficient permissions"})

_HEADER_CELL = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
_UNIT_SUFFIX = re.compile(r"\s*\[[^\]]*\]\s*$")
_MEMORY_VALUE = re.compile(r"([0-9]+)(?:\s*MiB)?")
_DIGITS = re.compile(r"[0-9]+")


class NvidiaSmiParseError(ValueError):
    """nvidia-smi output that cannot be understood; the message names the line."""


class DriverVersionError(ValueError):
    """A driver version string that is not N.N[.N[.N]]."""


@dataclass(frozen=True)
class Gpu:
    """One row of ``nvidia-smi --query-gpu``; None where nvidia-smi printed [N/A] / [Not Supported]."""

    index: int
    name: str
    uuid: str
    driver_version: str | None = None
    memory_total_mib: int | None = None
    mig_mode: str | None = None
    compute_cap: str | None = None
    pci_bus_id: str | None = None


class ListedGpu(NamedTuple):
    """A ``GPU N: <name> (UUID: GPU-...)`` line of ``nvidia-smi -L``; unpacks as (index, name, uuid)."""

    index: int
    name: str
    uuid: str


@dataclass(frozen=True)
class MigDevice:
    """A ``MIG <profile> Device N: (UUID: MIG-...)`` line of ``nvidia-smi -L``, under GPU ``gpu_index``."""

    gpu_index: int
    profile: str
    device_index: int
    uuid: str


@dataclass(frozen=True)
class SmiFinding:
    """Why an nvidia-smi run did not give a usable GPU list, for a cluster operator.

    kind: no-devices | driver-not-loaded | version-mismatch | inforom-warning | not-installed | failed.
    output_usable: True only for warnings (inforom-warning), where stdout still holds the query result.
    """

    kind: str
    message: str
    remediation: str
    exit_code: int
    output_usable: bool = False


def query_argv() -> list[str]:
    """The one nvidia-smi query the suite runs (parse its stdout with :func:`parse_query_csv`)."""
    return ["nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]


# --------------------------------------------------------------------------------------------------------------
# --query-gpu CSV


def _is_no_value(cell: str) -> bool:
    return (cell.startswith("[") and cell.endswith("]")) or cell.lower() in _NO_VALUE


def _header_names(cells: Sequence[str]) -> list[str] | None:
    """Field names if ``cells`` is a header row (lowercase dotted identifiers, optional " [unit]")."""
    names = [_UNIT_SUFFIX.sub("", cell).strip() for cell in cells]
    if names and all(_HEADER_CELL.fullmatch(name) for name in names):
        return names
    return None


def _split_row(line: str, lineno: int) -> list[str]:
    try:
        rows = list(csv.reader([line], skipinitialspace=True))
    except csv.Error as exc:
        raise NvidiaSmiParseError(f"line {lineno}: not CSV ({exc}): {line!r}") from exc
    return [cell.strip() for cell in rows[0]] if rows else []


def _row_to_gpu(names: Sequence[str], cells: Sequence[str], lineno: int, line: str, position: int) -> Gpu:
    values: dict[str, str | None] = {}
    for field, cell in zip(names, cells, strict=True):
        attr = _FIELD_TO_ATTR.get(field)
        if attr is not None:
            values[attr] = None if _is_no_value(cell) else cell

    def fail(what: str) -> NvidiaSmiParseError:
        return NvidiaSmiParseError(f"line {lineno}: {what}: {line!r}")

    raw_index = values["index"] if "index" in values else str(position)
    if raw_index is None or not _DIGITS.fullmatch(raw_index):
        raise fail(f"GPU index {raw_index!r} is not a non-negative integer")
    name = values.get("name")
    uuid = values.get("uuid")
    if not name:
        raise fail("GPU name is missing")
    if not uuid:
        raise fail("GPU UUID is missing")

    memory: int | None = None
    raw_memory = values.get("memory_total_mib")
    if raw_memory is not None:
        match = _MEMORY_VALUE.fullmatch(raw_memory)
        if match is None:
            raise fail(f"memory.total {raw_memory!r} is not '<integer>' or '<integer> MiB'")
        memory = int(match.group(1))

    return Gpu(
        index=int(raw_index),
        name=name,
        uuid=uuid,
        driver_version=values.get("driver_version"),
        memory_total_mib=memory,
        mig_mode=values.get("mig_mode"),
        compute_cap=values.get("compute_cap"),
        pci_bus_id=values.get("pci_bus_id"),
    )


def parse_query_csv(text: str, fields: Sequence[str] = QUERY_FIELDS) -> list[Gpu]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` output into one Gpu per row.

    If the first non-blank row is a header (lowercase field names, units in brackets such as
    ``memory.total [MiB]``) its names are used and ``fields`` is ignored; otherwise ``fields`` names the columns.
    The ``name`` and ``uuid`` columns are required; without an ``index`` column the row position is used
    (nvidia-smi prints GPUs in index order). Fields other than those of :class:`Gpu` are accepted and ignored.
    Blank lines are skipped. Raises NvidiaSmiParseError naming the line for a row that does not fit.
    """
    names: list[str] | None = None
    gpus: list[Gpu] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = _split_row(line, lineno)
        if names is None:
            header = _header_names(cells)
            names = header if header is not None else list(fields)
            for required in ("name", "uuid"):
                if not any(_FIELD_TO_ATTR.get(field) == required for field in names):
                    raise NvidiaSmiParseError(
                        f"line {lineno}: the query has no {required} column (fields: {', '.join(names)})"
                    )
            if header is not None:
                continue
        if len(cells) != len(names):
            raise NvidiaSmiParseError(
                f"line {lineno}: expected {len(names)} fields ({', '.join(names)}), got {len(cells)}: {line!r}"
            )
        gpus.append(_row_to_gpu(names, cells, lineno, line, position=len(gpus)))
    return gpus


# --------------------------------------------------------------------------------------------------------------
# nvidia-smi -L

_LIST_GPU = re.compile(r"GPU ([0-9]+): (.+?) \(UUID: (GPU-[^)\s]+)\)")
_LIST_MIG = re.compile(r"\s+MIG (\S+)\s+Device\s+([0-9]+): \(UUID: (MIG-[^)\s]+)\)")


def _parse_listing(text: str) -> tuple[list[ListedGpu], list[MigDevice]]:
    gpus: list[ListedGpu] = []
    migs: list[MigDevice] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip():
            continue
        gpu = _LIST_GPU.fullmatch(line)
        if gpu is not None:
            gpus.append(ListedGpu(int(gpu.group(1)), gpu.group(2), gpu.group(3)))
            continue
        mig = _LIST_MIG.fullmatch(line)
        if mig is not None:
            if not gpus:
                raise NvidiaSmiParseError(f"line {lineno}: MIG device before any GPU line: {raw!r}")
            migs.append(MigDevice(gpus[-1].index, mig.group(1), int(mig.group(2)), mig.group(3)))
            continue
        raise NvidiaSmiParseError(f"line {lineno}: not a 'GPU N: ...' or 'MIG ... Device N: ...' line: {raw!r}")
    return gpus, migs


def parse_list(text: str) -> list[ListedGpu]:
    """Physical GPUs of ``nvidia-smi -L`` as (index, name, uuid); MIG device lines are not GPUs here.

    Use :func:`parse_mig_devices` for the MIG devices. Raises NvidiaSmiParseError on an unknown line.
    """
    return _parse_listing(text)[0]


def parse_mig_devices(text: str) -> list[MigDevice]:
    """MIG devices of ``nvidia-smi -L`` (indented lines under their GPU), both the R450 and the current layout."""
    return _parse_listing(text)[1]


# --------------------------------------------------------------------------------------------------------------
# versions

_DRIVER_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+){0,3}")

# What parse_driver_version returns: a packaging Version (ordered; .major is the driver branch).
DriverVersion = Version


def parse_driver_version(text: str) -> DriverVersion:
    """``"580.159.04"`` / ``"595.84"`` -> a comparable packaging Version (``.major`` is the driver branch).

    Leading zeros are not significant (``580.159.04 == 580.159.4``), as for the driver itself.
    """
    candidate = text.strip()
    if not _DRIVER_VERSION.fullmatch(candidate):
        raise DriverVersionError(f"not an NVIDIA driver version (expected e.g. 580.159.04 or 595.84): {text!r}")
    try:
        return Version(candidate)
    except InvalidVersion as exc:  # pragma: no cover - the regex admits only valid versions
        raise DriverVersionError(f"not an NVIDIA driver version: {text!r}") from exc


def driver_at_least(found: str, minimum: str | int) -> bool:
    """True if driver ``found`` is at least ``minimum``: an int compares the major (branch) only, a string the
    whole version (``"580"`` == ``"580.0.0"``)."""
    version = parse_driver_version(found)
    if isinstance(minimum, bool):
        raise TypeError("minimum must be a version string or a major version int, not a bool")
    if isinstance(minimum, int):
        return version.major >= minimum
    return version >= parse_driver_version(minimum)


def compute_capability_below(gpus: Iterable[Gpu], threshold: str = "7.0") -> bool:
    """True if any GPU reports a compute capability below ``threshold`` (e.g. "6.1" < "7.0").

    GPUs whose compute capability is unknown (None) do not count; an unparsable value raises
    NvidiaSmiParseError.
    """
    limit = Version(threshold)
    for gpu in gpus:
        if gpu.compute_cap is None:
            continue
        try:
            cap = Version(gpu.compute_cap)
        except InvalidVersion as exc:
            raise NvidiaSmiParseError(f"GPU {gpu.index}: compute capability {gpu.compute_cap!r} is not N.N") from exc
        if cap < limit:
            return True
    return False


def lowest_compute_capability(gpus: Iterable[Gpu]) -> str | None:
    """The lowest compute capability the GPUs report, in version order ("9.0" < "10.0"); None when none does."""
    caps = [g.compute_cap for g in gpus if g.compute_cap is not None]
    return min(caps, key=Version) if caps else None


# --------------------------------------------------------------------------------------------------------------
# failures

DRIVER_NOT_LOADED_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)

# Return codes documented in nvidia-smi(1), used to explain a generic failure.
_EXIT_MEANINGS: dict[int, str] = {
    2: "a supplied argument or flag is invalid",
    3: "the requested operation is not available on the target device",
    4: "the current user does not have permission to access this device or perform this operation",
    6: "a query to find an object was unsuccessful",
    8: "a device's external power cables are not properly attached",
    9: "the NVIDIA driver is not loaded",
    10: "the NVIDIA kernel detected an interrupt issue with a GPU",
    12: "the NVML shared library could not be found or loaded",
    13: "the local version of NVML does not implement this function",
    14: "the infoROM is corrupted",
    15: "the GPU has fallen off the bus or has otherwise become inaccessible",
    18: "the NVIDIA kernel module and the NVML library are of different versions (NVML_ERROR_LIB_RM_VERSION_MISMATCH)",
    255: "other error or internal driver error",
}


_NVML_LIBRARY_VERSION = re.compile(r"NVML library version:\s*([0-9][0-9.]*[0-9])")
# The kernel's side (dmesg), when a capture carries it: "NVRM: API mismatch: the client has the version
# 535.54.03, but NVRM: this kernel module has the version 530.30.02." (also "the client 'x' (pid n) has ...").
_NVRM_API_MISMATCH = re.compile(
    r"has the version\s+([0-9][0-9.]*[0-9]),?\s*but(?:\s|#012)*(?:NVRM:\s*)?this kernel module has(?:\s|#012)*"
    r"(?:NVRM:\s*)?the version\s+([0-9][0-9.]*[0-9])",
    re.IGNORECASE,
)


def _version_mismatch(exit_code: int, output: str) -> SmiFinding:
    """Exit 18: "Failed to initialize NVML: Driver/library version mismatch" (R550+ add "NVML library version:
    X"). The user-space library (libnvidia-ml, nvidia-smi) and the loaded kernel module are of different driver
    versions, almost always after a driver package upgrade without a reboot."""
    api = _NVRM_API_MISMATCH.search(output)
    library = _NVML_LIBRARY_VERSION.search(output)
    lib_version = library.group(1) if library else (api.group(1) if api else None)
    kernel_version = api.group(2) if api else None
    versions = []
    if lib_version:
        versions.append(f"user-space NVML library {lib_version}")
    if kernel_version:
        versions.append(f"kernel module {kernel_version}")
    elif lib_version:
        versions.append("kernel module version not printed: `cat /proc/driver/nvidia/version`")
    detail = f" ({', '.join(versions)})" if versions else ""
    return SmiFinding(
        kind="version-mismatch",
        message=(
            f"nvidia-smi cannot initialise NVML (exit {exit_code}): Driver/library version mismatch: the loaded "
            f"NVIDIA kernel module and the user-space driver library are of different versions{detail}"
        ),
        remediation=(
            "This usually follows a driver upgrade without a reboot (unattended-upgrades can do it). Reboot the node "
            "(drain it first), or reload the modules while no process uses the GPU (stop the GPU Operator's "
            "operands and nvidia-persistenced, then `sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && sudo "
            "modprobe nvidia`); if the versions still differ, reinstall matching driver packages (kernel module and "
            "libraries of one version: `cat /proc/driver/nvidia/version` vs `dpkg -l | grep nvidia`) and pin them."
        ),
        exit_code=exit_code,
    )


def classify_failure(exit_code: int, stdout: str, stderr: str) -> SmiFinding | None:
    """Classify an nvidia-smi run; None when it succeeded and found devices.

    Kinds: no-devices (ran, but "No devices were found"), driver-not-loaded (exit 9 or the driver message),
    version-mismatch (exit 18, "Driver/library version mismatch"),
    inforom-warning (exit 14: a warning, ``output_usable`` is True), not-installed (exit 127 or "command not
    found"), failed (any other non-zero exit).
    """
    output = f"{stdout}\n{stderr}"
    lowered = output.lower()

    missing = "command not found" in lowered or (exit_code != 0 and "executable file not found" in lowered)
    if exit_code == 127 or missing:
        return SmiFinding(
            kind="not-installed",
            message=f"nvidia-smi is not installed or not on PATH (exit {exit_code})",
            remediation=(
                "Install the NVIDIA driver (it ships nvidia-smi) on this node, or with driver.enabled=true let the "
                "GPU Operator's driver DaemonSet provide it; then re-run the check."
            ),
            exit_code=exit_code,
        )
    if exit_code == 9 or "couldn't communicate with the nvidia driver" in lowered:
        return SmiFinding(
            kind="driver-not-loaded",
            message=f"the NVIDIA driver is not loaded (exit {exit_code}): {DRIVER_NOT_LOADED_MESSAGE}",
            remediation=(
                "Load the driver on the host (`sudo modprobe nvidia`; check `dmesg | grep -i nvrm` for why it failed, "
                "e.g. Secure Boot or a kernel update without matching modules) or reinstall the driver package for "
                "the running kernel, then reboot if needed."
            ),
            exit_code=exit_code,
        )
    if exit_code == 18 or "driver/library version mismatch" in lowered:
        return _version_mismatch(exit_code, output)
    if "no devices were found" in lowered and exit_code in (0, 6):
        return SmiFinding(
            kind="no-devices",
            message=f"nvidia-smi ran but sees no GPU (exit {exit_code}): No devices were found",
            remediation=(
                "Check that the GPU is visible on the PCI bus (`lspci -d 10de:`), that it is passed through to this "
                "machine, and that the installed driver supports it. Read `dmesg | grep -i nvrm`: "
                "'RmInitAdapter failed' or 'rm_init_adapter failed' means the driver could not initialise the GPU "
                "(missing GSP firmware for the driver version, a driver that does not support this GPU, or a GPU "
                "that needs a reset); 'This PCI I/O region assigned to your NVIDIA device is invalid' or a BAR that "
                "failed to map means the firmware did not give the GPU its memory window: enable Above 4G Decoding "
                "(and Resizable BAR / large BAR support where the GPU needs it) in the BIOS/UEFI, or on a VM the "
                "hypervisor's 64-bit MMIO space, then reboot."
            ),
            exit_code=exit_code,
        )
    if exit_code == 14:
        return SmiFinding(
            kind="inforom-warning",
            message="nvidia-smi reported a corrupted infoROM (exit 14); its output is still usable",
            remediation=(
                "The GPU works but its infoROM is corrupted: plan an RMA or an infoROM/firmware update with the "
                "vendor. Run `nvidia-smi -q` to see which GPU reports 'infoROM is corrupted'."
            ),
            exit_code=exit_code,
            output_usable=True,
        )
    if exit_code != 0:
        meaning = _EXIT_MEANINGS.get(exit_code, "unknown error")
        detail = (stderr.strip() or stdout.strip()).splitlines()
        first = f": {detail[0]}" if detail else ""
        return SmiFinding(
            kind="failed",
            message=f"nvidia-smi failed with exit {exit_code} ({meaning}){first}",
            remediation=(
                "Run nvidia-smi by hand on the node and read `dmesg | grep -i -e nvrm -e xid`; exit codes are listed "
                "in nvidia-smi(1)."
            ),
            exit_code=exit_code,
        )
    return None
