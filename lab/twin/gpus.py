"""The GPUs a lab node has, as nvidia-smi reports them.

Source: the real H200 capture (lab.spec.H200_CAPTURE/smi-query.csv), or the node's own ``nvidia_smi`` folder
(same file names as the H200 capture). Adapted only where the spec asks for something else:

* a node with the capture's GPU count, product, driver, memory and compute capability yields exactly the
  captured rows;
* otherwise every value of the capture is kept and only count / product / driver / memory / compute_cap change.
  GPUs beyond the capture's rows are copies of row 0 with the next index. A GPU whose identity changed (another
  product, memory size or compute capability) or that was added gets a UUID derived from the node name and the
  index (uuid5, printed GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx); added GPUs get distinct PCI bus ids.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from lab.spec import H200_CAPTURE, Fault, NodeSpec

__all__ = ["QUERY_FILE", "GpuRecord", "capture_dir", "captured", "gpus_for", "is_unadapted", "lspci_lines", "twin_uuid"]

QUERY_FILE = "smi-query.csv"
UUID_NAMESPACE = uuid.UUID("6f1d4c2e-8a8b-4f5e-9a57-6c61622d7477")  # fixed: "lab-twin" GPU UUIDs
_NA = re.compile(r"^\[.*\]$|^N/A$", re.IGNORECASE)


@dataclass(frozen=True)
class GpuRecord:
    index: int
    name: str
    uuid: str
    driver_version: str
    memory_total_mib: int | None        # None: unified memory (GB10), nvidia-smi prints [N/A]
    memory_used_mib: int | None
    mig_mode: str | None
    pci_bus_id: str
    compute_cap: str | None
    persistence_mode: str | None
    temperature: int | None
    power_draw_w: float | None
    utilization: int | None


def capture_dir(node: NodeSpec) -> Path:
    return node.nvidia_smi or H200_CAPTURE


def _value(cell: str) -> str | None:
    cell = cell.strip()
    return None if _NA.match(cell) else cell


def _number(cell: str) -> str | None:
    v = _value(cell)
    return None if v is None else v.split()[0]


def captured(folder: Path | None = None) -> list[GpuRecord]:
    """The rows of ``<folder>/smi-query.csv`` (csv with header, units in the values) as records."""
    path = (folder or H200_CAPTURE) / QUERY_FILE
    with path.open(newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    header = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in rows[0]]
    out: list[GpuRecord] = []
    for row in rows[1:]:
        if not row:
            continue
        cells = dict(zip(header, row, strict=False))

        def get(field: str, cells: dict[str, str] = cells) -> str:
            return cells.get(field, "[N/A]")

        mem_total, mem_used = _number(get("memory.total")), _number(get("memory.used"))
        temp, power, util = _number(get("temperature.gpu")), _number(get("power.draw")), _number(get("utilization.gpu"))
        out.append(GpuRecord(
            index=int(get("index")),
            name=get("name").strip(),
            uuid=get("uuid").strip(),
            driver_version=get("driver_version").strip(),
            memory_total_mib=int(mem_total) if mem_total else None,
            memory_used_mib=int(mem_used) if mem_used else None,
            mig_mode=_value(get("mig.mode.current")),
            pci_bus_id=get("pci.bus_id").strip(),
            compute_cap=_value(get("compute_cap")),
            persistence_mode=_value(get("persistence_mode")),
            temperature=int(temp) if temp else None,
            power_draw_w=float(power) if power else None,
            utilization=int(util) if util else None,
        ))
    if not out:
        raise ValueError(f"{path} has no GPU rows")
    return out


def twin_uuid(node_name: str, index: int) -> str:
    u = uuid.uuid5(UUID_NAMESPACE, f"{node_name}/gpu/{index}")
    return f"GPU-{u}"


def _bus_id(template: str, index: int, taken: set[str]) -> str:
    """A PCI bus id like ``template`` with the device number moved on until it is free."""
    m = re.match(r"^([0-9A-Fa-f]+):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.(\d)$", template)
    if not m:
        candidate = f"00000000:{index:02X}:00.0"
    else:
        domain, bus, dev, fn = m.groups()
        dev_n = int(dev, 16) + index
        candidate = f"{domain}:{bus}:{dev_n % 256:02X}.{fn}"
    n = index
    while candidate in taken:
        n += 1
        candidate = f"00000000:{(n % 255) + 1:02X}:00.0"
    return candidate


def gpus_for(node: NodeSpec) -> list[GpuRecord]:
    """The node's GPUs in index order ([] for a node without GPUs)."""
    if node.gpus <= 0:
        return []
    base = captured(node.nvidia_smi)
    out: list[GpuRecord] = []
    taken = {r.pci_bus_id for r in base[: node.gpus]}
    for i in range(node.gpus):
        src = base[i] if i < len(base) else base[0]
        added = i >= len(base)
        changed = (
            src.name != node.product
            or src.memory_total_mib != node.memory_mib
            or (src.compute_cap or "") != node.compute_cap
        )
        rec = dataclasses.replace(
            src,
            index=i,
            name=node.product,
            driver_version=node.driver,
            memory_total_mib=node.memory_mib,
            memory_used_mib=None if node.memory_mib is None else (src.memory_used_mib or 0),
            # unified memory (GB10) comes without MIG: nvidia-smi prints N/A for MIG M.
            mig_mode=None if node.memory_mib is None else src.mig_mode,
            compute_cap=node.compute_cap,
        )
        if added or changed:
            rec = dataclasses.replace(rec, uuid=twin_uuid(node.name, i))
        if added:
            bus = _bus_id(base[0].pci_bus_id, i, taken)
            taken.add(bus)
            rec = dataclasses.replace(rec, pci_bus_id=bus)
        out.append(rec)
    return out


def is_unadapted(node: NodeSpec) -> bool:
    """True when the node's GPUs are exactly the capture's rows (its -L / -q / topo files can be replayed)."""
    return node.gpus > 0 and gpus_for(node) == captured(node.nvidia_smi)


def _lspci_address(bus_id: str) -> str:
    """nvidia-smi's 00000000:00:06.0 as lspci -D prints it: 0000:00:06.0."""
    domain, rest = bus_id.split(":", 1)
    return f"{int(domain, 16):04x}:{rest.lower()}"


def lspci_lines(node: NodeSpec) -> list[str]:
    """``lspci -n -D -d 10de:`` of the node: one 3D controller (class 0302, the H200's device id 2335 from the
    capture's pci_device_id 233510DE) per GPU; with the gpu-off-bus fault one more than nvidia-smi lists."""
    records = gpus_for(node)
    if not records:
        return []
    taken = {r.pci_bus_id for r in records}
    buses = [r.pci_bus_id for r in records]
    if Fault.GPU_OFF_BUS in node.faults:
        buses.append(_bus_id(records[0].pci_bus_id, len(records), taken))
    return [f"{_lspci_address(b)} 0302: 10de:2335 (rev a1)" for b in buses]
