"""The GPU health feature (`pytest features/ -m anywhere`) against a lab: each health fault of the node spec
fails exactly its node's scenario of that check with the message an operator acts on, a healthy node passes,
summary.json carries the measured values per node and GPU, and the audit writes nothing."""

from __future__ import annotations

import pytest

from lab.spec import Fault
from tests.suite.runner import run_suite, suite_writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SCENARIO = {
    "xid": "No GPU of the node reported a critical Xid error",
    "memory": "The GPUs' memory is healthy",
    "pcie": "The GPUs' PCIe links run at their maximum generation and width",
    "throttling": "No GPU is slowed down by hardware, heat or the power brake",
    "presence": "Every NVIDIA GPU on the PCI bus is listed by nvidia-smi",
}
# node -> (fault, the scenario it must fail, text of the message)
SICK = {
    "h-xid": (Fault.XID_79, "xid", "Xid 79 (GPU has fallen off the bus"),
    "h-remap": (Fault.ROW_REMAP_PENDING, "memory", "reset the GPU to apply the remap"),
    "h-dbe": (Fault.ECC_DBE, "memory", "uncorrectable (double-bit) volatile ECC"),
    "h-x8": (Fault.PCIE_X8, "pcie", "link width x8 of x16"),
    "h-slow": (Fault.HW_SLOWDOWN, "throttling", "hardware slowdown"),
    "h-offbus": (Fault.GPU_OFF_BUS, "presence", "missing: the GPU at PCI"),
}


@pytest.fixture(scope="module")
def sick_lab(module_lab_factory):
    nodes = [{"name": "cp-1", "control_plane": True}, {"name": "h-ok", "gpus": 2}]
    nodes += [{"name": n, "gpus": 2, "faults": [f]} for n, (f, _, _) in SICK.items()]
    return module_lab_factory({"nodes": nodes}, "health")


def test_each_health_fault_fails_exactly_its_scenario(sick_lab, tmp_path):
    run = run_suite(sick_lab, tmp_path, "-m", "anywhere", "--no-workload", "--gpu-nodes", ",".join(["h-ok", *SICK]))
    assert run.rc == 10, run.output[-3000:]
    ok = {(r["scenario"], r["outcome"]) for r in run.results("h-ok")}
    assert {s for s, o in ok if o == "passed"} == set(SCENARIO.values()), ok
    for node, (_, check, text) in SICK.items():
        bad = [r for r in run.results(node) if r["outcome"] in ("failed", "broken")]
        assert [r["scenario"] for r in bad] == [SCENARIO[check]], (node, [(r["scenario"], r["message"][:200]) for r in bad])
        assert text in bad[0]["message"] and "Fix:" in bad[0]["message"], bad[0]["message"]
    health = run.summary["health"]
    assert set(health) == {"h-ok", *SICK}
    gpus = health["h-x8"]["gpus"]
    assert len(gpus) == 2 and gpus[0]["pcie_width"] == [8, 16] and gpus[1]["pcie_width"] == [16, 16]
    assert health["h-offbus"]["gpus_on_bus"] == 3 and health["h-offbus"]["gpus_in_nvidia_smi"] == 2
    assert [x["xid"] for x in health["h-xid"]["xids"]] == [79]
    assert suite_writes(sick_lab, run) == []
