"""What an Xid means and what to do about it, for the health check's messages.

Meanings are the descriptions of NVIDIA's Xid catalogue ("Analyzing Xid Errors with the Xid Catalog",
https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, Ampere and newer; older GPUs:
https://docs.nvidia.com/deploy/xid-errors/index.html). The actions follow the catalogue's resolution buckets
(RESTART_APP, RESET_GPU, RESTART_BM = reboot the machine, CONTACT_SUPPORT = RMA) in an operator's words, and for
the memory Xids NVIDIA's GPU memory error management guide
(https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/): a contained error needs a GPU reset at the next
service window, an uncontained one a reset now, a remapping failure a replacement.

Checked on 2026-12-01 against the catalogue's spreadsheet (sheet "Catalog": code, mnemonic, description,
immediate and investigatory resolution bucket) as mirrored, generated from the page on 2025-10-29, in
leptonai/gpud components/accelerator/nvidia/xid/catalog_generated.go (read with the fetch tool; facts only, no
code taken): every row below carries the catalogue's mnemonic, description and immediate bucket. Where the
catalogue's immediate bucket is IGNORE or RESTART_APP but the node should still be drained (63: the driver's own
line says "reset gpu to activate"; 94: the memory guide's reset at the next service window), the action says both.
Also checked against the drivers' own lines in tests/unit/data/health (79 "GPU has fallen off the bus", 63 "Row
Remapper: New row marked for remapping, reset gpu to activate", 120 "GSP kernel exception", 154 "GPU recovery
action changed") and NVIDIA's Health Validation Xid checks ("GPU Xid 48 (double bit ECC error)": drain ->
reset_gpu).
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
    mnemonic: str = ""
    bucket: str = ""       # the catalogue's immediate resolution bucket


_ENTRIES = (
    Xid(8, "GPU stopped processing", "restart the application; contact NVIDIA support if it recurs",
        "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "RESTART_APP"),
    Xid(13, "Graphics Engine Exception", "usually the application (out-of-range access): restart it; if it recurs "
        "on one GPU only, run DCGM diagnostics (dcgmi diag -r 3)", "ROBUST_CHANNEL_GR_EXCEPTION", "RESTART_APP"),
    Xid(31, "GPU memory page fault", "usually the application (illegal address): check and restart it",
        "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "RESTART_APP"),
    Xid(43, "GPU stopped processing (the application's channel was reset)", "nothing to do on the node; contact "
        "NVIDIA support if it recurs", "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "IGNORE"),
    Xid(45, "Preemptive cleanup, due to previous errors", "follows another Xid: act on that one",
        "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "WORKFLOW_XID_45"),
    Xid(48, "Double Bit ECC Error", f"{DRAIN} reset the GPU (nvidia-smi -r) so the bad row is remapped; RMA the GPU "
        "if it recurs", "ROBUST_CHANNEL_GPU_ECC_DBE", "WORKFLOW_XID_48"),
    Xid(61, "Internal micro-controller breakpoint/warning (unused on Ampere and newer)", f"{DRAIN} reset the GPU; "
        "RMA if it recurs", "PMU_BREAKPOINT", "CONTACT_SUPPORT"),
    Xid(62, "Internal micro-controller halt", f"{DRAIN} reset the GPU; contact NVIDIA support (RMA) if it recurs",
        "PMU_HALT_ERROR", "RESET_GPU"),
    Xid(63, "GPU memory remapping event", f"{DRAIN} reset the GPU to apply the remap (the driver: \"reset gpu to "
        "activate\")", "INFOROM_DRAM_RETIREMENT_EVENT", "IGNORE"),
    Xid(64, "GPU memory remapping failure", f"{DRAIN} reset the GPU; if it recurs the GPU has no spare rows left: "
        "replace it (RMA)", "INFOROM_DRAM_RETIREMENT_FAILURE", "RESET_GPU"),
    Xid(74, "NVLINK Error", f"{DRAIN} reset the GPU (nvidia-smi -r); check the NVLink connections and RMA if it "
        "recurs", "NVLINK_ERROR", "WORKFLOW_NVLINK_ERR"),
    Xid(79, "GPU has fallen off the bus", f"{DRAIN} reboot the node (a cold power cycle); check the GPU's seating, "
        "riser and power; RMA the GPU if it recurs", "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "RESTART_BM"),
    Xid(92, "High single-bit ECC error rate", "nothing to do now; contact NVIDIA support (RMA) if it recurs",
        "EXCESSIVE_SBE_INTERRUPTS", "IGNORE"),
    Xid(94, "Contained memory error", f"restart the affected application; {DRAIN} reset the GPU at the next service "
        "window so the row is remapped; RMA if it recurs", "ROBUST_CHANNEL_CONTAINED_ERROR", "RESTART_APP"),
    Xid(95, "Uncontained memory error", f"{DRAIN} reset the GPU now (every workload on it was affected); RMA if it "
        "recurs", "ROBUST_CHANNEL_UNCONTAINED_ERROR", "RESET_GPU"),
    Xid(119, "GSP RPC Timeout", f"{DRAIN} reset the GPU (or reboot the node); update the driver if it recurs",
        "GSP_RPC_TIMEOUT", "RESET_GPU"),
    Xid(120, "GSP Error", f"{DRAIN} reset the GPU (or reboot the node); update the driver if it recurs",
        "GSP_ERROR", "RESET_GPU"),
    Xid(154, "GPU Recovery Action Changed", "do what the driver's message asks (GPU reset or node reboot required)",
        "GPU_RECOVERY_ACTION_CHANGED", "XID_154"),
)
CATALOG: dict[int, Xid] = {x.code: x for x in _ENTRIES}


def describe(code: int) -> Xid:
    return CATALOG.get(code) or Xid(code, "see NVIDIA's Xid catalogue", f"look up Xid {code} in {CATALOG_URL}")
