"""The lab's pod addresses: a block of its own that the apiserver will proxy to.

The apiserver proxies `pods/proxy` only to global unicast addresses (k8s.io/kubernetes pkg/proxy/util
IsProxyableIP): never to loopback. So the lab's pods get addresses from 198.18.0.0/15 (RFC 2544, reserved for
benchmarking, never routed), made local to this machine by one AnyIP route (`ip route replace local
198.18.0.0/15 dev lo`, as 127.0.0.0/8 is): every address in it can be bound and reached on this machine only,
without an interface per pod. The route is left in place at `lab down`. Each running lab takes one
4096-address block of it, registered under REGISTRY so labs side by side never share a pod IP (one lab's
DCGM exporter would answer for another's pod).

Without root or `ip` (a developer's unprivileged `make demo`), the lab falls back to a loopback block as
before: pods work, the DCGM exporters are reached directly (`--dcgm-access direct`), and `lab status` says why.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

from lab.state import LabPaths

RANGE = ipaddress.ip_network("198.18.0.0/15")
BLOCK_BITS = 12                       # 4094 pod IPs per lab
REGISTRY = Path(os.environ.get("LAB_PODNET_REGISTRY", "/run/gpu-node-conformance/podnet"))
_FILE = "podnet.json"


def _slots() -> int:
    return RANGE.num_addresses >> BLOCK_BITS


def _loopback_base(paths: LabPaths) -> ipaddress.IPv4Address:
    """The fallback: a block of 127.0.0.0/8 picked from the lab's apiserver port, which no other running lab has."""
    ports = json.loads(paths.ports_file.read_text()) if paths.ports_file.exists() else {}
    slot = 1 + int(ports.get("apiserver", 0)) % ((1 << (24 - BLOCK_BITS)) - 1)
    return ipaddress.IPv4Address("127.0.0.0") + (slot << BLOCK_BITS) + 1


def _route(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "route", action, "local", str(RANGE), "dev", "lo"], capture_output=True, text=True,
                          timeout=30)


def _stale(holder: Path) -> bool:
    """A registered block whose lab is gone (its state folder removed, or its apiserver not running)."""
    from lab import processes

    try:
        root = Path(holder.read_text().strip())
    except FileNotFoundError:
        return False
    return not root.is_dir() or processes.running(LabPaths(root=root), "kube-apiserver") is None


def _take_slot(paths: LabPaths) -> int:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        for slot in range(_slots()):
            holder = REGISTRY / str(slot)
            if attempt and _stale(holder):
                holder.unlink(missing_ok=True)
            try:
                fd = os.open(holder, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    if holder.read_text().strip() == str(paths.root):
                        return slot        # this lab's own block (an `up` of a lab that is already up)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(paths.root))
            return slot
    raise RuntimeError(f"all {_slots()} pod address blocks of {RANGE} are held by running labs ({REGISTRY}); "
                       "stop one with `python -m lab down`")


def claim(paths: LabPaths) -> dict:
    """Pick this lab's pod addresses (before the twin starts) and record them in the lab's folder."""
    doc: dict
    why = ("not root" if os.geteuid() != 0 else
           "`ip` (iproute2) not found" if shutil.which("ip") is None else "")
    if not why:
        res = _route("replace")
        why = "" if res.returncode == 0 else f"`ip route replace local {RANGE} dev lo` failed: {res.stderr.strip()}"
    if why:
        doc = {"base": str(_loopback_base(paths)), "proxyable": False,
               "why": f"{why}: pods get loopback addresses, which the apiserver does not proxy to; the lab's DCGM "
                      "exporters are reached directly (--dcgm-access direct)"}
    else:
        slot = _take_slot(paths)
        block = RANGE.network_address + (slot << BLOCK_BITS)
        doc = {"base": str(block + 1), "proxyable": True, "slot": slot,
               "cidr": f"{block}/{32 - BLOCK_BITS}", "route": f"local {RANGE} dev lo"}
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / _FILE).write_text(json.dumps(doc))
    return doc


def load(paths: LabPaths) -> dict | None:
    try:
        return json.loads((paths.root / _FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def release(paths: LabPaths) -> None:
    """At `lab down`: give the block back. The route stays (another lab may be starting; it only makes a range
    that is never routed local to this machine): `ip route del local 198.18.0.0/15 dev lo` removes it."""
    doc = load(paths)
    if not doc or doc.get("slot") is None:
        return
    holder = REGISTRY / str(doc["slot"])
    try:
        if holder.read_text().strip() == str(paths.root):
            holder.unlink()
    except FileNotFoundError:
        pass
