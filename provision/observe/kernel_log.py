"""Pure parser for the NVIDIA driver's Xid lines in the kernel log (no I/O).

Lines as the driver prints them (real examples in tests/unit/data/health/SOURCES.md)::

    NVRM: Xid (PCI:0000:2b:00): 79, GPU has fallen off the bus.
    NVRM: Xid (PCI:0000:65:00): 94, pid=12345, Contained: ECC error
    NVRM: Xid (0000:01:00): 3, C 00000005 SC 00000007 M 00001ffc Data ffffffff     (older drivers: no "PCI:")

with the prefix of the tool that printed them: ``journalctl -k -o short-iso`` (``2026-02-14T05:03:41+0000 host
kernel: ``), ``dmesg --time-format iso`` (``2026-12-01T08:04:34,123456+00:00 ``) or plain ``dmesg``
(``[ 5107.644336] ``: seconds since boot, no wall-clock time). The kernel log is free text (there is no
library for it); only the Xid line's fixed shape is matched here.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["XidEvent", "bus_key", "parse_xid_lines"]

_XID = re.compile(r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2})(?:\.\d)?\): "
                  r"(?P<xid>\d+),\s*(?P<rest>.*)$")
# The kernel's own message for a GPU that is gone, with or without an Xid line (NVIDIA/NVSentinel#155): counted as
# Xid 79. Forms: "NVRM: GPU at 0000:01:00.0 has fallen off the bus.", "NVRM: GPU 0000:2b:00.0: GPU has fallen off
# the bus.", and the multi-line "NVRM: The NVIDIA GPU 0000:b3:00.0 / (PCI ID: ...) installed in this system has /
# fallen off the bus and is not responding to commands." (its bus is on the first line).
_OFF_BUS = re.compile(r"NVRM: (?:GPU at |GPU |The NVIDIA GPU )(?:PCI:)?(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:"
                      r"[0-9A-Fa-f]{2})(?:\.\d)?(?P<rest>.*)$")
_ISO = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s")
_UPTIME = re.compile(r"^\[\s*(?P<up>\d+\.\d+)\]\s")


@dataclass(frozen=True)
class XidEvent:
    xid: int
    bus: str                       # as printed: 0000:2b:00
    detail: str                    # the rest of the line (pid, name, the driver's text)
    line: str
    when: dt.datetime | None = None    # wall-clock time when the tool printed one
    uptime_s: float | None = None      # plain dmesg: seconds since boot


def bus_key(bus_id: str) -> tuple[int, int, int] | None:
    """(domain, bus, device) of a PCI address in any of its spellings: 00000000:2B:00.0, 0000:2b:00.0, 0000:2b:00."""
    parts = bus_id.strip().split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    if len(parts) != 3:
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16), int(parts[2].split(".")[0], 16)
    except ValueError:
        return None


def _when(prefix: str) -> tuple[dt.datetime | None, float | None]:
    m = _ISO.match(prefix)
    if m:
        ts = m.group("ts").replace(",", ".")
        if re.search(r"[+-]\d{4}$", ts):
            ts = ts[:-2] + ":" + ts[-2:]
        try:
            when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return None, None
        return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)), None
    m = _UPTIME.match(prefix)
    if m:
        return None, float(m.group("up"))
    return None, None


def parse_xid_lines(text: str) -> list[XidEvent]:
    """Every Xid line of a kernel log excerpt, in order, and the kernel's "fallen off the bus" messages as Xid 79
    (once per GPU, and not where an Xid 79 line of that GPU is there); other lines are ignored."""
    out: list[XidEvent] = []
    off_bus: list[XidEvent] = []
    pending_bus: tuple[str, str] | None = None  # the multi-line form: its first line names the GPU
    for line in text.splitlines():
        idx = line.find("NVRM: Xid (")
        if idx >= 0:
            m = _XID.search(line, idx)
            if m:
                when, up = _when(line[:idx])
                out.append(XidEvent(int(m.group("xid")), m.group("bus"), m.group("rest").strip(), line.rstrip(), when,
                                    up))
            continue
        idx = line.find("NVRM: ")
        if idx < 0:
            continue
        m = _OFF_BUS.search(line, idx)
        if m and "fallen off the bus" in m.group("rest"):
            when, up = _when(line[:idx])
            off_bus.append(XidEvent(79, m.group("bus"), "the kernel: GPU has fallen off the bus", line.rstrip(), when, up))
        elif m and "The NVIDIA GPU" in line:
            pending_bus = (m.group("bus"), line[:idx])
        elif pending_bus and "fallen off the bus" in line:
            when, up = _when(pending_bus[1])
            off_bus.append(XidEvent(79, pending_bus[0], "the kernel: GPU has fallen off the bus", line.rstrip(), when, up))
            pending_bus = None
    seen = {bus_key(e.bus) for e in out if e.xid == 79}
    for e in off_bus:
        if bus_key(e.bus) not in seen:
            seen.add(bus_key(e.bus))
            out.append(e)
    return out
