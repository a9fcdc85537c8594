from __future__ import annotations

import json

import pytest
import yaml

from provision.observe.dcgm import parse_metrics
from provision.observe.gfd import (
    GfdLabelError,
    GfdLabels,
    driver_versions,
    expected_product_label,
    parse_labels,
    sanitise,
)
from provision.observe.nvidia_smi import parse_list, parse_mig_devices
from tests.unit.observe_fixtures import fixture_params, fixture_text

K8S = "real-world/k8s"


def labels_json(name: str) -> dict[str, str]:
    return json.loads(fixture_text(f"{K8S}/{name}"))


def describe_labels(name: str) -> dict[str, str]:
    """The ``Labels:`` block of a ``kubectl describe node`` fragment as a dict."""
    labels: dict[str, str] = {}
    inside = False
    for line in fixture_text(f"{K8S}/{name}").splitlines():
        if line.startswith("Labels:"):
            inside = True
            continue
        if inside and line.startswith(" ") and "=" in line:
            key, value = line.strip().split("=", 1)
            labels[key] = value
        elif inside:
            break
    return labels


def test_h100_single_node_labels() -> None:
    gfd = parse_labels(labels_json("h100-mig-single-node-labels.json"))
    assert gfd == GfdLabels(
        count=1,
        product="NVIDIA-H100-80GB-HBM3",
        replicas=1,
        sharing_strategy="none",
        memory=81559,
        present=True,
        family="hopper",
        mig_strategy="single",
        driver_version="550.54.15",
        device_plugin_config=None,
    )
    assert gfd.shared_product is False


def test_h100_mixed_mig_labels_count_physical_gpus() -> None:
    gfd = parse_labels(labels_json("h100-mig-mixed-node-labels.json"))
    assert gfd.count == 1
    assert gfd.replicas == 0
    assert gfd.product == "NVIDIA-H100-80GB-HBM3"
    assert gfd.mig_strategy == "mixed"


def test_a100_single_strategy_mig_product() -> None:
    gfd = parse_labels(labels_json("a100-mig-single-gfd-labels-driver450.json"))
    assert (gfd.count, gfd.product, gfd.memory) == (7, "A100-SXM4-40GB-MIG-1g.5gb", 4864)
    assert gfd.replicas is None and gfd.sharing_strategy is None  # GFD of 2020 did not write them
    assert gfd.driver_version == "450.80.02"  # from the old cuda.driver.major/minor/rev labels
    assert gfd.present is False  # no nvidia.com/gpu.present in that selection


def test_a100_mixed_strategy() -> None:
    gfd = parse_labels(labels_json("a100-mig-mixed-gfd-labels-driver450.json"))
    assert (gfd.count, gfd.product, gfd.memory, gfd.mig_strategy) == (1, "A100-SXM4-40GB", 40537, "mixed")


@pytest.mark.parametrize("relative", fixture_params(K8S, "*labels*.json"))
def test_every_label_json_parses(relative: str) -> None:
    gfd = parse_labels(json.loads(fixture_text(relative)))
    assert gfd.count is not None and gfd.count >= 1
    assert gfd.product
    assert gfd.memory is not None and gfd.memory > 0


@pytest.mark.parametrize(
    ("name", "count", "product", "config_state"),
    [
        ("h100-mig-single-1g10gb-labels-success-fragment.txt", 7, "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb", "success"),
        ("h100-mig-single-1g10gb-labels-pending-fragment.txt", None, "NVIDIA-H100-80GB-HBM3", "pending"),
    ],
)
def test_label_fragments(name: str, count: int | None, product: str, config_state: str) -> None:
    text = fixture_text(f"{K8S}/{name}").strip()
    body = text if text.startswith("{") else "{" + text
    body = body if body.endswith("}") else body + "}"
    labels = json.loads(body)
    gfd = parse_labels(labels)
    assert gfd.count == count
    assert gfd.product == product
    assert labels["nvidia.com/mig.config.state"] == config_state


def test_time_sliced_t4_fragments() -> None:
    shared = parse_labels(describe_labels("t4-time-slicing-describe-node-fragment.txt"))
    assert (shared.count, shared.replicas, shared.product) == (4, 4, "Tesla-T4-SHARED")
    assert shared.shared_product is True
    assert shared.product == expected_product_label("Tesla T4", shared=True)
    renamed = parse_labels(describe_labels("t4-time-slicing-renamebydefault-describe-node-fragment.txt"))
    assert (renamed.count, renamed.replicas, renamed.product) == (4, 4, "Tesla-T4")
    assert renamed.shared_product is False
    assert renamed.product == expected_product_label("Tesla T4", shared=False)


@pytest.mark.parametrize(
    "name",
    [
        "dgxa100-node-mig-disabled-openshift.yaml",
        "dgxa100-node-mig-7g40gb-mixed-openshift.yaml",
        "dgxa100-node-mig-all-1g5gb-openshift.yaml",
    ],
)
def test_dgx_a100_node_objects(name: str) -> None:
    node = yaml.safe_load(fixture_text(f"{K8S}/{name}"))
    gfd = parse_labels(node["metadata"]["labels"])
    assert gfd.count == 8
    assert gfd.product == "NVIDIA-A100-SXM4-40GB"
    assert gfd.product == expected_product_label("NVIDIA A100-SXM4-40GB", shared=False)
    assert gfd.driver_version == "470.82.01"
    assert gfd.memory == 40536


def test_product_label_matches_what_nvidia_smi_and_dcgm_call_the_gpu() -> None:
    # same node (H100 docs): nvidia-smi -L name -> GFD product label
    (gpu,) = parse_list(fixture_text("real-world/nvidia-smi/h100-mig-all-1g10gb-L.txt"))
    labels = labels_json("h100-mig-single-node-labels.json")
    assert expected_product_label(gpu.name, shared=False) == labels["nvidia.com/gpu.product"]
    # MIG single strategy, same driver-450 DGX in both the -L output and the labels
    listing = fixture_text("real-world/nvidia-smi/a100-mig-7x1g5gb-L-driver450.txt")
    (a100,) = parse_list(listing)
    profile = parse_mig_devices(listing)[0].profile
    single = labels_json("a100-mig-single-gfd-labels-driver450.json")
    assert expected_product_label(a100.name, shared=False, mig_profile=profile) == single["nvidia.com/gpu.product"]
    # dcgm-exporter's modelName is the unsanitised name
    scrape = parse_metrics(fixture_text("real-world/dcgm/8xh100-eks-sampled.txt"))
    models = {g.model_name for g in scrape.gpus.values() if g.model_name}
    assert {expected_product_label(m, shared=True) for m in models} == {"NVIDIA-H100-80GB-HBM3-SHARED"}


@pytest.mark.parametrize(
    ("name", "shared", "mig", "expected"),
    [
        ("NVIDIA H200", False, None, "NVIDIA-H200"),
        ("NVIDIA H200", True, None, "NVIDIA-H200-SHARED"),
        ("NVIDIA GB10", True, None, "NVIDIA-GB10-SHARED"),
        ("NVIDIA  GeForce RTX 3060 ", False, None, "NVIDIA-GeForce-RTX-3060"),  # runs of spaces collapse
        ("Quadro RTX 6000/8000 (TM)", False, None, "Quadro-RTX-60008000-TM"),  # disallowed characters dropped
        ("NVIDIA H100 80GB HBM3", True, "1g.10gb", "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb-SHARED"),
    ],
)
def test_expected_product_label(name: str, shared: bool, mig: str | None, expected: str) -> None:
    assert expected_product_label(name, shared=shared, mig_profile=mig) == expected


def test_sanitise_and_empty_names() -> None:
    assert sanitise("Tesla P100-PCIE-16GB") == "Tesla-P100-PCIE-16GB"
    assert sanitise("a_b.c") == "a_b.c"
    with pytest.raises(ValueError, match="empty"):
        expected_product_label("", shared=False)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"nvidia.com/gpu.count": "eight"}, r"label nvidia.com/gpu.count='eight' is not a non-negative integer"),
        ({"nvidia.com/gpu.replicas": "-1"}, r"nvidia.com/gpu.replicas='-1'"),
        ({"nvidia.com/gpu.memory": "80 GiB"}, r"nvidia.com/gpu.memory='80 GiB'"),
        ({"nvidia.com/gpu.count": "\u00b2"}, r"nvidia.com/gpu.count='\u00b2'"),
    ],
)
def test_malformed_integer_labels(labels: dict[str, str], message: str) -> None:
    with pytest.raises(GfdLabelError, match=message):
        parse_labels(labels)


def test_node_without_gfd_labels() -> None:
    gfd = parse_labels({"kubernetes.io/hostname": "cpu-1"})
    assert gfd == GfdLabels(count=None, product=None, replicas=None, sharing_strategy=None, memory=None)
    assert gfd.present is False


def test_time_slicing_labels_and_device_plugin_config() -> None:
    gfd = parse_labels(
        {
            "nvidia.com/gpu.count": "1",
            "nvidia.com/gpu.product": "NVIDIA-GB10-SHARED",
            "nvidia.com/gpu.replicas": "4",
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
            "nvidia.com/device-plugin.config": "dgx-spark",
            "nvidia.com/gpu.present": "true",
        }
    )
    assert (gfd.replicas, gfd.sharing_strategy, gfd.device_plugin_config) == (4, "time-slicing", "dgx-spark")
    assert gfd.present is True
    assert gfd.memory is None  # unified memory: GFD writes no gpu.memory on GB10


def test_driver_versions_of_the_named_nodes_from_their_labels() -> None:
    nodes = {
        "gpu-a": {"metadata": {"labels": {"nvidia.com/cuda.driver-version.full": "580.159.04"}}},
        "gpu-b": {"metadata": {"labels": {"nvidia.com/cuda.driver.major": "550", "nvidia.com/cuda.driver.minor": "54",
                                          "nvidia.com/cuda.driver.rev": "15"}}},
        "gpu-c": {"metadata": {"labels": {"kubernetes.io/hostname": "gpu-c"}}},  # GFD not there yet
        "cpu-1": {"metadata": {"labels": {"nvidia.com/cuda.driver-version.full": "1.0"}}},
    }
    assert driver_versions(nodes, ["gpu-a", "gpu-b", "gpu-c", "gone"]) == {"gpu-a": "580.159.04", "gpu-b": "550.54.15"}
