"""GPU health checks (features/gpu_health.feature): Xid errors, memory, PCIe link, throttling, GPUs on the bus,
persistence mode.

Inputs: one host read per node and run (provision/hostfacts.py ``health_read``: ``nvidia-smi -q -x``, lspci, the
kernel log's Xid lines of the window, nvidia-persistenced), cached in provision/expect.py, and, where the suite
reaches the cluster, the node's DCGM exporter (DCGM_FI_DEV_XID_ERRORS, the last Xid of each GPU). The evaluators
(``evaluate_*``) are pure: they take the parsed inputs and the thresholds (Settings.health) and return a Verdict;
the ``*_check`` functions turn a Verdict into the suite's Finding. A value the driver does not report ([N/A],
Not Supported, a negative temperature limit) makes that part "not applicable" with the reason, never a failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from provision import xid_catalog
from provision.checks import DcgmUnavailable, Finding, NotApplicable, dcgm_scrape
from provision.hostfacts import HealthRead
from provision.observe import dcgm, nvidia_smi_xml, pci
from provision.observe.kernel_log import XidEvent, bus_key, parse_xid_lines

XID_METRIC = "DCGM_FI_DEV_XID_ERRORS"
FAILING_REASONS = {"hw_slowdown": "hardware slowdown", "hw_thermal_slowdown": "hardware thermal slowdown",
                   "hw_power_brake_slowdown": "hardware power-brake slowdown",
                   "sw_thermal_slowdown": "software thermal slowdown"}
WARNING_REASONS = {"sw_power_cap": "software power cap"}
IDLE_PSTATES = frozenset({"P8", "P10", "P12", "P15"})


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class HealthInputs:
    log: nvidia_smi_xml.SmiXmlLog | None = None
    smi_error: str | None = None
    bus: tuple[pci.PciDevice, ...] | None = None     # NVIDIA GPUs on the PCI bus; None: could not be read
    bus_error: str | None = None
    bus_source: str | None = None
    now: dt.datetime | None = None                    # the host's clock
    uptime_s: float | None = None                     # seconds since the host booted (/proc/uptime)
    kernel_source: str | None = None                  # journalctl | dmesg-iso | dmesg; None: not readable
    kernel_error: str | None = None
    xids: tuple[XidEvent, ...] = ()
    persistenced: bool | None = None
    dcgm_xids: dict[str, int] = field(default_factory=dict)   # GPU UUID -> last Xid (0: none)
    dcgm_error: str | None = None                              # why DCGM was not read (None: read, or not tried)
    host_off: str | None = None                                # host checks are off: why (only DCGM was read)

    @property
    def gpus(self) -> tuple[nvidia_smi_xml.SmiXmlGpu, ...]:
        return self.log.gpus if self.log else ()


def inputs_from(read: HealthRead) -> HealthInputs:
    """Parse the parts of one health read (pure)."""
    kw: dict[str, Any] = {}
    _, rc, text = read.part("smi") or ("smi", 1, "")
    try:
        kw["log"] = nvidia_smi_xml.parse(text)
        if rc != 0:
            kw["smi_error"] = f"nvidia-smi -q -x exited {rc}"
    except nvidia_smi_xml.SmiXmlError as exc:
        kw["smi_error"] = f"nvidia-smi -q -x (exit {rc}): {exc}"
    bus = read.part("lspci", "sysfs")
    if bus is not None:
        name, rc, text = bus
        kw["bus_source"] = "lspci -n -D -d 10de:" if name == "lspci" else "/sys/bus/pci/devices"
        if rc == 0 or (name == "lspci" and rc == 1 and not text.strip()):
            try:
                kw["bus"] = tuple(pci.gpus_on_bus(pci.parse_lspci(text)))
            except pci.PciParseError as exc:
                kw["bus_error"] = str(exc)
        else:
            kw["bus_error"] = f"{kw['bus_source']} exited {rc}: {text.strip()[:200]}"
    now = read.part("now")
    if now and now[1] == 0 and now[2].strip().isdigit():
        kw["now"] = dt.datetime.fromtimestamp(int(now[2].strip()), dt.UTC)
    up = read.part("uptime")
    if up and up[1] == 0 and up[2].split():
        with contextlib.suppress(ValueError):
            kw["uptime_s"] = float(up[2].split()[0])
    kern = read.part("journalctl", "dmesg-iso", "dmesg", "kernel-log")
    if kern is not None:
        name, rc, text = kern
        if name == "kernel-log":
            kw["kernel_error"] = f"the kernel log is not readable (journalctl has no kernel messages, dmesg: " \
                                 f"{text.strip()[:200] or 'refused'}); run with --sudo or allow dmesg"
        else:
            kw["kernel_source"] = name
            kw["xids"] = tuple(parse_xid_lines(text))
    per = read.part("persistenced")
    if per is not None:
        kw["persistenced"] = per[2].strip() == "running"
    return HealthInputs(**kw)


def with_dcgm(inputs: HealthInputs, scrape_text: str | None, error: str | None) -> HealthInputs:
    """The inputs with the DCGM exporter's last Xid per GPU (or the reason it could not be read)."""
    if scrape_text is None:
        return _replace(inputs, dcgm_error=error)
    try:
        scrape = dcgm.parse_metrics(scrape_text)
    except dcgm.DcgmParseError as exc:
        return _replace(inputs, dcgm_error=str(exc))
    xids = {uuid: int(g.values[XID_METRIC]) for uuid, g in scrape.gpus.items() if XID_METRIC in g.values}
    if not xids:
        return _replace(inputs, dcgm_error=f"the exporter does not export {XID_METRIC}")
    return _replace(inputs, dcgm_xids=xids)


def _replace(inputs: HealthInputs, **kw: Any) -> HealthInputs:
    import dataclasses

    return dataclasses.replace(inputs, **kw)


# ------------------------------------------------------------------------------------------------ verdicts
@dataclass
class Verdict:
    ok: bool
    expected: str
    found: str
    fix: str
    warnings: list[str] = field(default_factory=list)
    not_applicable: str | None = None
    measured: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        text = f"expected {self.expected}; found {self.found}"
        if self.warnings:
            text += "; warnings: " + "; ".join(self.warnings)
        return text + (f". Fix: {self.fix}" if not self.ok else "")


def gpu_name(g: nvidia_smi_xml.SmiXmlGpu) -> str:
    return f"GPU {g.position} ({g.uuid or 'no UUID'}, {g.pci_bus_id})"


def _no_smi(inputs: HealthInputs) -> Verdict | None:
    if inputs.log is None:
        return Verdict(False, "nvidia-smi -q -x to describe the GPUs", inputs.smi_error or "no output",
                       "run nvidia-smi -q -x on the host; a driver that does not answer needs a reinstall or a reboot")
    if not inputs.log.gpus:
        return Verdict(False, "at least one GPU in nvidia-smi -q -x", "no <gpu> element",
                       "check the driver (nvidia-smi) and lspci -d 10de:")
    return None


def _gpus_measured(inputs: HealthInputs) -> list[dict[str, Any]]:
    return [g.measured() for g in inputs.gpus]


def evaluate_xids(inputs: HealthInputs, thresholds: dict[str, Any]) -> Verdict:
    window_h = float(thresholds["xid_window_h"])
    critical = set(thresholds["critical_xids"])
    by_bus = {bus_key(g.pci_bus_id): g for g in inputs.gpus}
    by_uuid = {g.uuid: g for g in inputs.gpus if g.uuid}
    since = inputs.now - dt.timedelta(hours=window_h) if inputs.now else None
    events: list[tuple[int, str, str]] = []   # (xid, who, where/when)
    for ev in inputs.xids:
        if ev.when is not None and since is not None and ev.when < since:
            continue
        g = by_bus.get(bus_key(ev.bus))
        who = gpu_name(g) if g else f"the GPU at PCI {ev.bus} (not listed by nvidia-smi)"
        when = ev.when.isoformat() if ev.when else (f"{ev.uptime_s:.0f} s after boot" if ev.uptime_s else "?")
        events.append((ev.xid, who, f"kernel log ({inputs.kernel_source}) at {when}: {ev.line.strip()[-160:]}"))
    for uuid, xid in sorted(inputs.dcgm_xids.items()):
        if xid:
            g = by_uuid.get(uuid)
            events.append((xid, gpu_name(g) if g else f"GPU {uuid}", f"DCGM exporter {XID_METRIC}={xid} (the last Xid)"))
    sources = [s for s in (f"kernel log via {inputs.kernel_source}, last {window_h:g} h" if inputs.kernel_source else None,
                           "DCGM exporter" if inputs.dcgm_xids else None) if s]
    measured = {"xids": [{"xid": x, "gpu": who, "source": src} for x, who, src in events], "xid_sources": sources}
    if not sources:
        why = "; ".join(e for e in (inputs.kernel_error, inputs.dcgm_error and f"DCGM: {inputs.dcgm_error}") if e)
        return Verdict(True, "", "", "", not_applicable=f"no Xid source could be read ({why or 'no host kernel log, no DCGM'})",
                       measured=measured)

    def line(x: int, who: str, src: str) -> str:
        d = xid_catalog.describe(x)
        cat = f"{d.mnemonic}, catalogue action {d.bucket}" if d.mnemonic else "NVIDIA Xid catalogue"
        return f"{who}: Xid {x} ({d.meaning}; {cat}) from the {src}"

    bad = [(x, w, s) for x, w, s in events if x in critical]
    warn = [line(x, w, s) for x, w, s in events if x not in critical]
    fixes = sorted({f"Xid {x}: {xid_catalog.describe(x).action}" for x, _, _ in bad})
    unread = [f"not read: {e}" for e in (inputs.kernel_error, inputs.dcgm_error and f"DCGM {inputs.dcgm_error}") if e]
    return Verdict(not bad, f"no critical Xid ({', '.join(map(str, sorted(critical)))}) on the node's GPUs "
                   f"({'; '.join(sources)})", "; ".join(line(*b) for b in bad) or "none",
                   "; ".join(fixes) + f" (see {xid_catalog.CATALOG_URL})", warnings=warn + unread, measured=measured)


def evaluate_memory(inputs: HealthInputs, thresholds: dict[str, Any]) -> Verdict:
    failed = _no_smi(inputs)
    if failed:
        return failed
    limit = int(thresholds["retired_pages_limit"])
    problems: list[str] = []
    fixes: list[str] = []
    na: list[str] = []
    for g in inputs.gpus:
        name = gpu_name(g)
        known = [v for v in (g.ecc_uncorrectable_volatile, g.remapped_rows_pending, g.remapped_rows_failure,
                             g.retired_pages_pending, g.retired_pages_sbe, g.retired_pages_dbe) if v is not None]
        if not known:
            na.append(f"{name}: the driver reports no ECC, row-remapping or page-retirement data (N/A; "
                      f"ECC mode {g.ecc_mode or 'N/A'})")
            continue
        if g.ecc_uncorrectable_volatile:
            problems.append(f"{name}: {g.ecc_uncorrectable_volatile} uncorrectable (double-bit) volatile ECC error(s)")
            fixes.append(f"{name}: drain the node and reset the GPU (nvidia-smi -r -i {g.position}); RMA if it recurs")
        if g.remapped_rows_failure:
            problems.append(f"{name}: row remapping failed (no spare rows left)")
            fixes.append(f"{name}: replace the GPU (RMA)")
        if g.remapped_rows_pending:
            problems.append(f"{name}: a row remap is pending ({g.remapped_rows_uncorrectable or 0} row(s) remapped for "
                            "uncorrectable errors)")
            fixes.append(f"{name}: drain the node and reset the GPU to apply the remap (nvidia-smi -r -i {g.position})")
        if g.retired_pages_pending:
            problems.append(f"{name}: pages are pending retirement")
            fixes.append(f"{name}: drain the node and reset the GPU (or reboot) to retire them")
        retired = (g.retired_pages_sbe or 0) + (g.retired_pages_dbe or 0)
        if retired >= limit:
            problems.append(f"{name}: {retired} retired pages (limit {limit})")
            fixes.append(f"{name}: replace the GPU (RMA)")
    measured = {"gpus": _gpus_measured(inputs)}
    if len(na) == len(inputs.gpus):
        return Verdict(True, "", "", "", not_applicable="; ".join(na), measured=measured)
    return Verdict(not problems, "no uncorrectable ECC errors, no pending row remap or remapping failure, no "
                   f"pending page retirement and fewer than {limit} retired pages",
                   "; ".join(problems) or "healthy", "; ".join(fixes), warnings=na, measured=measured)


def evaluate_pcie(inputs: HealthInputs, thresholds: dict[str, Any]) -> Verdict:
    failed = _no_smi(inputs)
    if failed:
        return failed
    replay_warn = int(thresholds["pcie_replays_warn"])
    rate_warn = float(thresholds["pcie_replay_rate_warn_per_min"])
    minutes = inputs.uptime_s / 60 if inputs.uptime_s else None
    problems: list[str] = []
    warnings: list[str] = []
    na: list[str] = []
    for g in inputs.gpus:
        name = gpu_name(g)
        if None in (g.pcie_width_current, g.pcie_width_max, g.pcie_gen_current, g.pcie_gen_max):
            na.append(f"{name}: the driver reports no PCIe link generation/width (N/A)")
            continue
        assert g.pcie_width_current is not None and g.pcie_width_max is not None  # for the type checker
        if g.pcie_width_current < g.pcie_width_max:
            problems.append(f"{name}: link width x{g.pcie_width_current} of x{g.pcie_width_max} "
                            f"({g.pcie_width_current / g.pcie_width_max:.0%} of the host bandwidth)")
        if g.pcie_gen_current is not None and g.pcie_gen_max is not None and g.pcie_gen_current < g.pcie_gen_max:
            idle = g.clock_reasons.get("gpu_idle") or (g.performance_state in IDLE_PSTATES)
            text = f"{name}: link generation {g.pcie_gen_current} of {g.pcie_gen_max}"
            if idle:
                warnings.append(text + f" while idle ({g.performance_state or 'idle'}: the link trains down to save "
                                "power; check again under load)")
            else:
                problems.append(text + f" under load ({g.performance_state or '?'})")
        warning = replay_warning(name, g.pcie_replays, g.pcie_replay_rollovers, minutes, rate_warn, replay_warn)
        if warning:
            warnings.append(warning)
    measured = {"gpus": _gpus_measured(inputs)}
    if len(na) == len(inputs.gpus):
        return Verdict(True, "", "", "", not_applicable="; ".join(na), measured=measured)
    return Verdict(not problems, "every GPU's PCIe link at its maximum generation and width",
                   "; ".join(problems) or "all at maximum",
                   "reseat the GPU (and its riser / cable), check the slot's BIOS settings (link width, generation) "
                   "and the slot itself; a link that stays narrow after a reseat is an RMA",
                   warnings=warnings + na, measured=measured)


def replay_warning(name: str, replays: int | None, rollovers: int | None, minutes: float | None, rate_warn: float,
                   count_warn: int) -> str | None:
    """A marginal PCIe link: the replay rate since the host booted above ``rate_warn`` per minute (DCGM's
    DCGM_LIMIT_MAX_PCIREPLAY_RATE, 8/min, the maximum the driver team recommends); without the host's uptime,
    the count since the driver loaded above ``count_warn``. The counter starts when the driver loads, at or
    after boot, so the rate is a lower bound. Pure."""
    if replays is None:
        return None
    roll = f"rollovers {rollovers or 0}"
    if minutes:
        rate = replays / minutes
        if rate <= rate_warn:
            return None
        return (f"{name}: {replays} PCIe replays in {minutes:.0f} min since boot, {rate:.1f}/min (more than "
                f"{rate_warn:g}/min; {roll}): a marginal link")
    if replays <= count_warn:
        return None
    return f"{name}: {replays} PCIe replays since the driver loaded (more than {count_warn}; {roll}): a marginal link"


def evaluate_throttling(inputs: HealthInputs, thresholds: dict[str, Any]) -> Verdict:
    failed = _no_smi(inputs)
    if failed:
        return failed
    max_t = float(thresholds["max_temperature_c"])
    problems: list[str] = []
    warnings: list[str] = []
    na: list[str] = []
    for g in inputs.gpus:
        name = gpu_name(g)
        if not g.clock_reasons and g.temperature_c is None:
            na.append(f"{name}: the driver reports no clock event reasons and no temperature (N/A)")
            continue
        active = [FAILING_REASONS[r] for r in FAILING_REASONS if g.clock_reasons.get(r)]
        if active:
            problems.append(f"{name}: clocks held back by {', '.join(active)}")
        soft = [WARNING_REASONS[r] for r in WARNING_REASONS if g.clock_reasons.get(r)]
        if soft:
            warnings.append(f"{name}: {', '.join(soft)} active")
        if g.temperature_c is not None and g.temperature_c > max_t:
            problems.append(f"{name}: temperature {g.temperature_c:g} C above the maximum {max_t:g} C")
        if g.temperature_slowdown_c is not None and g.temperature_slowdown_c <= 0:
            warnings.append(f"{name}: its slowdown temperature limit is not applicable ({g.temperature_slowdown_c:g} C)")
    measured = {"gpus": _gpus_measured(inputs), "max_temperature_c": max_t}
    if len(na) == len(inputs.gpus):
        return Verdict(True, "", "", "", not_applicable="; ".join(na), measured=measured)
    return Verdict(not problems, f"no hardware, thermal or power-brake slowdown and every GPU at or below {max_t:g} C",
                   "; ".join(problems) or "none (measured: " + ", ".join(
                       f"GPU {g.position} {g.temperature_c:g} C" for g in inputs.gpus if g.temperature_c is not None)
                   + ")",
                   "check the cooling (fans, airflow, inlet temperature) and the power supply; hw_slowdown with a cool "
                   "GPU points at the power brake (PSU / power cable); nvidia-smi -q -d PERFORMANCE shows the reasons",
                   warnings=warnings + na, measured=measured)


def evaluate_presence(inputs: HealthInputs, thresholds: dict[str, Any]) -> Verdict:
    if inputs.bus is None:
        failed = _no_smi(inputs)
        if failed and inputs.log is None:
            return failed
        return Verdict(True, "", "", "", not_applicable=f"the PCI bus could not be read: {inputs.bus_error or 'no lspci'}")
    seen = {bus_key(g.pci_bus_id) for g in inputs.gpus}
    missing = [d for d in inputs.bus if bus_key(d.address) not in seen]
    measured = {"gpus_on_bus": len(inputs.bus), "gpus_in_nvidia_smi": len(inputs.gpus),
                "missing_from_nvidia_smi": [d.address for d in missing]}
    names = "; ".join(f"the GPU at PCI {d.address} (10de:{d.device}, class {d.pci_class})" for d in missing)
    smi = f"{len(inputs.gpus)} in nvidia-smi" if inputs.log else f"none in nvidia-smi ({inputs.smi_error})"
    return Verdict(not missing, f"every NVIDIA GPU on the PCI bus ({len(inputs.bus)}, {inputs.bus_source}) listed by "
                   "nvidia-smi", smi + (f"; missing: {names}" if missing else ""),
                   "a GPU on the bus that the driver does not list has usually fallen off the bus (Xid 79): drain the "
                   "node, reboot it (a cold power cycle), check the kernel log (journalctl -k | grep NVRM) and RMA "
                   "the GPU if it recurs", measured=measured)


def evaluate_persistence(inputs: HealthInputs, thresholds: dict[str, Any]) -> Verdict:
    want_mode, want_daemon = thresholds.get("persistence_mode"), thresholds.get("persistenced")
    if want_mode is None and want_daemon is None:
        return Verdict(True, "", "", "", not_applicable="the desired state does not ask for persistence mode (set "
                       "health.persistence_mode / health.persistenced under [tool.gpu-conformance] to check it)")
    problems: list[str] = []
    if want_mode is not None:
        failed = _no_smi(inputs)
        if failed:
            return failed
        for g in inputs.gpus:
            if g.persistence_mode is None:
                continue
            if g.persistence_mode.lower() != str(want_mode).lower():
                problems.append(f"{gpu_name(g)}: persistence mode {g.persistence_mode}")
    if want_daemon is not None and inputs.persistenced is not None and inputs.persistenced != want_daemon:
        problems.append(f"nvidia-persistenced {'is not' if want_daemon else 'is'} running")
    measured = {"persistence_mode": [g.persistence_mode for g in inputs.gpus], "persistenced": inputs.persistenced}
    want = ", ".join(w for w in (want_mode and f"persistence mode {want_mode}",
                                 want_daemon is not None and f"nvidia-persistenced {'running' if want_daemon else 'stopped'}")
                     if w)
    return Verdict(not problems, want, "; ".join(problems) or "as desired",
                   "enable the daemon (systemctl enable --now nvidia-persistenced; NVIDIA deprecates nvidia-smi -pm 1 "
                   "in its favour) or change the desired state", measured=measured)


EVALUATORS = {"xid": evaluate_xids, "memory": evaluate_memory, "pcie": evaluate_pcie,
              "throttling": evaluate_throttling, "presence": evaluate_presence, "persistence": evaluate_persistence}


# ------------------------------------------------------------------------------------------------ DCGM
def scrape_dcgm(ctx: Any, node: str) -> tuple[str | None, str | None]:
    """(metrics text, None) from the node's DCGM exporter, or (None, why not): the metrics check's scrape, shared."""
    if ctx.kube is None:
        return None, "no cluster (--host-only)"
    try:
        return dcgm_scrape(ctx, node)[1], None
    except DcgmUnavailable as exc:
        return None, exc.why


# ------------------------------------------------------------------------------------------------ checks
def check(ctx: Any, node: str, name: str) -> Finding:
    """The health check `name` (a key of EVALUATORS) of `node` as a Finding; NotApplicable when it does not apply."""
    from provision import expect

    inputs = expect.health(ctx, node)
    if inputs.host_off and (name != "xid" or not inputs.dcgm_xids):
        from provision.context import NoHostAccess

        raise NoHostAccess(inputs.host_off)
    verdict = EVALUATORS[name](inputs, ctx.settings.health)
    if verdict.not_applicable:
        raise NotApplicable(f"not applicable: {verdict.not_applicable}")
    # The values go to summary.json for every node; the report attaches them only where a check failed (six
    # attachments per node at 1000 nodes would be 6000 files).
    att = {} if verdict.ok else {"health measurements": _json(verdict.measured)}
    if not verdict.ok and inputs.smi_error:
        att["nvidia-smi -q -x"] = inputs.smi_error
    return Finding(verdict.ok, verdict.message(), att, measured=verdict.measured)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1, default=str)
