"""GPU health: the -q -x parser, the kernel-log Xid parser, lspci, and the evaluators, on real outputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from provision import health
from provision.hostfacts import split_health_output
from provision.observe import nvidia_smi_xml, pci
from provision.observe.kernel_log import bus_key, parse_xid_lines
from provision.settings import DEFAULT_HEALTH, SettingsError, validate
from tests.unit.observe_fixtures import DATA, fixture_params, fixture_text

H200 = "nvidia-smi/h200/health/smi-q.xml"
H200_UUID = "GPU-2047c1d7-50bc-bb48-a7eb-d684714bf280"
HEALTH_DATA = DATA / "health"
T = dict(DEFAULT_HEALTH)


def inputs(xml: str, **kw) -> health.HealthInputs:
    return health.HealthInputs(log=nvidia_smi_xml.parse(xml), **kw)


def h200() -> str:
    return fixture_text(H200)


# ------------------------------------------------------------------------------------------------ -q -x parser
def test_h200_capture_parses_with_every_health_value() -> None:
    log = nvidia_smi_xml.parse(h200())  # the capture's "$ nvidia-smi -q -x" line and trailing "rc=0" are skipped
    assert (log.driver_version, log.attached_gpus, len(log.gpus)) == ("580.159.04", 1, 1)
    g = log.gpus[0]
    assert (g.uuid, g.pci_bus_id, g.persistence_mode) == (H200_UUID, "00000000:00:06.0", "Enabled")
    assert (g.ecc_uncorrectable_volatile, g.remapped_rows_pending, g.remapped_rows_failure) == (0, False, False)
    assert (g.retired_pages_sbe, g.retired_pages_dbe, g.retired_pages_pending) == (None, None, None)  # N/A: remaps rows
    assert (g.pcie_gen_current, g.pcie_gen_max, g.pcie_width_current, g.pcie_width_max) == (5, 5, 16, 16)
    assert g.clock_reasons["hw_slowdown"] is False and g.temperature_c == 35.0
    assert g.temperature_shutdown_c is None  # the H200 prints T.Limit offsets (-8 C), not these thresholds


@pytest.mark.parametrize("rel", fixture_params("real-world/nvidia-smi", "*.xml"))
def test_every_real_xml_parses(rel: str) -> None:
    log = nvidia_smi_xml.parse(fixture_text(rel))
    assert log.gpus and all(g.pci_bus_id and g.clock_reasons for g in log.gpus)


def test_older_clocks_throttle_reason_names_are_read() -> None:
    g = nvidia_smi_xml.parse(fixture_text("real-world/nvidia-smi/quadro-p400-q-x.xml")).gpus[0]
    assert g.clock_reasons["gpu_idle"] is True and g.clock_reasons["hw_slowdown"] is False
    assert g.ecc_uncorrectable_volatile is None  # R418 double_bit/total: N/A on this board


@pytest.mark.parametrize("text", ["", "No devices were found", "<nvidia_smi_log><gpu", "<?xml version='1.0'?><x/>"])
def test_not_xml_is_a_clear_error(text: str) -> None:
    with pytest.raises(nvidia_smi_xml.SmiXmlError, match=r"nvidia-smi|not"):
        nvidia_smi_xml.parse(text)


# ------------------------------------------------------------------------------------------------ evaluators
def test_healthy_h200_passes_every_check() -> None:
    i = inputs(h200(), bus=(pci.PciDevice("0000:00:06.0", "0302", "10de", "2335"),), bus_source="lspci")
    for name in ("memory", "pcie", "throttling", "presence"):
        v = health.EVALUATORS[name](i, T)
        assert v.ok and not v.not_applicable, (name, v.message())
    assert health.evaluate_persistence(i, T).not_applicable  # not asked for by default


def test_impossible_temperature_fails_with_the_measured_value() -> None:
    v = health.evaluate_throttling(inputs(h200()), {**T, "max_temperature_c": 20})
    assert not v.ok and "temperature 35 C above the maximum 20 C" in v.message() and H200_UUID in v.message()


def test_hw_slowdown_fails_idle_does_not() -> None:
    xml = h200().replace("<clocks_event_reason_hw_slowdown>Not Active", "<clocks_event_reason_hw_slowdown>Active")
    v = health.evaluate_throttling(inputs(xml), T)
    assert not v.ok and "hardware slowdown" in v.message()
    idle = h200().replace("<clocks_event_reason_gpu_idle>Not Active", "<clocks_event_reason_gpu_idle>Active")
    assert health.evaluate_throttling(inputs(idle), T).ok


def test_real_t4_at_x8_fails_the_pcie_check() -> None:
    v = health.evaluate_pcie(inputs(fixture_text("real-world/nvidia-smi/tesla-t4-q-x.xml")), T)
    assert not v.ok and "link width x8 of x16 (50% of the host bandwidth)" in v.message()
    assert "GPU 0 (GPU-d37e67a5-91dd-3774-a5cb-99096249601a, 00000000:00:1E.0)" in v.message()


@pytest.mark.parametrize("rel", ["real-world/nvidia-smi/quadro-p400-q-x.xml", "real-world/nvidia-smi/rtx3060-q-x.xml"])
def test_idle_link_trained_down_is_a_warning(rel: str) -> None:
    v = health.evaluate_pcie(inputs(fixture_text(rel)), T)
    assert v.ok and "while idle (P8" in v.message()


def test_consumer_gpu_without_ecc_is_not_applicable() -> None:
    v = health.evaluate_memory(inputs(fixture_text("real-world/nvidia-smi/rtx3060-q-x.xml")), T)
    assert v.not_applicable and "N/A" in v.not_applicable


def test_row_remap_pending_and_failure_and_dbe() -> None:
    pending = h200().replace("<remapped_row_pending>No", "<remapped_row_pending>Yes").replace(
        "<remapped_row_unc>0", "<remapped_row_unc>4")  # the values of leptonai/gpud#80
    v = health.evaluate_memory(inputs(pending), T)
    assert not v.ok and "a row remap is pending (4 row(s)" in v.message() and "reset the GPU to apply the remap" in v.message()
    failure = h200().replace("<remapped_row_failure>No", "<remapped_row_failure>Yes")
    assert "replace the GPU" in health.evaluate_memory(inputs(failure), T).message()
    dbe = h200().replace("<dram_uncorrectable>0", "<dram_uncorrectable>2", 1)
    v = health.evaluate_memory(inputs(dbe), T)
    assert not v.ok and "2 uncorrectable (double-bit) volatile ECC error(s)" in v.message()


def test_retired_pages_on_older_gpus() -> None:
    t4 = fixture_text("real-world/nvidia-smi/tesla-t4-q-x.xml")
    assert health.evaluate_memory(inputs(t4), T).ok
    bad = t4.replace("<pending_retirement>No", "<pending_retirement>Yes")
    assert "pending retirement" in health.evaluate_memory(inputs(bad), T).message()
    assert "retired pages (limit 0)" in health.evaluate_memory(inputs(t4), {**T, "retired_pages_limit": 0}).message()


def test_gpu_on_the_bus_but_not_in_nvidia_smi_is_named() -> None:
    bus = (pci.PciDevice("0000:00:06.0", "0302", "10de", "2335"), pci.PciDevice("0000:00:07.0", "0302", "10de", "2335"))
    v = health.evaluate_presence(inputs(h200(), bus=bus, bus_source="lspci"), T)
    assert not v.ok and "missing: the GPU at PCI 0000:00:07.0" in v.message() and "Xid 79" in v.message()
    assert health.evaluate_presence(inputs(h200()), T).not_applicable  # no lspci: not applicable
    none = health.HealthInputs(smi_error="nvidia-smi -q -x (exit 6): not nvidia-smi XML", bus=bus[:1], bus_source="lspci")
    v = health.evaluate_presence(none, T)  # the driver lists nothing: every GPU on the bus is named
    assert not v.ok and "none in nvidia-smi (nvidia-smi -q -x (exit 6)" in v.message() and "0000:00:06.0" in v.message()


def test_persistence_when_asked() -> None:
    i = inputs(h200(), persistenced=False)
    assert health.evaluate_persistence(i, {**T, "persistence_mode": "Enabled"}).ok
    v = health.evaluate_persistence(i, {**T, "persistence_mode": "Disabled", "persistenced": True})
    assert not v.ok and "persistence mode Enabled" in v.message() and "nvidia-persistenced is not running" in v.message()


# ------------------------------------------------------------------------------------------------ Xid
@pytest.mark.parametrize(("name", "xid", "bus"), [
    ("xid-79-journal-rtx5080.txt", 79, "0000:2b:00"), ("xid-79-dmesg-840m.txt", 79, "0000:03:00"),
    ("xid-3-syslog-old-driver.txt", 3, "0000:01:00"), ("xid-120-154-journal-rtxpro6000.txt", 120, "0000:01:00"),
    ("xid-63-row-remapper.txt", 63, "0000:10:1c")])
def test_real_xid_lines(name: str, xid: int, bus: str) -> None:
    events = parse_xid_lines((HEALTH_DATA / name).read_text())
    assert events[0].xid == xid and events[0].bus == bus


def test_critical_xid_fails_naming_the_gpu_meaning_and_action() -> None:
    xml = h200()
    line = "2026-12-01T08:00:00+0000 node kernel: NVRM: Xid (PCI:0000:00:06): 79, pid='<unknown>', GPU has fallen off the bus."
    now = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
    v = health.evaluate_xids(inputs(xml, now=now, kernel_source="journalctl", xids=tuple(parse_xid_lines(line))), T)
    msg = v.message()
    assert not v.ok and f"GPU 0 ({H200_UUID}, 00000000:00:06.0): Xid 79 (GPU has fallen off the bus" in msg
    assert "reboot the node" in msg and "analyzing-xid-catalog" in msg
    old = dataclasses.replace(parse_xid_lines(line)[0], when=now - dt.timedelta(hours=30))
    assert health.evaluate_xids(inputs(xml, now=now, kernel_source="journalctl", xids=(old,)), T).ok  # outside 24 h


def test_non_critical_xid_is_a_warning_and_dcgm_counts() -> None:
    events = tuple(parse_xid_lines((HEALTH_DATA / "xid-120-154-journal-rtxpro6000.txt").read_text()))
    v = health.evaluate_xids(inputs(h200(), kernel_source="journalctl", xids=events[1:]), T)
    assert v.ok and "Xid 154 (GPU Recovery Action Changed" in v.message()
    v = health.evaluate_xids(inputs(h200(), dcgm_xids={H200_UUID: 48}), T)
    assert not v.ok and "DCGM exporter" in v.message()
    assert "Double Bit ECC Error; ROBUST_CHANNEL_GPU_ECC_DBE, catalogue action WORKFLOW_XID_48" in v.message()
    assert health.evaluate_xids(inputs(h200(), kernel_error="dmesg refused"), T).not_applicable


def test_fallen_off_the_bus_without_an_xid_counts_as_xid_79_once() -> None:
    events = parse_xid_lines((HEALTH_DATA / "off-bus-no-xid-nvsentinel.txt").read_text())
    assert [(e.xid, e.bus) for e in events] == [(79, "0000:b3:00")]
    assert events[0].uptime_s == 1843.308145
    journal = parse_xid_lines((HEALTH_DATA / "xid-79-journal-rtx5080.txt").read_text())
    assert [e.xid for e in journal] == [79]  # the Xid line and the kernel's own line: one event
    old = parse_xid_lines((HEALTH_DATA / "xid-3-syslog-old-driver.txt").read_text())
    assert sorted(e.xid for e in old) == [3, 79]


def test_bus_key_spellings_agree() -> None:
    assert bus_key("00000000:00:06.0") == bus_key("0000:00:06") == bus_key("0000:00:06.0") == (0, 0, 6)


# ------------------------------------------------------------------------------------------------ the host read
def test_health_read_is_split_into_parts_and_parsed() -> None:
    out = (h200() + "\n@@gpu-conformance:smi rc=0\n0000:00:06.0 0302: 10de:2335 (rev a1)\n@@gpu-conformance:lspci rc=0\n"
           "1764579600\n@@gpu-conformance:now rc=0\n350735.21 5546033.93\n@@gpu-conformance:uptime rc=0\n"
           "\n@@gpu-conformance:dmesg-iso rc=0\nnot running\n@@gpu-conformance:persistenced rc=0\n")
    i = health.inputs_from(split_health_output(out))
    assert i.uptime_s == 350735.21
    assert i.log is not None and i.bus and i.bus[0].device == "2335" and i.kernel_source == "dmesg-iso"
    assert i.now == dt.datetime.fromtimestamp(1764579600, dt.UTC) and i.persistenced is False and not i.smi_error
    broken = health.inputs_from(split_health_output("NVIDIA-SMI has failed\n@@gpu-conformance:smi rc=9\n"))
    assert broken.log is None and "exit 9" in (broken.smi_error or "")
    assert not health.evaluate_memory(broken, T).ok


def test_pcie_replay_rate_since_boot_warns_above_dcgms_limit() -> None:
    """DCGM's DCGM_LIMIT_MAX_PCIREPLAY_RATE: 8 replays a minute. The rate is taken over the host's uptime; without
    it, the count since the driver loaded against pcie_replays_warn."""
    assert health.replay_warning("GPU 0", 0, 0, 600.0, 8.0, 100) is None
    assert health.replay_warning("GPU 0", 4000, 0, 600.0, 8.0, 100) is None          # 6.7/min: under the limit
    w = health.replay_warning("GPU 0", 6000, 1, 600.0, 8.0, 100)
    assert w and "10.0/min" in w and "more than 8/min" in w and "rollovers 1" in w, w
    assert health.replay_warning("GPU 0", 101, 0, None, 8.0, 100)                     # no uptime: the count
    assert health.replay_warning("GPU 0", 99, 0, None, 8.0, 100) is None
    assert health.replay_warning("GPU 0", None, None, 600.0, 8.0, 100) is None        # [N/A]


def test_health_settings_are_validated() -> None:
    s = validate({"health": {"max_temperature_c": 80, "critical_xids": [79, 48]}})
    assert s.health["max_temperature_c"] == 80.0 and s.health["critical_xids"] == (48, 79)
    assert s.health["xid_window_h"] == 24.0 and s.health["pcie_replay_rate_warn_per_min"] == 8.0
    assert validate({"health": {"pcie_replay_rate_warn_per_min": 2}}).health["pcie_replay_rate_warn_per_min"] == 2.0
    for bad in ({"nope": 1}, {"critical_xids": "79"}, {"persistence_mode": "on"}, {"xid_window_h": -1}):
        with pytest.raises(SettingsError, match="health"):
            validate({"health": bad})


def test_sources_file_names_every_sample() -> None:
    sources = (HEALTH_DATA / "SOURCES.md").read_text()
    for f in Path(HEALTH_DATA).glob("*.txt"):
        assert f.name in sources


# ------------------------------------------------------------------------------------------------ never a crash
_VALUES = ["N/A", "[N/A]", "Not Supported", "[Not Supported]", "Unknown Error", "-8 C", "", "0", "Yes", "Active",
           "16x", "garbage", "4294967295"]


def test_any_element_unsupported_is_never_a_crash() -> None:
    """Every leaf element of the real H200 log replaced, one at a time, by what drivers print instead of a value
    (or by junk): parsing and every evaluator still answer (ok, failed or not applicable), never raise."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = h200()
    leaves = [m.span(1) for m in re.finditer(r"<[a-z_]+>([^<\n]*)</[a-z_]+>", text)]

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, len(leaves) - 1), st.sampled_from(_VALUES)), min_size=1, max_size=8))
    def check(changes):
        t = text
        for i, value in sorted(dict(changes).items(), key=lambda c: -leaves[c[0]][0]):
            a, b = leaves[i]
            t = t[:a] + value + t[b:]
        i = inputs(t, bus=(), bus_source="lspci")
        for ev in health.EVALUATORS.values():
            v = ev(i, {**T, "persistence_mode": "Enabled"})
            assert isinstance(v.ok, bool) and isinstance(v.message(), str)

    check()


def test_api_only_audit_still_reads_xids_from_the_exporter(monkeypatch, tmp_path) -> None:

    from provision.context import NoHostAccess, RunContext

    scrape = ('DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-1",pci_bus_id="00000000:00:06.0",device="nvidia0",'
              'modelName="NVIDIA H200",Hostname="n1"} 79\n')
    monkeypatch.setattr(health, "scrape_dcgm", lambda ctx, node: (scrape, None))
    ctx = RunContext(validate({"host_backend": "none"}), None, tmp_path, ("n1",))  # type: ignore[arg-type]
    finding = health.check(ctx, "n1", "xid")
    assert not finding.ok and "GPU GPU-1: Xid 79" in finding.message and "DCGM exporter" in finding.message
    with pytest.raises(NoHostAccess, match="host checks are off"):
        health.check(ctx, "n1", "memory")
    monkeypatch.setattr(health, "scrape_dcgm", lambda ctx, node: (None, "no exporter pod"))
    ctx2 = RunContext(validate({"host_backend": "none"}), None, tmp_path, ("n1",))  # type: ignore[arg-type]
    with pytest.raises(NoHostAccess):
        health.check(ctx2, "n1", "xid")



def test_every_catalogue_row_names_the_catalogues_mnemonic_and_bucket() -> None:
    """Rows carry the catalogue's own mnemonic and immediate resolution bucket; every default critical Xid is one."""
    from provision import xid_catalog
    from provision.settings import DEFAULT_HEALTH

    buckets = {"RESTART_APP", "RESET_GPU", "RESTART_BM", "IGNORE", "CONTACT_SUPPORT"}
    for x in xid_catalog.CATALOG.values():
        assert x.mnemonic and x.mnemonic == x.mnemonic.upper(), x
        assert x.bucket in buckets or x.bucket.startswith(("WORKFLOW_", "XID_")), x
    assert set(DEFAULT_HEALTH["critical_xids"]) <= set(xid_catalog.CATALOG)
    assert xid_catalog.describe(79).bucket == "RESTART_BM" and xid_catalog.describe(95).bucket == "RESET_GPU"
    assert xid_catalog.describe(9999).meaning == "see NVIDIA's Xid catalogue"


def _scraping_ctx(tmp_path, mode: str, answers: list):
    """A RunContext whose apiserver proxy answers ``answers`` in turn (an exception is raised); the calls list."""
    from types import SimpleNamespace

    from provision.context import RunContext

    calls: list[str] = []
    left = iter(answers)

    def proxy(name, ns, path, **_):
        calls.append(f"{ns}/{name}/{path}")
        got = next(left)
        if isinstance(got, Exception):
            raise got
        return got

    pod = {"metadata": {"name": "nvidia-dcgm-exporter-x"}, "status": {"podIP": "198.18.0.9"}}
    kube = SimpleNamespace(snapshot=lambda: SimpleNamespace(pod_on=lambda app, node: pod), timeout=5,
                           core=SimpleNamespace(connect_get_namespaced_pod_proxy_with_path=proxy))
    return RunContext(validate({"mode": mode}), kube, tmp_path, ("n1",)), calls  # type: ignore[arg-type]


def test_one_dcgm_scrape_per_node_is_shared_and_under_provision_a_failure_is_asked_again(tmp_path) -> None:
    """The metrics check and the Xid check read one scrape per node and run (through the apiserver's pod proxy by
    default); under --provision a failed scrape is not remembered (the exporter may come up in between)."""
    from provision import checks

    ctx, calls = _scraping_ctx(tmp_path, "provision",
                               [OSError("connection refused"), "DCGM_FI_DEV_XID_ERRORS{UUID=\"GPU-1\"} 0\n"])
    with pytest.raises(checks.DcgmUnavailable, match="did not answer"):
        checks.dcgm_scrape(ctx, "n1")
    assert health.scrape_dcgm(ctx, "n1") == ('DCGM_FI_DEV_XID_ERRORS{UUID="GPU-1"} 0\n', None)
    assert checks.dcgm_scrape(ctx, "n1")[0] == "nvidia-dcgm-exporter-x"
    assert calls == ["gpu-operator/nvidia-dcgm-exporter-x:9400/metrics"] * 2, calls


def test_a_read_only_run_scrapes_a_failing_exporter_once(tmp_path) -> None:
    """An audit cannot bring the exporter up: its failed scrape is remembered for the node's other scenarios (a
    failing 1000-node fleet was scraped 4000 times), and each scenario gets its own exception with the same
    kind, pod and detail."""
    from provision import checks

    ctx, calls = _scraping_ctx(tmp_path, "audit", [OSError("connection refused"), "never asked"])
    seen = []
    for _ in range(3):
        with pytest.raises(checks.DcgmUnavailable, match="did not answer") as info:
            checks.dcgm_scrape(ctx, "n1")
        seen.append(info.value)
    assert calls == ["gpu-operator/nvidia-dcgm-exporter-x:9400/metrics"], calls
    assert {(e.kind, e.pod, e.detail) for e in seen} == {("no-answer", "nvidia-dcgm-exporter-x", "connection refused")}
    assert len({id(e) for e in seen}) == 3 and all(e.__traceback__ is not None for e in seen)
    assert health.scrape_dcgm(ctx, "n1")[0] is None and calls == ["gpu-operator/nvidia-dcgm-exporter-x:9400/metrics"]


def _fleet_scraping_ctx(tmp_path, nodes: tuple[str, ...], delay_s: float):
    """A read-only RunContext of ``nodes`` whose pod proxy takes ``delay_s`` per scrape; who scraped which node,
    from which thread, and the most scrapes in flight at once."""
    import threading
    import time
    from types import SimpleNamespace

    from provision.context import RunContext

    seen: list[tuple[str, str]] = []
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def proxy(name, ns, path, **_):
        name = name.removesuffix(":9400")
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            seen.append((name, threading.current_thread().name))
        time.sleep(delay_s)
        with lock:
            state["now"] -= 1
        return f'DCGM_FI_DEV_XID_ERRORS{{pod="{name}"}} 0\n'

    def pod_on(app, node):
        return {"metadata": {"name": f"exporter-{node}"}, "status": {"podIP": "198.18.0.9"}}

    kube = SimpleNamespace(snapshot=lambda: SimpleNamespace(pod_on=pod_on), timeout=5,
                           core=SimpleNamespace(connect_get_namespaced_pod_proxy_with_path=proxy))
    ctx = RunContext(validate({"mode": "audit", "host_concurrency": 4}), kube, tmp_path, nodes)  # type: ignore[arg-type]
    return ctx, seen, state


def test_an_audits_first_scrape_starts_every_nodes_scrape_at_once(tmp_path) -> None:
    """One node's scrape at a time, 1000 scrapes through a busy apiserver's proxy (0.5 s each) kept the main
    thread waiting for eight minutes: the first one starts all of them in the pool, each node once."""
    from provision import checks

    nodes = tuple(f"n{i}" for i in range(8))
    ctx, seen, state = _fleet_scraping_ctx(tmp_path, nodes, 0.2)
    try:
        assert checks.dcgm_scrape(ctx, "n3")[0] == "exporter-n3"
        for n in nodes:
            assert checks.dcgm_scrape(ctx, n)[1] == f'DCGM_FI_DEV_XID_ERRORS{{pod="exporter-{n}"}} 0\n'
    finally:
        ctx.close()
    assert sorted(name for name, _ in seen) == sorted(f"exporter-{n}" for n in nodes), "each node scraped once"
    assert state["peak"] > 1, "the scrapes ran one at a time"
    assert sum(t.startswith("fact-read") for _, t in seen) >= len(nodes) - 1


def test_an_xdist_worker_scrapes_only_the_nodes_it_asks_about(tmp_path) -> None:
    from provision import checks

    ctx, seen, _ = _fleet_scraping_ctx(tmp_path, ("n0", "n1", "n2"), 0.0)
    ctx.prefetch_fact_nodes = ()  # as the plugin sets it in an xdist worker
    try:
        checks.dcgm_scrape(ctx, "n1")
        checks.dcgm_scrape(ctx, "n1")
    finally:
        ctx.close()
    assert [name for name, _ in seen] == ["exporter-n1"]
