from __future__ import annotations

import pytest
from packaging.version import Version

from provision.observe.nvidia_smi import (
    QUERY_FIELDS,
    DriverVersion,
    DriverVersionError,
    Gpu,
    ListedGpu,
    MigDevice,
    NvidiaSmiParseError,
    classify_failure,
    compute_capability_below,
    driver_at_least,
    lowest_compute_capability,
    parse_driver_version,
    parse_list,
    parse_mig_devices,
    parse_query_csv,
    query_argv,
)
from tests.unit.observe_fixtures import fixture_params, fixture_text

H200_UUID = "GPU-1f187230-6554-dae7-fc26-03b85689b4d7"
NOHEADER_FIELDS = ("index", "name", "uuid", "driver_version", "memory.total", "mig.mode.current")


def test_query_argv_is_the_one_query_form() -> None:
    assert query_argv() == [
        "nvidia-smi",
        "--query-gpu=index,name,uuid,driver_version,memory.total,mig.mode.current,compute_cap,pci.bus_id",
        "--format=csv,noheader,nounits",
    ]
    assert len(QUERY_FIELDS) == 8


# --- --query-gpu CSV: real captures -------------------------------------------------------------------------------


def test_h200_csv_with_header_and_units() -> None:
    gpus = parse_query_csv(fixture_text("nvidia-smi/h200/smi-query.csv"))
    assert gpus == [
        Gpu(
            index=0,
            name="NVIDIA H200",
            uuid=H200_UUID,
            driver_version="580.159.04",
            memory_total_mib=143771,
            mig_mode="Disabled",
            compute_cap="9.0",
            pci_bus_id="00000000:00:06.0",
        )
    ]


def test_h200_csv_noheader_nounits_with_its_field_list() -> None:
    gpus = parse_query_csv(fixture_text("nvidia-smi/h200/smi-query-noheader.csv"), fields=NOHEADER_FIELDS)
    assert gpus == [
        Gpu(0, "NVIDIA H200", H200_UUID, "580.159.04", 143771, "Disabled", compute_cap=None, pci_bus_id=None)
    ]


def test_noheader_csv_with_the_wrong_field_list_names_the_line() -> None:
    text = fixture_text("nvidia-smi/h200/smi-query-noheader.csv")
    with pytest.raises(NvidiaSmiParseError, match=r"^line 1: expected 8 fields \(index, name, .*\), got 6"):
        parse_query_csv(text)


def test_p100_csv_header_without_index_uses_row_position_and_na_is_none() -> None:
    gpus = parse_query_csv(fixture_text("real-world/nvidia-smi/p100-query.csv"))
    assert len(gpus) == 1
    gpu = gpus[0]
    assert (gpu.index, gpu.name, gpu.uuid) == (0, "Tesla P100-PCIE-16GB", "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6")
    # none of the Gpu fields beyond name/uuid was queried there
    assert (gpu.driver_version, gpu.memory_total_mib, gpu.mig_mode, gpu.compute_cap) == (None, None, None, None)


# --- --query-gpu CSV: edge cases ------------------------------------------------------------------------------------


def test_several_gpus_units_na_not_supported_and_blank_lines() -> None:
    text = (
        "\n"
        "0, NVIDIA GB10, GPU-b0ec33a0-2589-53de-953c-0713d37d0794, 580.95.05, [N/A], [N/A], 12.1, 0000000F:01:00.0\n"
        "\n"
        "1, NVIDIA GeForce RTX 3060, GPU-aaaa, 570.124.04, 12288 MiB, [Not Supported], 8.6, 00000000:01:00.0\r\n"
        "2, Tesla K80, GPU-bbbb, 418.67, 11441, N/A, 3.7, Not Supported\n"
        "   \n"
    )
    gpus = parse_query_csv(text)
    assert [g.index for g in gpus] == [0, 1, 2]
    assert gpus[0].name == "NVIDIA GB10"
    assert gpus[0].memory_total_mib is None  # unified memory: [N/A]
    assert gpus[0].mig_mode is None
    assert gpus[1].name == "NVIDIA GeForce RTX 3060"
    assert gpus[1].memory_total_mib == 12288
    assert gpus[1].mig_mode is None
    assert gpus[2].memory_total_mib == 11441
    assert gpus[2].mig_mode is None
    assert gpus[2].pci_bus_id is None
    assert gpus[2].compute_cap == "3.7"


def test_header_with_units_uses_header_names_in_any_order() -> None:
    text = "uuid, memory.total [MiB], name, index\nGPU-x, 81559 MiB, NVIDIA H100 80GB HBM3, 3\n"
    assert parse_query_csv(text) == [Gpu(index=3, name="NVIDIA H100 80GB HBM3", uuid="GPU-x", memory_total_mib=81559)]


def test_empty_output_is_no_gpus() -> None:
    assert parse_query_csv("") == []
    assert parse_query_csv("\n\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0, NVIDIA H200, GPU-a, 580.1, 1 MiB, Disabled, 9.0\n", r"line 1: expected 8 fields"),
        ("0, A, GPU-a, 580.1, 1, Disabled, 9.0, x\nbad\n", r"line 2: expected 8 fields .* got 1: 'bad'"),
        ("x, A, GPU-a, 580.1, 1, Disabled, 9.0, b\n", r"line 1: GPU index 'x' is not a non-negative integer"),
        ("0, A, GPU-a, 580.1, lots, Disabled, 9.0, b\n", r"line 1: memory.total 'lots' is not"),
        ("0, A, GPU-a, 580.1, 10 GiB, Disabled, 9.0, b\n", r"line 1: memory.total '10 GiB'"),
        ("0, A, [N/A], 580.1, 1, Disabled, 9.0, b\n", r"line 1: GPU UUID is missing"),
        ("\n\n0, , GPU-a, 580.1, 1, Disabled, 9.0, b\n", r"line 3: GPU name is missing"),
        ("index, driver_version\n0, 580.1\n", r"line 1: the query has no name column"),
    ],
)
def test_malformed_rows_raise_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(NvidiaSmiParseError, match=message):
        parse_query_csv(text)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(NvidiaSmiParseError, ValueError)


# --- nvidia-smi -L --------------------------------------------------------------------------------------------------

LIST_EXPECTATIONS = {
    "nvidia-smi/h200/smi-L.txt": (1, 0, ListedGpu(0, "NVIDIA H200", H200_UUID)),
    "real-world/nvidia-smi/8xa100-L.txt": (
        8,
        0,
        ListedGpu(0, "NVIDIA A100-SXM4-40GB", "GPU-4dd97325-7fe6-abf1-d6a9-ba746fe0fdab"),
    ),
    "real-world/nvidia-smi/8xa100-mig-mixed-L.txt": (
        8,
        16,
        ListedGpu(0, "NVIDIA A100-SXM4-40GB", "GPU-4dd97325-7fe6-abf1-d6a9-ba746fe0fdab"),
    ),
    "real-world/nvidia-smi/a100-mig-7x1g5gb-L-driver450.txt": (
        1,
        7,
        ListedGpu(0, "A100-SXM4-40GB", "GPU-4200ccc0-2667-d4cb-9137-f932c716232a"),
    ),
    "real-world/nvidia-smi/gb10-L.txt": (1, 0, ListedGpu(0, "NVIDIA GB10", "GPU-b0ec33a0-2589-53de-953c-0713d37d0794")),
    "real-world/nvidia-smi/h100-mig-all-1g10gb-L.txt": (
        1,
        7,
        ListedGpu(0, "NVIDIA H100 80GB HBM3", "GPU-b4895dbf-9350-2524-a89b-98161ddd9fe4"),
    ),
    "real-world/nvidia-smi/h100-mig-mixed-L.txt": (
        1,
        4,
        ListedGpu(0, "NVIDIA H100 80GB HBM3", "GPU-b4895dbf-9350-2524-a89b-98161ddd9fe4"),
    ),
}


@pytest.mark.parametrize("relative", sorted(LIST_EXPECTATIONS))
def test_list_counts_gpus_and_mig_devices_separately(relative: str) -> None:
    text = fixture_text(relative)
    gpu_count, mig_count, first = LIST_EXPECTATIONS[relative]
    gpus = parse_list(text)
    assert len(gpus) == gpu_count
    assert gpus[0] == first
    index, name, uuid = gpus[0]  # unpacks as (index, name, uuid)
    assert (index, name, uuid) == tuple(first)
    assert [g.index for g in gpus] == list(range(gpu_count))
    migs = parse_mig_devices(text)
    assert len(migs) == mig_count
    assert all(m.uuid.startswith("MIG-") for m in migs)


@pytest.mark.parametrize("relative", fixture_params("real-world/nvidia-smi", "*-L*.txt"))
def test_every_real_world_list_file_parses(relative: str) -> None:
    assert relative in LIST_EXPECTATIONS, f"add expectations for the new fixture {relative}"
    assert parse_list(fixture_text(relative))


def test_mixed_mig_devices_are_attached_to_their_gpu() -> None:
    migs = parse_mig_devices(fixture_text("real-world/nvidia-smi/8xa100-mig-mixed-L.txt"))
    per_gpu = {index: [m.profile for m in migs if m.gpu_index == index] for index in range(8)}
    assert per_gpu[0] == per_gpu[3] == []
    assert per_gpu[4] == ["1g.5gb"] * 7
    assert per_gpu[5] == ["2g.10gb"] * 3
    assert per_gpu[6] == ["3g.20gb"] * 2
    assert per_gpu[7] == ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]
    assert migs[-1] == MigDevice(7, "1g.5gb", 3, "MIG-2bcdbd01-44e6-5f68-ae6f-77448d2529f9")


def test_old_r450_mig_uuid_format() -> None:
    migs = parse_mig_devices(fixture_text("real-world/nvidia-smi/a100-mig-7x1g5gb-L-driver450.txt"))
    assert migs[3] == MigDevice(0, "1g.5gb", 3, "MIG-GPU-4200ccc0-2667-d4cb-9137-f932c716232a/10/0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("GPU 0: NVIDIA H200 (UUID: GPU-a)\nsomething else\n", r"line 2: not a 'GPU N: \.\.\.'"),
        ("  MIG 1g.5gb Device 0: (UUID: MIG-a)\n", r"line 1: MIG device before any GPU line"),
        ("No devices were found\n", r"line 1"),
    ],
)
def test_list_rejects_unknown_lines(text: str, message: str) -> None:
    with pytest.raises(NvidiaSmiParseError, match=message):
        parse_list(text)


# --- versions -------------------------------------------------------------------------------------------------------


def test_driver_versions_compare_as_versions() -> None:
    three = parse_driver_version("580.159.04")
    two = parse_driver_version("595.84")
    assert isinstance(three, Version)
    assert DriverVersion is Version
    assert three.major == 580
    assert two.major == 595
    assert three < two
    assert parse_driver_version("580.142") < three  # 142 < 159 numerically
    assert parse_driver_version("580.159.04") == parse_driver_version("580.159.4")
    assert parse_driver_version(" 570.133.20\n") == Version("570.133.20")


@pytest.mark.parametrize("bad", ["", "abc", "580.x", "v580.1", "580.1-beta", "580..1", "1.2.3.4.5"])
def test_bad_driver_versions_raise(bad: str) -> None:
    with pytest.raises(DriverVersionError, match="not an NVIDIA driver version"):
        parse_driver_version(bad)


@pytest.mark.parametrize(
    ("found", "minimum", "expected"),
    [
        ("580.159.04", 580, True),
        ("580.159.04", 581, False),
        ("595.84", "580.159.04", True),
        ("580.142", "580.159.04", False),
        ("580.159.04", "580.159.4", True),
        ("575.99", "580", False),
        ("580.0", "580", True),
    ],
)
def test_driver_at_least(found: str, minimum: str | int, expected: bool) -> None:
    assert driver_at_least(found, minimum) is expected


def test_driver_of_the_h200_capture_is_at_least_580() -> None:
    (gpu,) = parse_query_csv(fixture_text("nvidia-smi/h200/smi-query.csv"))
    assert gpu.driver_version is not None
    assert driver_at_least(gpu.driver_version, 580)
    assert not driver_at_least(gpu.driver_version, "595.84")


def test_compute_capability_below_uses_version_order() -> None:
    (h200,) = parse_query_csv(fixture_text("nvidia-smi/h200/smi-query.csv"))
    assert compute_capability_below([h200], "7.0") is False
    pascal = Gpu(1, "Tesla P100-PCIE-16GB", "GPU-p", compute_cap="6.0")
    blackwell = Gpu(2, "NVIDIA B200", "GPU-b", compute_cap="10.0")  # "10.0" < "7.0" as strings
    unknown = Gpu(3, "NVIDIA X", "GPU-u", compute_cap=None)
    assert compute_capability_below([h200, pascal], "7.0") is True
    assert compute_capability_below([blackwell, unknown], "7.0") is False
    assert compute_capability_below([Gpu(0, "V100", "GPU-v", compute_cap="7.0")], "7.0") is False
    assert compute_capability_below([], "7.0") is False
    with pytest.raises(NvidiaSmiParseError, match="compute capability 'x'"):
        compute_capability_below([Gpu(0, "A", "GPU-a", compute_cap="x")], "7.0")


# --- failures -------------------------------------------------------------------------------------------------------

DRIVER_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def test_success_is_no_finding() -> None:
    assert classify_failure(0, fixture_text("nvidia-smi/h200/smi-query-noheader.csv"), "") is None


@pytest.mark.parametrize(
    ("exit_code", "stdout", "stderr", "kind", "usable"),
    [
        (0, "No devices were found\n", "", "no-devices", False),
        (6, "No devices were found\n", "", "no-devices", False),
        (9, DRIVER_MESSAGE, "", "driver-not-loaded", False),
        (255, DRIVER_MESSAGE, "", "driver-not-loaded", False),
        (
            14,
            "0, NVIDIA H200, GPU-a, 580.159.04, 143771, Disabled\n",
            "WARNING: infoROM is corrupted at gpu 0\n",
            "inforom-warning",
            True,
        ),
        (127, "", "bash: line 1: nvidia-smi: command not found\n", "not-installed", False),
        (1, "", "sh: nvidia-smi: command not found", "not-installed", False),
        (15, "", "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.", "failed", False),
        (4, "", "Insufficient Permissions", "failed", False),
    ],
)
def test_classify_failure(exit_code: int, stdout: str, stderr: str, kind: str, usable: bool) -> None:
    finding = classify_failure(exit_code, stdout, stderr)
    assert finding is not None
    assert finding.kind == kind
    assert finding.exit_code == exit_code
    assert finding.output_usable is usable
    assert finding.message
    assert finding.remediation


def test_failure_messages_are_specific() -> None:
    lost = classify_failure(15, "", "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.")
    assert lost is not None
    assert lost.message == (
        "nvidia-smi failed with exit 15 (the GPU has fallen off the bus or has otherwise become inaccessible): "
        "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost."
    )
    driver = classify_failure(9, DRIVER_MESSAGE, "")
    assert driver is not None
    assert "couldn't communicate with the NVIDIA driver" in driver.message
    assert "modprobe nvidia" in driver.remediation
    unknown = classify_failure(42, "", "")
    assert unknown is not None
    assert unknown.message == "nvidia-smi failed with exit 42 (unknown error)"


def test_lowest_compute_capability_is_in_version_order() -> None:
    gpus = [Gpu(0, "B200", "GPU-b", compute_cap="10.0"), Gpu(1, "H200", "GPU-h", compute_cap="9.0"),
            Gpu(2, "X", "GPU-x", compute_cap=None)]
    assert lowest_compute_capability(gpus) == "9.0"   # as text "10.0" < "9.0"
    assert lowest_compute_capability([Gpu(0, "X", "GPU-x")]) is None
