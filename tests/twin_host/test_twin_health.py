"""The twin plays each GPU health fault from the real formats, and each fails exactly its health check (the
suite's own host read, provision.hostfacts.health_read, through the lab host backend; no Kubernetes needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.spec import Fault
from lab.twin import dcgm_server
from lab.twin.gpus import gpus_for
from lab.twin.hostview import load_node
from provision import health
from provision.hostfacts import health_read
from provision.hosts.access import HostAccess
from provision.hosts.spec import HostSpec
from provision.settings import DEFAULT_HEALTH

CHECK_OF_FAULT = {Fault.XID_79: "xid", Fault.ROW_REMAP_PENDING: "memory", Fault.ECC_DBE: "memory", Fault.PCIE_X8: "pcie",
                  Fault.HW_SLOWDOWN: "throttling", Fault.GPU_OFF_BUS: "presence"}
MESSAGE_OF_FAULT = {Fault.XID_79: "Xid 79 (GPU has fallen off the bus",
                    Fault.ROW_REMAP_PENDING: "reset the GPU to apply the remap",
                    Fault.ECC_DBE: "2 uncorrectable (double-bit) volatile ECC error(s)", Fault.PCIE_X8: "link width x8 of x16",
                    Fault.HW_SLOWDOWN: "clocks held back by hardware slowdown",
                    Fault.GPU_OFF_BUS: "missing: the GPU at PCI 0000:"}


def read(root: Path) -> health.HealthInputs:
    host = HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name=root.name)
    inputs = health.inputs_from(health_read(host, 24 * 3600))
    node = load_node(root)
    return health.with_dcgm(inputs, dcgm_server.render(node, gpus_for(node)), None)


def verdicts(inputs: health.HealthInputs) -> dict[str, health.Verdict]:
    return {name: ev(inputs, DEFAULT_HEALTH) for name, ev in health.EVALUATORS.items()}


def test_healthy_twin_passes_every_health_check(hosts: dict[str, Path]) -> None:
    for name in ("gpu-a", "gpu-b"):
        inputs = read(hosts[name])
        assert inputs.kernel_source == "journalctl" and inputs.bus and len(inputs.bus) == len(inputs.gpus)
        for check, v in verdicts(inputs).items():
            assert v.ok, (name, check, v.message())
            if check != "persistence":
                assert not v.not_applicable, (name, check, v.not_applicable)


@pytest.mark.parametrize("fault", sorted(CHECK_OF_FAULT))
def test_each_fault_fails_exactly_its_check(make_host, fault: str) -> None:
    root = make_host(f"sick-{fault}", base="gpu-b", faults=(fault,))
    results = verdicts(read(root))
    failed = sorted(c for c, v in results.items() if not v.ok)
    assert failed == [CHECK_OF_FAULT[fault]], {c: v.message() for c, v in results.items()}
    message = results[CHECK_OF_FAULT[fault]].message()
    assert MESSAGE_OF_FAULT[fault] in message
    if fault != Fault.GPU_OFF_BUS:
        assert "GPU 0 (GPU-" in message  # the GPU is named with its index, UUID and bus id


def test_xid_79_is_in_the_kernel_log_and_the_exporter(make_host) -> None:
    root = make_host("xid", faults=(Fault.XID_79,))
    inputs = read(root)
    assert [e.xid for e in inputs.xids] == [79] and set(inputs.dcgm_xids.values()) == {79}
    msg = health.evaluate_xids(inputs, DEFAULT_HEALTH).message()
    assert "kernel log (journalctl)" in msg and "DCGM exporter DCGM_FI_DEV_XID_ERRORS=79" in msg
    assert "reboot the node" in msg


def test_every_exporter_endpoint_is_served_by_one_thread(paths, spec_nodes) -> None:
    """lab/twin/dcgm_server.py Servers: one selector thread for all endpoints (a serve_forever thread per node
    woke every 0.5 s: 2000 wake-ups a second at 1000 nodes); a stopped endpoint refuses, the others still answer."""
    import threading
    import urllib.request

    node = spec_nodes["gpu-a"]
    paths.root.mkdir(parents=True, exist_ok=True)
    servers = dcgm_server.Servers(paths)
    ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
    urls = [servers.start(f"uid-{i}", ip, node, gpus_for(node)) for i, ip in enumerate(ips)]
    try:
        for url in urls:
            with urllib.request.urlopen(url, timeout=30) as resp:
                assert b"DCGM_FI_DEV_GPU_TEMP" in resp.read()
        assert [t.name for t in threading.enumerate() if t.name.startswith("dcgm")] == ["dcgm-servers"]
        servers.stop("uid-1")
        with pytest.raises(OSError):
            urllib.request.urlopen(urls[1], timeout=30)
        with urllib.request.urlopen(urls[2], timeout=30) as resp:
            assert resp.status == 200
    finally:
        for i in (0, 2):
            servers.stop(f"uid-{i}")
