"""lab/twin/gpus.py and lab/twin/nvidia_smi.py against the real captures in /work/shared/fixtures."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lab.spec import H200_CAPTURE, SHARED, Fault, NodeSpec
from lab.twin import hostview, nvidia_smi
from lab.twin.gpus import GpuRecord, captured, gpus_for, is_unadapted

CAPTURE_FIELDS = ["index", "name", "uuid", "driver_version", "memory.total", "memory.used", "mig.mode.current",
                  "pci.bus_id", "compute_cap", "persistence_mode", "temperature.gpu", "power.draw", "utilization.gpu"]
REAL = SHARED / "fixtures" / "real-world" / "nvidia-smi"
UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def smi(root: Path, *argv: str) -> tuple[int, str, str]:
    return nvidia_smi.run(root, list(argv))


def test_gpu_a_query_is_the_real_capture_byte_for_byte(hosts: dict[str, Path]) -> None:
    rc, out, err = smi(hosts["gpu-a"], f"--query-gpu={','.join(CAPTURE_FIELDS)}", "--format=csv")
    assert (rc, err) == (0, "")
    assert out == (H200_CAPTURE / "smi-query.csv").read_text()
    rc, out, _ = smi(hosts["gpu-a"], "--query-gpu=index,name,uuid,driver_version,memory.total,mig.mode.current",
                     "--format=csv,noheader,nounits")
    assert out == (H200_CAPTURE / "smi-query-noheader.csv").read_text()


def test_gpu_a_replays_the_other_captures(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    assert smi(root, "-L")[1] == (H200_CAPTURE / "smi-L.txt").read_text()
    assert smi(root, "-q")[1] == (H200_CAPTURE / "smi-q.txt").read_text()
    assert smi(root, "-q", "-x")[1] == (H200_CAPTURE / "smi-q.xml").read_text()
    assert smi(root, "topo", "-m")[1] == (H200_CAPTURE / "smi-topo-mig.txt").read_text().split("== mig")[0]
    rc, out, _ = smi(root, "mig", "-lgip")
    assert rc == 0 and "MIG 7g.141gb" in out
    assert gpus_for(hostview.load_node(root)) == captured()


def test_gb10_prints_na_for_memory(hosts: dict[str, Path]) -> None:
    root = hosts["spark-1"]
    for fmt in ("csv,noheader", "csv,noheader,nounits"):
        rc, out, _ = smi(root, "--query-gpu=name,memory.total,memory.used,compute_cap,driver_version", f"--format={fmt}")
        assert rc == 0
        assert out == "NVIDIA GB10, [N/A], [N/A], 12.1, 580.95.05\n"
    table = smi(root)[1]
    assert "| Not Supported          |" in table and "NVIDIA GB10" in table
    assert smi(root, "mig", "-lgip")[0] == nvidia_smi.NO_MIG_EXIT


def test_two_gpu_node_has_distinct_deterministic_uuids(hosts: dict[str, Path], spec_nodes: dict[str, NodeSpec]) -> None:
    records = gpus_for(spec_nodes["gpu-b"])
    assert [r.index for r in records] == [0, 1]
    assert records[0] == captured()[0]                       # unchanged GPU 0 keeps the captured row
    assert len({r.uuid for r in records}) == 2 and len({r.pci_bus_id for r in records}) == 2
    assert all(UUID_RE.match(r.uuid) for r in records)
    assert gpus_for(spec_nodes["gpu-b"]) == records           # deterministic
    other = gpus_for(NodeSpec(name="gpu-c", gpus=2))
    assert other[1].uuid != records[1].uuid                   # derived from the node name
    rc, out, _ = smi(hosts["gpu-b"], "--query-gpu=index,uuid,pci.bus_id", "--format=csv,noheader")
    assert rc == 0
    assert out.splitlines() == [f"{r.index}, {r.uuid}, {r.pci_bus_id}" for r in records]
    assert smi(hosts["gpu-b"], "-L")[1] == "".join(f"GPU {r.index}: NVIDIA H200 (UUID: {r.uuid})\n" for r in records)


def test_adapted_q_and_xml_substitute_identity(hosts: dict[str, Path], spec_nodes: dict[str, NodeSpec]) -> None:
    records = gpus_for(spec_nodes["gpu-b"])
    q = smi(hosts["gpu-b"], "-q")[1]
    assert re.search(r"^Attached GPUs\s+: 2$", q, flags=re.M)
    assert all(q.count(r.uuid) == 1 for r in records)
    assert re.findall(r"^    Minor Number\s+: (\d+)$", q, flags=re.M) == ["0", "1"]
    xml = ET.fromstring(smi(hosts["gpu-b"], "-q", "-x")[1])
    assert xml.findtext("attached_gpus") == "2"
    assert [g.findtext("uuid") for g in xml.findall("gpu")] == [r.uuid for r in records]
    assert [g.get("id") for g in xml.findall("gpu")] == [r.pci_bus_id for r in records]
    spark = ET.fromstring(smi(hosts["spark-1"], "-q", "-x")[1])
    gpu = spark.find("gpu")
    assert gpu is not None and gpu.findtext("product_name") == "NVIDIA GB10"
    assert gpu.findtext("product_architecture") == "Blackwell"
    assert spark.findtext("driver_version") == "580.95.05"
    assert gpu.findtext("fb_memory_usage/total") == "N/A"


def test_faults(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    hostview.set_faults(root, [Fault.DRIVER_BROKEN])
    for argv in ([], ["-L"], ["--query-gpu=driver_version", "--format=csv,noheader"]):
        assert smi(root, *argv) == (9, nvidia_smi.DRIVER_BROKEN_MESSAGE + "\n", "")
    assert nvidia_smi.DRIVER_BROKEN_MESSAGE.startswith("NVIDIA-SMI has failed because it couldn't communicate")
    hostview.set_faults(root, [Fault.GPU_MISSING])
    assert smi(root, "-L") == (6, "No devices were found\n", "")
    hostview.set_faults(root, [])
    assert smi(root, "-L")[0] == 0


def test_unknown_fields_and_arguments_fail_like_nvidia_smi(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    assert smi(root, "--query-gpu=name,bogus.field", "--format=csv") == (
        2, 'Field "bogus.field" is not a valid field to query.\n', "")
    invalid = (2, "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n", "")
    # Seen on the real H200 (docs/real-gpu.md): an unknown option exits 255 with this message.
    assert smi(root, "--bogus") == (255, "ERROR: Option --bogus is not recognized. Please run 'nvidia-smi -h'.\n\n", "")
    assert smi(root, "-x") == (255, "ERROR: Option -x is not recognized. Please run 'nvidia-smi -h'.\n\n", "")
    assert smi(root, "--query-gpu=name") == invalid                       # no --format
    assert smi(root, "--query-gpu=name", "--format=json") == invalid
    assert smi(root, "--query-gpu", "name", "--format", "csv,noheader") == (0, "NVIDIA H200\n", "")
    assert smi(root, "--query-gpu=gpu_name,count", "--format=csv") == (0, "name, count\nNVIDIA H200, 1\n", "")
    assert smi(root, "--query-gpu=memory.total", "--format=csv,nounits")[1] == "memory.total [MiB]\n143771\n"
    assert smi(root, "-i", "0", "--query-gpu=index", "--format=csv,noheader")[1] == "0\n"
    assert smi(root, "-i", "7", "--query-gpu=index", "--format=csv,noheader")[0] == 6


@settings(max_examples=60, deadline=None)
@given(fields=st.lists(st.sampled_from(CAPTURE_FIELDS), min_size=1, max_size=8),
       noheader=st.booleans())
def test_any_subset_of_the_captured_fields_matches_the_capture_columns(fields: list[str], noheader: bool) -> None:
    header, row = (H200_CAPTURE / "smi-query.csv").read_text().splitlines()
    cols = dict(zip([h.split(" [")[0] for h in header.split(", ")], zip(header.split(", "), row.split(", "),
                                                                       strict=True), strict=True))
    out = nvidia_smi.query_csv(captured(), fields, header=not noheader)
    lines = out.splitlines()
    if not noheader:
        assert lines.pop(0) == ", ".join(cols[f][0] for f in fields)
    assert lines == [", ".join(cols[f][1] for f in fields)]


def _records_from_table(path: Path) -> list[GpuRecord]:
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"^\|\s+(\d+)\s+(.+?)\s+(On|Off)\s+\|\s+(\S+) ", line)
        if not m:
            continue
        nxt = lines[i + 1]
        temp = int(re.search(r"(\d+)C", nxt).group(1))
        power = float(re.search(r"(\d+)W /", nxt).group(1))
        mem = re.search(r"(\d+)MiB /\s+(\d+)MiB", nxt)
        util = int(re.search(r"(\d+)%\s+Default", nxt).group(1))
        mig = lines[i + 2].split("|")[3].strip()
        out.append(GpuRecord(index=int(m.group(1)), name=m.group(2), uuid="GPU-x", driver_version=re.search(
            r"Driver Version: (\S+)", path.read_text()).group(1),
            memory_total_mib=int(mem.group(2)) if mem else None, memory_used_mib=int(mem.group(1)) if mem else None,
            mig_mode=None if mig == "N/A" else mig, pci_bus_id=m.group(4), compute_cap="9.0",
            persistence_mode="Enabled" if m.group(3) == "On" else "Disabled", temperature=temp, power_draw_w=power,
            utilization=util))
    return out


def test_generated_table_has_the_real_r580_layout() -> None:
    for name, perf in (("h100-in-pod-smi.txt", "P0"), ("gb10-smi.txt", "P8")):
        path = REAL / name
        real = path.read_text()
        stamp = dt.datetime.strptime(real.splitlines()[0].strip(), "%a %b %d %H:%M:%S %Y")
        records = _records_from_table(path)
        assert records
        assert nvidia_smi.table(records, now=stamp, perf=perf) == real


def test_a_node_with_its_own_capture_folder(tmp_path: Path, paths, make_host) -> None:
    folder = tmp_path / "smi"
    shutil.copytree(H200_CAPTURE, folder)
    text = (folder / "smi-query.csv").read_text()
    text = text.replace("36, 114.99 W", "41, 250.00 W")
    (folder / "smi-query.csv").write_text(text)
    root = make_host("own", nvidia_smi=folder)
    node = hostview.load_node(root)
    assert is_unadapted(node)
    assert smi(root, "--query-gpu=temperature.gpu,power.draw", "--format=csv,noheader")[1] == "41, 250.00 W\n"
