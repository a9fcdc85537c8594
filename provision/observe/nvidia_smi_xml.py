"""Pure parser for ``nvidia-smi -q -x`` (the XML form of ``nvidia-smi -q``; no I/O).

Parsed with the standard library's ElementTree (never with regular expressions). What each GPU element holds
differs by driver generation, and all of it is read here as found in real outputs:

* ECC: ``ecc_errors/volatile`` has ``dram_uncorrectable`` + ``sram_uncorrectable_parity`` +
  ``sram_uncorrectable_secded`` on R580 (H200 capture), ``sram_uncorrectable`` + ``dram_uncorrectable`` on R515
  (Tesla T4), and ``double_bit/total`` on R418 (Quadro P400).
* Clock event reasons: ``clocks_event_reasons/clocks_event_reason_*`` (R535 and later), or the older
  ``clocks_throttle_reasons/clocks_throttle_reason_*``; both are read into one mapping by reason name.
* Memory faults: GPUs since Ampere remap rows (``remapped_rows``), older ones retire pages (``retired_pages``);
  the scheme a GPU does not use is ``N/A`` (the H200's retired_pages, the T4's remapped_rows).
* ``N/A``, ``[N/A]``, ``Not Supported``, ``Unknown Error``... are "no value" (None), never an error. Temperature
  limits can be negative on a real H200 (``gpu_temp_max_tlimit_threshold`` -8 C: a T.Limit offset, not a
  temperature): such a value is kept as measured; it is up to the check to say it does not apply.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

__all__ = ["SmiXmlError", "SmiXmlGpu", "SmiXmlLog", "is_no_value", "parse"]

_NO_VALUE = frozenset({"n/a", "not supported", "unknown error", "insufficient permissions", "not available",
                       "not found", "none", ""})
_NUMBER = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*([A-Za-z/%()]*)")
_END = "</nvidia_smi_log>"  # whatever a wrapper printed after the log (a capture's "rc=0") is not XML
REASON_PREFIXES = ("clocks_event_reason_", "clocks_throttle_reason_")


class SmiXmlError(ValueError):
    """Text that is not an nvidia-smi XML log; the message says what was wrong."""


def is_no_value(text: str | None) -> bool:
    if text is None:
        return True
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        return True
    return t.lower() in _NO_VALUE


def _text(el: ET.Element | None, path: str) -> str | None:
    if el is None:
        return None
    node = el.find(path)
    if node is None or node.text is None:
        return None
    value = node.text.strip()
    return None if is_no_value(value) else value


def _number(el: ET.Element | None, path: str) -> float | None:
    value = _text(el, path)
    if value is None:
        return None
    m = _NUMBER.match(value)
    return float(m.group(1)) if m else None


def _int(el: ET.Element | None, path: str) -> int | None:
    v = _number(el, path)
    return None if v is None else int(v)


def _yes(el: ET.Element | None, path: str) -> bool | None:
    value = _text(el, path)
    if value is None:
        return None
    return value.lower() in ("yes", "true", "active", "enabled")


def _sum(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class SmiXmlGpu:
    """One ``<gpu>`` of the log; None where the driver printed N/A (or the element does not exist)."""

    position: int                      # order in the log (nvidia-smi's index when no GPU is hidden)
    pci_bus_id: str
    uuid: str | None = None
    product_name: str | None = None
    minor_number: int | None = None
    persistence_mode: str | None = None
    performance_state: str | None = None
    ecc_mode: str | None = None
    ecc_uncorrectable_volatile: int | None = None   # double-bit (DBE) / uncorrectable errors since the driver loaded
    ecc_correctable_volatile: int | None = None
    retired_pages_sbe: int | None = None
    retired_pages_dbe: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    pcie_replays: int | None = None
    pcie_replay_rollovers: int | None = None
    clock_reasons: dict[str, bool] = field(default_factory=dict)  # reason (hw_slowdown, gpu_idle, ...) -> active
    temperature_c: float | None = None
    temperature_slowdown_c: float | None = None     # the GPU's own slowdown threshold (older drivers)
    temperature_shutdown_c: float | None = None
    power_draw_w: float | None = None

    def measured(self) -> dict[str, object]:
        """The values a nightly job graphs (summary.json ``health``), None where not applicable."""
        return {
            "position": self.position, "uuid": self.uuid, "pci_bus_id": self.pci_bus_id,
            "temperature_c": self.temperature_c, "power_draw_w": self.power_draw_w,
            "ecc_uncorrectable_volatile": self.ecc_uncorrectable_volatile,
            "ecc_correctable_volatile": self.ecc_correctable_volatile,
            "remapped_rows_pending": self.remapped_rows_pending, "remapped_rows_failure": self.remapped_rows_failure,
            "remapped_rows_uncorrectable": self.remapped_rows_uncorrectable,
            "retired_pages_sbe": self.retired_pages_sbe, "retired_pages_dbe": self.retired_pages_dbe,
            "retired_pages_pending": self.retired_pages_pending,
            "pcie_gen": [self.pcie_gen_current, self.pcie_gen_max],
            "pcie_width": [self.pcie_width_current, self.pcie_width_max],
            "pcie_replays": self.pcie_replays,
            "clock_reasons_active": sorted(r for r, on in self.clock_reasons.items() if on),
            "persistence_mode": self.persistence_mode,
        }


@dataclass(frozen=True)
class SmiXmlLog:
    driver_version: str | None
    attached_gpus: int | None
    gpus: tuple[SmiXmlGpu, ...]


def _ecc(gpu: ET.Element) -> tuple[int | None, int | None]:
    vol = gpu.find("ecc_errors/volatile")
    if vol is None:
        return None, None
    if vol.find("double_bit") is not None:  # R418 and older: single_bit / double_bit with a total each
        return _int(vol, "double_bit/total"), _int(vol, "single_bit/total")
    unc = _sum([_int(vol, name) for name in ("dram_uncorrectable", "sram_uncorrectable", "sram_uncorrectable_parity",
                                             "sram_uncorrectable_secded")])
    corr = _sum([_int(vol, name) for name in ("dram_correctable", "sram_correctable")])
    return unc, corr


def _reasons(gpu: ET.Element) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for group in ("clocks_event_reasons", "clocks_throttle_reasons"):
        el = gpu.find(group)
        if el is None:
            continue
        for child in el:
            name = child.tag
            for prefix in REASON_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            value = (child.text or "").strip()
            if is_no_value(value):
                continue
            out.setdefault(name, value.lower() == "active")
    return out


def _gpu(position: int, el: ET.Element) -> SmiXmlGpu:
    bus = el.get("id") or _text(el, "pci/pci_bus_id")
    if not bus:
        raise SmiXmlError(f"<gpu> number {position} has no id attribute and no pci/pci_bus_id")
    unc, corr = _ecc(el)
    link = el.find("pci/pci_gpu_link_info")
    temp = el.find("temperature")
    power = _number(el, "gpu_power_readings/power_draw")
    if power is None:
        power = _number(el, "gpu_power_readings/instant_power_draw")
    if power is None:
        power = _number(el, "power_readings/power_draw")
    rows = el.find("remapped_rows")
    return SmiXmlGpu(
        position=position, pci_bus_id=bus, uuid=_text(el, "uuid"), product_name=_text(el, "product_name"),
        minor_number=_int(el, "minor_number"), persistence_mode=_text(el, "persistence_mode"),
        performance_state=_text(el, "performance_state"), ecc_mode=_text(el, "ecc_mode/current_ecc"),
        ecc_uncorrectable_volatile=unc, ecc_correctable_volatile=corr,
        retired_pages_sbe=_int(el, "retired_pages/multiple_single_bit_retirement/retired_count"),
        retired_pages_dbe=_int(el, "retired_pages/double_bit_retirement/retired_count"),
        retired_pages_pending=_yes(el, "retired_pages/pending_retirement"),
        remapped_rows_correctable=_int(rows, "remapped_row_corr"),
        remapped_rows_uncorrectable=_int(rows, "remapped_row_unc"),
        remapped_rows_pending=_yes(rows, "remapped_row_pending"),
        remapped_rows_failure=_yes(rows, "remapped_row_failure"),
        pcie_gen_current=_int(link, "pcie_gen/current_link_gen"), pcie_gen_max=_int(link, "pcie_gen/max_link_gen"),
        pcie_width_current=_int(link, "link_widths/current_link_width"),
        pcie_width_max=_int(link, "link_widths/max_link_width"),
        pcie_replays=_int(el, "pci/replay_counter"), pcie_replay_rollovers=_int(el, "pci/replay_rollover_counter"),
        clock_reasons=_reasons(el), temperature_c=_number(temp, "gpu_temp"),
        temperature_slowdown_c=_number(temp, "gpu_temp_slow_threshold"),
        temperature_shutdown_c=_number(temp, "gpu_temp_max_threshold"), power_draw_w=power,
    )


def parse(text: str) -> SmiXmlLog:
    """Parse the output of ``nvidia-smi -q -x``. Raises SmiXmlError for text that is not such a log."""
    start = text.find("<?xml")
    if start < 0:
        start = text.find("<nvidia_smi_log")
    if start < 0:
        head = text.strip().splitlines()[0][:200] if text.strip() else "(empty output)"
        raise SmiXmlError(f"not nvidia-smi XML (no <nvidia_smi_log>): {head!r}")
    end = text.rfind(_END)
    body = text[start:end + len(_END)] if end > start else text[start:]
    try:
        root = ET.fromstring(body.strip())
    except ET.ParseError as exc:
        raise SmiXmlError(f"nvidia-smi -q -x printed XML that does not parse: {exc}") from exc
    if root.tag != "nvidia_smi_log":
        raise SmiXmlError(f"not nvidia-smi XML: the root element is <{root.tag}>, not <nvidia_smi_log>")
    gpus = tuple(_gpu(i, el) for i, el in enumerate(root.findall("gpu")))
    return SmiXmlLog(driver_version=_text(root, "driver_version"), attached_gpus=_int(root, "attached_gpus"),
                     gpus=gpus)
