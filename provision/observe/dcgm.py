"""Pure parser for a dcgm-exporter /metrics scrape (Prometheus text format; no I/O).

Facts used (/work/shared/reference/gpu-stack.md, "DCGM exporter"): every GPU sample carries the labels gpu,
UUID, pci_bus_id, device, modelName, the host label (``Hostname`` in released versions, ``hostname`` on the
project's main branch: both are accepted) and DCGM_FI_DRIVER_VERSION; pods using a GPU add container /
namespace / pod; MIG adds GPU_I_PROFILE and GPU_I_ID. On GB10 (unified memory) the FB_* metrics are absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "HOST_LABELS",
    "DcgmGpu",
    "DcgmParseError",
    "DcgmScrape",
    "missing_uuids",
    "parse_metrics",
    "sample_lines",
]

HOST_LABELS: tuple[str, ...] = ("Hostname", "hostname")
_MIG_INSTANCE_LABEL = "GPU_I_ID"


class DcgmParseError(ValueError):
    """Text that is not valid Prometheus exposition format."""


@dataclass(frozen=True)
class DcgmGpu:
    """Everything one scrape says about one GPU (by UUID).

    ``metrics``: names of all samples seen for the GPU (MIG instances included); ``values``: the value of each
    metric for the whole GPU (samples without a GPU_I_ID label); ``mig_instances``: the GPU_I_ID values seen.
    """

    uuid: str
    gpu: str | None
    device: str | None
    pci_bus_id: str | None
    model_name: str | None
    host: str | None
    driver_version: str | None
    metrics: frozenset[str]
    values: dict[str, float] = field(default_factory=dict)
    mig_instances: frozenset[str] = frozenset()
    pods: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DcgmScrape:
    """A parsed scrape: GPUs by UUID, the host names seen, and counts for sanity checks."""

    gpus: dict[str, DcgmGpu]
    hosts: frozenset[str]
    metric_names: frozenset[str]
    sample_count: int
    samples_without_uuid: int

    @property
    def uuids(self) -> list[str]:
        return list(self.gpus)

    def gpus_without(self, metric: str) -> list[str]:
        """UUIDs of the GPUs that have no sample of ``metric``."""
        return [uuid for uuid, gpu in self.gpus.items() if metric not in gpu.metrics]


@dataclass
class _Acc:
    labels: dict[str, str | None]
    metrics: set[str] = field(default_factory=set)
    values: dict[str, float] = field(default_factory=dict)
    mig: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)


def _host(labels: dict[str, str]) -> str | None:
    for name in HOST_LABELS:
        if labels.get(name):
            return labels[name]
    return None


def _wire_name(family: str, typ: str, sample: str) -> str:
    """The metric name to record for a sample.

    prometheus_client munges counters into the OpenMetrics form: a counter declared without ``_total`` (as
    dcgm-exporter declares DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION) gets its samples renamed to ``<name>_total``.
    Counter samples are therefore recorded under the family name, which for dcgm-exporter is the name on the
    wire (a counter declared as ``x_total`` is recorded as ``x``).
    """
    if typ == "counter" and sample == f"{family}_total":
        return family
    return sample


def parse_metrics(text: str) -> DcgmScrape:
    """Parse dcgm-exporter's /metrics text with prometheus_client's parser.

    Samples without a UUID label (exporter process metrics) are counted, not attributed. Counter samples are
    recorded under their family name (see :func:`_wire_name`). Raises DcgmParseError for text that is not
    Prometheus exposition format.
    """
    accs: dict[str, _Acc] = {}
    hosts: set[str] = set()
    names: set[str] = set()
    total = 0
    without_uuid = 0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                total += 1
                metric = _wire_name(family.name, family.type, sample.name)
                names.add(metric)
                labels = dict(sample.labels)
                host = _host(labels)
                if host is not None:
                    hosts.add(host)
                uuid = labels.get("UUID")
                if not uuid:
                    without_uuid += 1
                    continue
                acc = accs.get(uuid)
                if acc is None:
                    acc = accs[uuid] = _Acc(
                        labels={
                            "gpu": labels.get("gpu"),
                            "device": labels.get("device"),
                            "pci_bus_id": labels.get("pci_bus_id"),
                            "model_name": labels.get("modelName"),
                            "host": host,
                            "driver_version": labels.get("DCGM_FI_DRIVER_VERSION"),
                        }
                    )
                acc.metrics.add(metric)
                if labels.get(_MIG_INSTANCE_LABEL):
                    acc.mig.add(labels[_MIG_INSTANCE_LABEL])
                else:
                    acc.values.setdefault(metric, float(sample.value))
                if labels.get("pod"):
                    acc.pods.add(f"{labels.get('namespace', '')}/{labels['pod']}")
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise DcgmParseError(f"not Prometheus text format: {exc}") from exc

    gpus = {
        uuid: DcgmGpu(
            uuid=uuid,
            gpu=acc.labels["gpu"],
            device=acc.labels["device"],
            pci_bus_id=acc.labels["pci_bus_id"],
            model_name=acc.labels["model_name"],
            host=acc.labels["host"],
            driver_version=acc.labels["driver_version"],
            metrics=frozenset(acc.metrics),
            values=dict(acc.values),
            mig_instances=frozenset(acc.mig),
            pods=frozenset(acc.pods),
        )
        for uuid, acc in accs.items()
    }
    return DcgmScrape(
        gpus=gpus,
        hosts=frozenset(hosts),
        metric_names=frozenset(names),
        sample_count=total,
        samples_without_uuid=without_uuid,
    )


def missing_uuids(scrape: DcgmScrape, expected_uuids: Iterable[str]) -> list[str]:
    """The expected GPU UUIDs (e.g. from nvidia-smi) that have no sample in the scrape, in the given order."""
    missing: list[str] = []
    for uuid in expected_uuids:
        if uuid not in scrape.gpus and uuid not in missing:
            missing.append(uuid)
    return missing


def sample_lines(text: str, n: int) -> list[str]:
    """The first ``n`` sample lines of a scrape (no # HELP / # TYPE comments, no blank lines), for a report."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lines: list[str] = []
    for line in text.splitlines():
        if len(lines) >= n:
            break
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(line.rstrip())
    return lines
