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
    """Every Xid line of a kernel log excerpt, in order; other lines are ignored."""
    out: list[XidEvent] = []
    for line in text.splitlines():
        idx = line.find("NVRM: Xid (")
        if idx < 0:
            continue
        m = _XID.search(line, idx)
        if not m:
            continue
        when, up = _when(line[:idx])
        out.append(XidEvent(int(m.group("xid")), m.group("bus"), m.group("rest").strip(), line.rstrip(), when, up))
    return out
