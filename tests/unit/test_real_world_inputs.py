"""Issue 14: verdicts on real-world inputs (samples in tests/unit/data/real-world/, sources in its SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.observe.nvidia_smi import classify_failure

DATA = Path(__file__).parent / "data" / "real-world"


def sample(name: str) -> str:
    return (DATA / name).read_text()


# ------------------------------------------------------------------------------------ nvidia-smi: NVML mismatch
@pytest.mark.parametrize(
    ("name", "library", "kernel"),
    [
        ("nvidia-smi/nvml-mismatch-570.124.txt", "570.124", None),
        ("nvidia-smi/nvml-mismatch-550.144.txt", "550.144", None),
        ("nvidia-smi/nvml-mismatch-no-version.txt", None, None),
    ],
)
def test_nvml_version_mismatch_says_what_it_is(name: str, library: str | None, kernel: str | None) -> None:
    finding = classify_failure(18, sample(name), "")
    assert finding is not None
    assert finding.kind == "version-mismatch"
    assert "Driver/library version mismatch" in finding.message
    assert "kernel module" in finding.message and "unknown error" not in finding.message
    if library:
        assert f"user-space NVML library {library}" in finding.message
    else:
        assert "NVML library" not in finding.message.split("versions")[-1]
    assert "reboot" in finding.remediation.lower() and "modprobe nvidia" in finding.remediation
    assert "reinstall matching driver packages" in finding.remediation
    assert finding.message.count(f"(exit {finding.exit_code})") == 1


@pytest.mark.parametrize(
    ("name", "library", "kernel"),
    [
        ("nvidia-smi/nvrm-api-mismatch-syslog.txt", "535.54.03", "530.30.02"),
        ("nvidia-smi/nvrm-api-mismatch-dmesg.txt", "595.84", "595.80"),
    ],
)
def test_nvml_version_mismatch_names_both_versions_when_the_kernel_log_is_given(
    name: str, library: str, kernel: str
) -> None:
    out = sample("nvidia-smi/nvml-mismatch-no-version.txt")
    finding = classify_failure(18, out, sample(name))
    assert finding is not None and finding.kind == "version-mismatch"
    assert f"user-space NVML library {library}, kernel module {kernel}" in finding.message


def test_nvml_mismatch_is_recognised_by_its_text_whatever_the_exit_code() -> None:
    finding = classify_failure(255, sample("nvidia-smi/nvml-mismatch-570.124.txt"), "")
    assert finding is not None and finding.kind == "version-mismatch"


# ------------------------------------------------------------------------------------ nvidia-smi: no devices
def test_no_devices_fix_names_the_causes_seen_in_the_field() -> None:
    finding = classify_failure(6, "No devices were found\n", "")
    assert finding is not None and finding.kind == "no-devices"
    for cause in ("RmInitAdapter failed", "Above 4G Decoding", "Resizable BAR",
                  "This PCI I/O region assigned to your NVIDIA device is invalid", "64-bit MMIO"):
        assert cause in finding.remediation
