"""What an Xid means and what to do about it, for the health check's messages.

Meanings are the descriptions of NVIDIA's Xid catalogue ("Analyzing Xid Errors with the Xid Catalog",
https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, Ampere and newer; older GPUs:
https://docs.nvidia.com/deploy/xid-errors/index.html). The actions follow the catalogue's resolution buckets
(RESTART_APP, RESET_GPU, RESTART_BM = reboot the machine, CONTACT_SUPPORT = RMA) in an operator's words, and for
the memory Xids NVIDIA's GPU memory error management guide
(https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/): a contained error needs a GPU reset at the next
service window, an uncontained one a reset now, a remapping failure a replacement.

Checked against what the search tool could show of those pages (the catalogue's rows 1-13, NVIDIA's Health
Validation Xid checks: "GPU Xid 46 (GPU stopped processing)", "GPU Xid 48 (double bit ECC error)", drain ->
reset_gpu) and against the drivers' own lines in tests/unit/data/health (79 "GPU has fallen off the bus", 63 "Row
Remapper: New row marked for remapping, reset gpu to activate", 120 "GSP kernel exception", 154 "GPU recovery action
changed"); the other descriptions are the catalogue's as remembered, to be re-read against the page.
"""

from __future__ import annotations

from dataclasses import dataclass

CATALOG_URL = "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"
DRAIN = "drain the node (kubectl drain), then"


@dataclass(frozen=True)
class Xid:
    code: int
    meaning: str
    action: str


_ENTRIES = (
    Xid(8, "GPU stopped processing", "restart the application; contact NVIDIA support if it recurs"),
    Xid(13, "Graphics Engine Exception", "usually the application (out-of-range access): restart it; if it recurs "
        "on one GPU only, run DCGM diagnostics (dcgmi diag -r 3)"),
    Xid(31, "GPU memory page fault", "usually the application (illegal address): check and restart it"),
    Xid(43, "GPU stopped processing (the application's channel was reset)", "restart the application"),
    Xid(45, "Preemptive cleanup, due to previous errors", "follows another Xid: act on that one"),
    Xid(48, "DBE (Double Bit Error) ECC Error", f"{DRAIN} reset the GPU (nvidia-smi -r) so the bad row is remapped; "
        "RMA the GPU if it recurs"),
    Xid(61, "Internal micro-controller breakpoint/warning", f"{DRAIN} reset the GPU; RMA if it recurs"),
    Xid(62, "Internal micro-controller halt", f"{DRAIN} reset the GPU; RMA if it recurs"),
    Xid(63, "ECC page retirement or row remapping recording event", f"{DRAIN} reset the GPU to apply the remap"),
    Xid(64, "ECC page retirement or row remapper recording failure", f"{DRAIN} reset the GPU; if it recurs the GPU "
        "has no spare rows left: replace it (RMA)"),
    Xid(74, "NVLink Error", f"{DRAIN} reset the GPU (nvidia-smi -r); check the NVLink connections and RMA if it "
        "recurs"),
    Xid(79, "GPU has fallen off the bus", f"{DRAIN} reboot the node (a cold power cycle); check the GPU's seating, "
            "riser and power; RMA the GPU if it recurs"),
    Xid(92, "High single-bit ECC error rate", f"{DRAIN} reset the GPU; RMA if the rate stays high"),
    Xid(94, "Contained ECC error", f"{DRAIN} reset the GPU at the next service window so the row is remapped; "
        "RMA if it recurs"),
    Xid(95, "Uncontained ECC error", f"{DRAIN} reset the GPU now (every workload on it was affected); RMA if it "
        "recurs"),
    Xid(119, "GSP RPC Timeout", f"{DRAIN} reset the GPU (or reboot the node); update the driver if it recurs"),
    Xid(120, "GSP Error", f"{DRAIN} reset the GPU (or reboot the node); update the driver if it recurs"),
    Xid(154, "GPU Recovery Action Changed", "do what the driver's message asks (GPU reset or node reboot required)"),
)
CATALOG: dict[int, Xid] = {x.code: x for x in _ENTRIES}


def describe(code: int) -> Xid:
    return CATALOG.get(code) or Xid(code, "see NVIDIA's Xid catalogue", f"look up Xid {code} in {CATALOG_URL}")
