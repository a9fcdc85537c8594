"""The ``nvidia-smi`` of a lab GPU node (the shim <root>/usr/bin/nvidia-smi calls :func:`main`).

Answers, from the node's GPUs (lab/twin/gpus.py) and the real captures (lab.spec.H200_CAPTURE or the node's
``nvidia_smi`` folder):

* ``--query-gpu=<fields> --format=csv[,noheader][,nounits]`` (also ``--query-gpu F`` / ``--format F`` and
  ``-i/--id``): header ``index, name, ...`` with units in brackets, values with `` MiB`` / `` W`` / `` %`` unless
  ``nounits``, ``[N/A]`` for memory on unified-memory nodes. The captured row comes back byte for byte.
* ``-L``; ``-q`` and ``-q -x``: the capture files when the node is the capture; for an adapted node the
  capture's GPU block is repeated per GPU with name / UUID / bus id / minor number / driver / memory /
  architecture substituted (everything else stays the H200's: a documented approximation).
* ``topo -m`` (capture, or a generated matrix), ``mig -lgip`` (capture's profiles, H200 only), ``--version``.
* plain ``nvidia-smi``: a table generated in the R580 layout (checked against real captures in the tests).

Faults (from <root>/.twin/node.json): driver-broken -> exit 9 with the driver message; gpu-missing -> "No devices
were found", exit 6. Messages and exit codes are constants below (bad-input ones confirmed on a real H200).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lab.spec import H200_CAPTURE, Fault, NodeSpec
from lab.twin import mig
from lab.twin.gpus import GpuRecord, captured, gpus_for, is_unadapted
from lab.twin.hostview import load_node

__all__ = [
    "DRIVER_BROKEN_EXIT",
    "DRIVER_BROKEN_MESSAGE",
    "FIELDS",
    "INVALID_ARGS_EXIT",
    "INVALID_ARGS_MESSAGE",
    "INVALID_FIELD_EXIT",
    "INVALID_FIELD_MESSAGE",
    "NO_DEVICES_EXIT",
    "NO_DEVICES_MESSAGE",
    "UNKNOWN_OPTION_EXIT",
    "UNKNOWN_OPTION_MESSAGE",
    "main",
    "run",
    "table",
]

# ---- messages and exit codes. The two for bad input were seen on the real H200 (driver 580.159.04, see
# docs/real-gpu.md): an unknown option exits 255, an unknown query field exits 2. All go to stdout.
INVALID_FIELD_MESSAGE = 'Field "{field}" is not a valid field to query.'
INVALID_FIELD_EXIT = 2
UNKNOWN_OPTION_MESSAGE = "ERROR: Option {option} is not recognized. Please run 'nvidia-smi -h'."
UNKNOWN_OPTION_EXIT = 255
# Known options in a combination nvidia-smi refuses (e.g. --query-gpu without --format): not yet seen on a GPU.
INVALID_ARGS_MESSAGE = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
INVALID_ARGS_EXIT = 2
DRIVER_BROKEN_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
    "NVIDIA driver is installed and running."
)

DRIVER_BROKEN_EXIT = 9
NO_DEVICES_MESSAGE = "No devices were found"
NO_DEVICES_EXIT = 6
NO_MIG_MESSAGE = "No MIG-supported devices found."
NO_MIG_EXIT = 6
INVALID_ID_MESSAGE = "No devices were found"  # nvidia-smi -i <unknown> prints this too
INVALID_ID_EXIT = 6


@dataclass(frozen=True)
class _Field:
    header: str
    unit: str | None = None     # printed after the value unless nounits, and in brackets in the header


def _fmt_int(v: int | None) -> str | None:
    return None if v is None else str(v)


FIELDS: dict[str, _Field] = {
    "count": _Field("count"),
    "index": _Field("index"),
    "name": _Field("name"),
    "uuid": _Field("uuid"),
    "driver_version": _Field("driver_version"),
    "memory.total": _Field("memory.total", "MiB"),
    "memory.used": _Field("memory.used", "MiB"),
    "mig.mode.current": _Field("mig.mode.current"),
    "pci.bus_id": _Field("pci.bus_id"),
    "compute_cap": _Field("compute_cap"),
    "persistence_mode": _Field("persistence_mode"),
    "temperature.gpu": _Field("temperature.gpu"),
    "power.draw": _Field("power.draw", "W"),
    "utilization.gpu": _Field("utilization.gpu", "%"),
}
# other spellings nvidia-smi accepts (the header prints the canonical name)
ALIASES = {"gpu_name": "name", "gpu_uuid": "uuid", "gpu_bus_id": "pci.bus_id", "memory.total": "memory.total"}


def _raw(rec: GpuRecord, field: str, count: int) -> str | None:
    if field == "count":
        return str(count)
    if field == "index":
        return str(rec.index)
    if field == "name":
        return rec.name
    if field == "uuid":
        return rec.uuid
    if field == "driver_version":
        return rec.driver_version
    if field == "memory.total":
        return _fmt_int(rec.memory_total_mib)
    if field == "memory.used":
        return _fmt_int(rec.memory_used_mib)
    if field == "mig.mode.current":
        return rec.mig_mode
    if field == "pci.bus_id":
        return rec.pci_bus_id
    if field == "compute_cap":
        return rec.compute_cap
    if field == "persistence_mode":
        return rec.persistence_mode
    if field == "temperature.gpu":
        return _fmt_int(rec.temperature)
    if field == "power.draw":
        return None if rec.power_draw_w is None else f"{rec.power_draw_w:.2f}"
    if field == "utilization.gpu":
        return _fmt_int(rec.utilization)
    raise KeyError(field)


def query_csv(records: list[GpuRecord], fields: list[str], header: bool = True, units: bool = True) -> str:
    canon = [ALIASES.get(f, f) for f in fields]
    lines = []
    if header:
        lines.append(", ".join(
            f"{FIELDS[f].header} [{FIELDS[f].unit}]" if FIELDS[f].unit else FIELDS[f].header for f in canon))
    for rec in records:
        cells = []
        for f in canon:
            v = _raw(rec, f, len(records))
            if v is None:
                cells.append("[N/A]")
            elif units and FIELDS[f].unit:
                cells.append(f"{v} {FIELDS[f].unit}")
            else:
                cells.append(v)
        lines.append(", ".join(cells))
    return "".join(line + "\n" for line in lines)


# ------------------------------------------------------------------------------------------------ -L, -q, topo
def list_gpus(records: list[GpuRecord]) -> str:
    return "".join(f"GPU {r.index}: {r.name} (UUID: {r.uuid})\n" for r in records)


_ARCH = (("GB", "Blackwell"), ("B200", "Blackwell"), ("B100", "Blackwell"), ("H100", "Hopper"),
         ("H200", "Hopper"), ("GH200", "Hopper"), ("A100", "Ampere"), ("A30", "Ampere"), ("L40", "Ada Lovelace"),
         ("L4", "Ada Lovelace"), ("T4", "Turing"), ("V100", "Volta"))


def _arch(product: str) -> str | None:
    for key, arch in _ARCH:
        if key in product:
            return arch
    return None


def _adapt_block(block: str, base: GpuRecord, rec: GpuRecord, xml: bool) -> str:
    """The capture's per-GPU block with the identity of ``rec`` substituted for ``base``'s."""
    out = block.replace(base.uuid, rec.uuid).replace(base.pci_bus_id, rec.pci_bus_id)
    out = out.replace(base.driver_version, rec.driver_version)
    if base.memory_total_mib is not None:
        mem = "N/A" if rec.memory_total_mib is None else f"{rec.memory_total_mib} MiB"
        if xml:
            out = out.replace(f"<total>{base.memory_total_mib} MiB</total>", f"<total>{mem}</total>", 1)
        else:
            out = re.sub(rf"(Total\s+: ){base.memory_total_mib} MiB", lambda m: m.group(1) + mem, out, count=1)
    if xml:
        out = out.replace(f"<product_name>{base.name}</product_name>", f"<product_name>{rec.name}</product_name>")
        out = re.sub(r"<minor_number>\d+</minor_number>", f"<minor_number>{rec.index}</minor_number>", out)
        arch = _arch(rec.name)
        if arch:
            out = re.sub(r"<product_architecture>[^<]*</product_architecture>",
                         f"<product_architecture>{arch}</product_architecture>", out)
    else:
        out = re.sub(rf"(Product Name\s+: ){re.escape(base.name)}$", lambda m: m.group(1) + rec.name, out,
                     flags=re.M)
        out = re.sub(r"(Minor Number\s+: )\d+$", lambda m: m.group(1) + str(rec.index), out, flags=re.M)
        arch = _arch(rec.name)
        if arch:
            out = re.sub(r"(Product Architecture\s+: ).*$", lambda m: m.group(1) + arch, out, flags=re.M)
    return out


def query_text(folder: Path, records: list[GpuRecord], unadapted: bool) -> str:
    text = (folder / "smi-q.txt").read_text()
    if unadapted:
        return text
    base = captured(folder)[0]
    m = re.search(r"^GPU [0-9A-Fa-f:.]+$", text, flags=re.M)
    if m is None:
        return text
    head, rest = text[: m.start()], text[m.start():]
    nxt = re.search(r"^GPU [0-9A-Fa-f:.]+$", rest[1:], flags=re.M)
    block = rest if nxt is None else rest[: nxt.start() + 1]
    head = head.replace(base.driver_version, records[0].driver_version)
    head = re.sub(r"(Attached GPUs\s+: )\d+", lambda mm: mm.group(1) + str(len(records)), head)
    body = "".join(_adapt_block(block if block.endswith("\n") else block + "\n", base, r, xml=False)
                   for r in records)
    return head + body


def query_xml(folder: Path, records: list[GpuRecord], unadapted: bool) -> str:
    text = (folder / "smi-q.xml").read_text()
    if unadapted:
        return text
    base = captured(folder)[0]
    start = text.find("\t<gpu id=")
    end = text.find("\t</gpu>", start)
    if start < 0 or end < 0:
        return text
    end = text.index("\n", end) + 1
    head, block, tail = text[:start], text[start:end], text[end:]
    # only the first GPU's block is used as the template (a capture with several keeps its first)
    nxt = tail.find("\t<gpu id=")
    if nxt >= 0:
        last = tail.rfind("\t</gpu>")
        tail = tail[: nxt] + tail[tail.index("\n", last) + 1:]
    head = head.replace(base.driver_version, records[0].driver_version)
    head = re.sub(r"<attached_gpus>\d+</attached_gpus>", f"<attached_gpus>{len(records)}</attached_gpus>", head)
    return head + "".join(_adapt_block(block, base, r, xml=True) for r in records) + tail


# GPU health faults (lab.spec.FAULTS) as they show in -q -x: the first GPU's element (volatile, then aggregate for
# ECC) changed to what a real unhealthy GPU prints (tests/unit/data/health/SOURCES.md).
_XML_FAULTS = {
    Fault.ROW_REMAP_PENDING: (("<remapped_row_pending>No<", "<remapped_row_pending>Yes<", 1),
                          ("<remapped_row_unc>0<", "<remapped_row_unc>1<", 1)),
    Fault.ECC_DBE: (("<dram_uncorrectable>0<", "<dram_uncorrectable>2<", 2),),
    Fault.PCIE_X8: (("<current_link_width>16x<", "<current_link_width>8x<", 1),),
    Fault.HW_SLOWDOWN: (("<clocks_event_reason_hw_slowdown>Not Active<", "<clocks_event_reason_hw_slowdown>Active<", 1),),
}


def health_faults(xml: str, faults: tuple[str, ...]) -> str:
    for fault in faults:
        for old, new, count in _XML_FAULTS.get(fault, ()):
            xml = xml.replace(old, new, count)
    return xml


def topo_matrix(folder: Path, records: list[GpuRecord], unadapted: bool) -> str:
    path = folder / "smi-topo-mig.txt"
    text = path.read_text() if path.exists() else ""
    captured_topo = text.split("== mig", 1)[0]
    if unadapted and captured_topo:
        return captured_topo
    n = len(records)
    head = "\t\x1b[4m" + "\t".join(f"GPU{i}" for i in range(n)) + "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
    rows = []
    for i in range(n):
        cells = [" X " if j == i else "SYS" for j in range(n)]
        rows.append(f"GPU{i}\t" + "\t".join(cells) + "\t0-15\t0\t\tN/A\n")
    legend = captured_topo[captured_topo.find("\nLegend:"):] if "\nLegend:" in captured_topo else "\n"
    return head + "".join(rows) + legend


def mig_profiles(folder: Path, records: list[GpuRecord]) -> tuple[int, str]:
    path = folder / "smi-topo-mig.txt"
    text = path.read_text() if path.exists() else ""
    if "== mig" not in text:
        return NO_MIG_EXIT, NO_MIG_MESSAGE + "\n"
    base = captured(folder)[0]
    if any(r.name != base.name or r.memory_total_mib != base.memory_total_mib for r in records):
        return NO_MIG_EXIT, NO_MIG_MESSAGE + "\n"
    table_text = text.split("== mig", 1)[1].lstrip("\n")
    lines = table_text.splitlines(keepends=True)
    # header: up to and including the "|====" line; then 3-line blocks per profile for GPU 0
    sep = next(i for i, line in enumerate(lines) if line.startswith("|===="))
    head, blocks = lines[: sep + 1], lines[sep + 1:]
    out = list(head)
    for r in records:
        for line in blocks:
            out.append(re.sub(r"^\|   0  ", f"|{r.index:>4}  ", line) if r.index else line)
    return 0, "".join(out)


# ------------------------------------------------------------------------------------------------ the table
_CUDA = {"595": "13.2", "590": "13.1", "580": "13.0", "575": "12.9", "570": "12.8", "565": "12.7", "560": "12.6",
         "555": "12.5", "550": "12.4", "545": "12.3", "535": "12.2", "530": "12.1", "525": "12.0"}
_SEP = "+-----------------------------------------+------------------------+----------------------+"
_PROCESSES = (
    "+-----------------------------------------------------------------------------------------+\n"
    "| Processes:                                                                              |\n"
    "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |\n"
    "|        ID   ID                                                               Usage      |\n"
    "|=========================================================================================|\n"
    "|  No running processes found                                                             |\n"
    "+-----------------------------------------------------------------------------------------+\n"
)


def cuda_version(driver: str, folder: Path = H200_CAPTURE) -> str:
    major = driver.split(".")[0]
    if major in _CUDA:
        return _CUDA[major]
    m = re.search(r"^CUDA Version\s+: (\S+)", _read(folder / "smi-q.txt"), flags=re.M)
    return m.group(1) if m else "13.0"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _power_cap(folder: Path) -> str:
    m = re.search(r"^\s+Current Power Limit\s+: ([\d.]+) W", _read(folder / "smi-q.txt"), flags=re.M)
    return f"{round(float(m.group(1)))}W" if m else "N/A"


def _perf(folder: Path) -> str:
    m = re.search(r"^\s+Performance State\s+: (\S+)", _read(folder / "smi-q.txt"), flags=re.M)
    return m.group(1) if m else "P0"


def table(records: list[GpuRecord], folder: Path = H200_CAPTURE, now: dt.datetime | None = None,
          perf: str | None = None, power_cap: str | None = None) -> str:
    """Default ``nvidia-smi`` output in the R580 layout (see the real captures in shared/fixtures).

    Performance state and power cap come from the capture's ``-q`` (P0, 700W for the H200) unless given.
    """
    t = now or dt.datetime.now()
    driver = records[0].driver_version
    cuda = cuda_version(driver, folder)
    lines = [f"{t:%a %b} {t.day:>2} {t:%H:%M:%S %Y}       ",
             "+-----------------------------------------------------------------------------------------+",
             f"| NVIDIA-SMI {driver:<23}Driver Version: {driver:<15}CUDA Version: {cuda:<9}|",
             _SEP,
             "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
             "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
             "|                                         |                        |               MIG M. |",
             "|=========================================+========================+======================|"]
    cap, perf = power_cap or _power_cap(folder), perf or _perf(folder)
    for r in records:
        unified = r.memory_total_mib is None
        name = r.name if len(r.name) <= 29 else r.name[:26] + "..."
        persist = "On" if (r.persistence_mode or "").lower() == "enabled" else "Off"
        ecc = "N/A" if unified else "0"
        temp = f"{r.temperature}C" if r.temperature is not None else "N/A"
        usage = f"{round(r.power_draw_w)}W" if r.power_draw_w is not None else "N/A"
        pcap = "N/A" if unified else cap
        cap_cell = f"{pcap:>5} " if pcap != "N/A" else " N/A  "
        if unified:
            mem = f" {'Not Supported':<23}"
        else:
            mem = f"{str(r.memory_used_mib or 0) + 'MiB':>11} / {str(r.memory_total_mib) + 'MiB':>9} "
        util = f"{r.utilization}%" if r.utilization is not None else "N/A"
        mig = "N/A" if unified or r.mig_mode is None else r.mig_mode
        lines.append(f"| {r.index:>3}  {name:<29}{persist:>4}  |{r.pci_bus_id:>19} Off | {ecc:>20} |")
        lines.append(f"| N/A{temp:>6}{perf:>6}{usage:>16} / {cap_cell}|{mem}|{util:>8}{'Default':>13} |")
        lines.append(f"|{'':41}|{'':24}| {mig:>20} |")
        lines.append(_SEP)
    return "\n".join(lines) + "\n\n" + _PROCESSES


# ------------------------------------------------------------------------------------------------ entry points
def _node(host_root: Path) -> NodeSpec:
    return load_node(host_root)


def _invalid(option: str | None = None) -> tuple[int, str, str]:
    if option is not None:
        return UNKNOWN_OPTION_EXIT, UNKNOWN_OPTION_MESSAGE.format(option=option) + "\n\n", ""
    return INVALID_ARGS_EXIT, INVALID_ARGS_MESSAGE + "\n", ""


def _select(records: list[GpuRecord], ids: str | None) -> list[GpuRecord] | None:
    if ids is None:
        return records
    out = []
    for want in ids.split(","):
        want = want.strip()
        match = [r for r in records if want in (str(r.index), r.uuid, r.pci_bus_id)]
        if not match:
            return None
        out.extend(match)
    return out


def run(host_root: Path, argv: list[str]) -> tuple[int, str, str]:
    """Run ``nvidia-smi argv`` on the host view at ``host_root``: (exit status, stdout, stderr)."""
    if argv in (["-h"], ["--help"]):
        return 0, ("NVIDIA System Management Interface -- lab twin\n\n"
                   "    nvidia-smi [-L | -q [-x] | --query-gpu=F --format=csv[,noheader][,nounits] [-i ID] | "
                   "topo -m | mig -lgip | --version]\n"), ""
    node = _node(host_root)
    if Fault.DRIVER_BROKEN in node.faults:
        return DRIVER_BROKEN_EXIT, DRIVER_BROKEN_MESSAGE + "\n", ""
    if Fault.GPU_MISSING in node.faults or node.gpus <= 0:
        return NO_DEVICES_EXIT, NO_DEVICES_MESSAGE + "\n", ""
    records = gpus_for(node)
    folder = node.nvidia_smi or H200_CAPTURE
    unadapted = is_unadapted(node)
    mig_state: dict = {}
    if node.mig is not None:   # the MIG manager's partitions (lab/twin/mig.py)
        mig_state = mig.read(host_root)
        records = mig.with_mig_mode(records, mig_state)

    if not argv:
        return 0, table(records, folder), ""
    if argv in (["-L"], ["--list-gpus"]):
        if mig_state:
            return 0, mig.list_lines(records, mig_state), ""
        if unadapted and (folder / "smi-L.txt").exists():
            return 0, (folder / "smi-L.txt").read_text(), ""
        return 0, list_gpus(records), ""
    if argv in (["-q"], ["--query"]):
        return 0, query_text(folder, records, unadapted), ""
    if sorted(argv) in (["-q", "-x"], ["--query", "--xml-format"], ["--query", "-x"], ["--xml-format", "-q"]):
        return 0, health_faults(query_xml(folder, records, unadapted), node.faults), ""
    if argv in (["topo", "-m"], ["topo", "--matrix"]):
        return 0, topo_matrix(folder, records, unadapted), ""
    if argv in (["mig", "-lgip"], ["mig", "--list-gpu-instance-profiles"]):
        rc, out = mig_profiles(folder, records)
        return rc, out, ""
    if argv == ["--version"]:
        d = records[0].driver_version
        nvml = ".".join(d.split(".")[:2])
        return 0, (f"NVIDIA-SMI version  : {d}\nNVML version        : {nvml}\nDRIVER version      : {d}\n"
                   f"CUDA Version        : {cuda_version(d, folder)}\n"), ""

    query: str | None = None
    fmt: str | None = None
    ids: str | None = None
    it = iter(argv)
    for arg in it:
        key, eq, value = arg.partition("=")
        if key in ("--query-gpu", "--format", "-i", "--id"):
            if not eq:
                value = next(it, "")
                if not value:
                    return _invalid()
            if key == "--query-gpu":
                query = value
            elif key == "--format":
                fmt = value
            else:
                ids = value
        else:
            return _invalid(arg if arg.startswith("-") else None)
    if query is None or fmt is None:
        return _invalid()
    opts = [o.strip() for o in fmt.split(",")]
    if not opts or opts[0] != "csv" or any(o not in ("csv", "noheader", "nounits") for o in opts):
        return _invalid()
    fields = [f.strip() for f in query.split(",")]
    for f in fields:
        if ALIASES.get(f, f) not in FIELDS:
            return INVALID_FIELD_EXIT, INVALID_FIELD_MESSAGE.format(field=f) + "\n", ""
    selected = _select(records, ids)
    if selected is None:
        return INVALID_ID_EXIT, INVALID_ID_MESSAGE + "\n", ""
    return 0, query_csv(selected, fields, header="noheader" not in opts, units="nounits" not in opts), ""


def main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    """The shim's entry point: print what :func:`run` answers and return its exit status."""
    root = host_root if host_root is not None else Path(sys.argv[0]).resolve().parent.parent.parent
    rc, out, err = run(root, list(sys.argv[1:] if argv is None else argv))
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.stdout.flush()
    return rc
