"""Pure parser for ``lspci -n -D -d 10de:`` (NVIDIA's PCI devices on the bus; no I/O).

Each line is ``<domain:bus:device.function> <class>: <vendor>:<device>`` with an optional `` (rev xx)``, for
example ``0000:00:06.0 0302: 10de:2335 (rev a1)``. GPUs are the display controllers: class 0300 (VGA) and 0302
(3D controller); NVIDIA's other functions (HD audio 0403, NVSwitch bridges 0680, USB 0c03) are not GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GPU_CLASSES", "PciDevice", "PciParseError", "gpus_on_bus", "parse_lspci"]

GPU_CLASSES = frozenset({"0300", "0302"})
NVIDIA = "10de"


class PciParseError(ValueError):
    pass


@dataclass(frozen=True)
class PciDevice:
    address: str      # 0000:00:06.0
    pci_class: str    # 0302
    vendor: str       # 10de
    device: str       # 2335


def parse_lspci(text: str) -> list[PciDevice]:
    out: list[PciDevice] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        words = line.split()
        if len(words) < 3 or not words[1].endswith(":") or ":" not in words[2]:
            raise PciParseError(f"line {n} is not `lspci -n -D` output (slot class: vendor:device): {line[:120]!r}")
        vendor, _, device = words[2].partition(":")
        out.append(PciDevice(words[0].lower(), words[1][:-1].lower()[:4], vendor.lower(), device.lower()))
    return out


def gpus_on_bus(devices: list[PciDevice]) -> list[PciDevice]:
    return [d for d in devices if d.vendor == NVIDIA and d.pci_class in GPU_CLASSES]
