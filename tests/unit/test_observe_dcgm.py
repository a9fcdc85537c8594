from __future__ import annotations

import pytest

from provision.observe.dcgm import DcgmParseError, missing_uuids, parse_metrics, sample_lines
from tests.unit.observe_fixtures import fixture_params, fixture_text

EKS = "real-world/dcgm/8xh100-eks-sampled.txt"
NODE1 = "real-world/dcgm/8xh100-gpu-node-1-sampled.txt"
DO = "real-world/dcgm/h100-digitalocean-fragment.txt"

EKS_UUIDS = [
    "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6",
    "GPU-289275cb-a907-ab73-9a95-058ae119f62d",
    "GPU-f814846a-9bbe-469e-97c3-d037d67c3c32",
    "GPU-3cc59718-d7df-49ac-07a3-a6cedfe263c6",
    "GPU-71fc8f21-7800-5bb9-53ad-7e6fc93ef15f",
    "GPU-dee5c16e-1d0a-cec8-a9ea-f878a4be1b3d",
    "GPU-ca1b8386-093b-60cc-349d-c4a38b9124c0",
    "GPU-b60b817a-a091-c492-4211-92b276d697e6",
]


def test_eks_scrape_per_gpu() -> None:
    scrape = parse_metrics(fixture_text(EKS))
    assert scrape.uuids == EKS_UUIDS
    assert scrape.hosts == frozenset({"ip-100-64-171-120.ec2.internal"})
    assert scrape.sample_count == 30
    assert scrape.samples_without_uuid == 0
    gpu0 = scrape.gpus[EKS_UUIDS[0]]
    assert gpu0.gpu == "0"
    assert gpu0.device == "nvidia0"
    assert gpu0.pci_bus_id == "00000000:53:00.0"
    assert gpu0.model_name == "NVIDIA H100 80GB HBM3"
    assert gpu0.host == "ip-100-64-171-120.ec2.internal"
    assert gpu0.driver_version == "580.105.08"
    assert gpu0.metrics == frozenset(
        {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL"}
    )
    assert gpu0.values["DCGM_FI_DEV_GPU_TEMP"] == 26
    assert gpu0.values["DCGM_FI_DEV_POWER_USAGE"] == pytest.approx(67.268)
    assert gpu0.pods == frozenset()
    assert scrape.gpus[EKS_UUIDS[6]].pods == frozenset({"dynamo-workload/vllm-agg-0-vllmdecodeworker-5fljt"})
    # the sample was cut at 30 lines: GPUs 6 and 7 have no MEM_COPY_UTIL
    assert scrape.gpus_without("DCGM_FI_DEV_MEM_COPY_UTIL") == EKS_UUIDS[6:]
    assert scrape.gpus_without("DCGM_FI_DEV_FB_USED") == EKS_UUIDS


def test_node1_scrape_host_and_pod_labels() -> None:
    scrape = parse_metrics(fixture_text(NODE1))
    assert len(scrape.gpus) == 8
    assert scrape.hosts == frozenset({"gpu-node-1"})
    first = scrape.gpus["GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"]
    assert first.pods == frozenset({"dynamo-workload/vllm-agg-0-vllmdecodeworker-s65j5"})
    assert first.values["DCGM_FI_DEV_POWER_USAGE"] == pytest.approx(113.611)
    assert {gpu.driver_version for gpu in scrape.gpus.values()} == {"580.105.08"}


def test_lowercase_hostname_label_is_accepted() -> None:
    text = fixture_text(NODE1).replace('Hostname="gpu-node-1"', 'hostname="gpu-node-1"')
    scrape = parse_metrics(text)
    assert scrape.hosts == frozenset({"gpu-node-1"})
    assert {gpu.host for gpu in scrape.gpus.values()} == {"gpu-node-1"}


def test_digitalocean_fragment_elision_is_rejected_and_the_rest_parses() -> None:
    text = fixture_text(DO)
    with pytest.raises(DcgmParseError, match=r"invalid metric name"):
        parse_metrics(text)
    trimmed = "\n".join(line for line in text.splitlines() if line != "[...]") + "\n"
    scrape = parse_metrics(trimmed)
    (gpu,) = scrape.gpus.values()
    assert gpu.uuid == "GPU-927d7444-b45a-7c49-8402-5e686e46a026"
    assert gpu.host == "6d6d7dc3ce21"
    assert gpu.driver_version == "535.183.01"
    assert gpu.values == {"DCGM_FI_DEV_SM_CLOCK": 345.0, "DCGM_FI_DEV_MEM_CLOCK": 2619.0}


@pytest.mark.parametrize("relative", fixture_params("real-world/dcgm", "*sampled.txt"))
def test_every_sampled_scrape_has_eight_h100s(relative: str) -> None:
    scrape = parse_metrics(fixture_text(relative))
    assert len(scrape.gpus) == 8
    assert {gpu.model_name for gpu in scrape.gpus.values()} == {"NVIDIA H100 80GB HBM3"}
    assert sorted(int(gpu.gpu or -1) for gpu in scrape.gpus.values()) == list(range(8))


def test_mig_samples_and_samples_without_uuid() -> None:
    text = (
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",device="nvidia0",modelName="NVIDIA A100-SXM4-40GB",'
        'GPU_I_PROFILE="1g.5gb",GPU_I_ID="7",hostname="n1",DCGM_FI_DRIVER_VERSION="535.54.03"} 5\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",device="nvidia0",modelName="NVIDIA A100-SXM4-40GB",'
        'GPU_I_PROFILE="1g.5gb",GPU_I_ID="8",hostname="n1",DCGM_FI_DRIVER_VERSION="535.54.03"} 7\n'
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-a",hostname="n1"} 123456\n'
        "# TYPE go_goroutines gauge\n"
        "go_goroutines 42\n"
    )
    scrape = parse_metrics(text)
    gpu = scrape.gpus["GPU-a"]
    assert gpu.mig_instances == frozenset({"7", "8"})
    assert "DCGM_FI_DEV_GPU_UTIL" not in gpu.values  # only per-instance samples
    assert gpu.values == {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 123456.0}
    assert gpu.metrics == frozenset({"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"})
    assert scrape.samples_without_uuid == 1
    assert scrape.sample_count == 4
    assert "go_goroutines" in scrape.metric_names


def test_empty_scrape() -> None:
    scrape = parse_metrics("")
    assert scrape.gpus == {}
    assert scrape.sample_count == 0


@pytest.mark.parametrize(
    "text",
    ['DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID=GPU-a} 30\n', "DCGM_FI_DEV_GPU_TEMP 3O\n", "<html>503</html>\n"],
)
def test_invalid_text_raises(text: str) -> None:
    with pytest.raises(DcgmParseError, match="not Prometheus text format"):
        parse_metrics(text)


def test_missing_uuids() -> None:
    scrape = parse_metrics(fixture_text(EKS))
    expected = ["GPU-00000000-dead-beef-0000-000000000000", *EKS_UUIDS, "GPU-00000000-dead-beef-0000-000000000000"]
    assert missing_uuids(scrape, expected) == ["GPU-00000000-dead-beef-0000-000000000000"]
    assert missing_uuids(scrape, EKS_UUIDS) == []
    assert missing_uuids(parse_metrics(""), EKS_UUIDS[:2]) == EKS_UUIDS[:2]


def test_sample_lines() -> None:
    text = fixture_text(DO)
    lines = sample_lines(text, 1)
    assert len(lines) == 1
    assert lines[0].startswith('DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-927d7444')
    assert sample_lines(text, 2)[1].startswith("DCGM_FI_DEV_MEM_CLOCK{")
    assert len(sample_lines(fixture_text(EKS), 100)) == 30
    assert sample_lines(text, 0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_lines(text, -1)
