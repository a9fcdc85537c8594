"""GPU feature discovery (GFD) node labels, read from a node's label map (no I/O).

Facts used (/work/shared/reference/gpu-stack.md, "Node labels"): nvidia.com/gpu.count counts PHYSICAL GPUs,
nvidia.com/gpu.product is the sanitised model name with ``-SHARED`` appended when the GPU is time-sliced and
renameByDefault is false, nvidia.com/gpu.replicas is per GPU, nvidia.com/gpu.sharing-strategy is
time-slicing | none. The sanitising follows GFD's own ``sanitise`` (NVIDIA/k8s-device-plugin,
internal/lm/resource.go): characters outside ``[A-Za-z0-9-_. ]`` are dropped, runs of spaces become one ``-``,
and the parts (model, ``MIG``, MIG profile, ``SHARED``) are joined with ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "GfdLabelError",
    "GfdLabels",
    "driver_versions",
    "expected_product_label",
    "parse_labels",
    "sanitise",
]

PREFIX = "nvidia.com/"
_UNSAFE = re.compile(r"[^A-Za-z0-9\-_. ]")
_DIGITS = re.compile(r"[0-9]+")


class GfdLabelError(ValueError):
    """A GFD label whose value is not what GFD writes (e.g. a non-integer count)."""


@dataclass(frozen=True)
class GfdLabels:
    """The GFD labels the suite checks; None where the node does not carry the label."""

    count: int | None
    product: str | None
    replicas: int | None
    sharing_strategy: str | None
    memory: int | None
    present: bool = False
    family: str | None = None
    mig_strategy: str | None = None
    driver_version: str | None = None
    device_plugin_config: str | None = None

    @property
    def shared_product(self) -> bool:
        """True when the product label carries GFD's ``-SHARED`` suffix (time-sliced, renameByDefault false)."""
        return self.product is not None and self.product.endswith("-SHARED")


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    raw = labels.get(key)
    if raw is None:
        return None
    value = str(raw).strip()
    if not _DIGITS.fullmatch(value):
        raise GfdLabelError(f"label {key}={raw!r} is not a non-negative integer")
    return int(value)


def _driver_version(labels: Mapping[str, str]) -> str | None:
    full = labels.get(PREFIX + "cuda.driver-version.full")
    if full:
        return full
    parts = [labels.get(PREFIX + f"cuda.driver.{part}") for part in ("major", "minor", "rev")]
    if parts[0] and parts[1]:
        return ".".join(part for part in parts if part)
    return None


def parse_labels(labels: Mapping[str, str]) -> GfdLabels:
    """Read GFD's labels from a node's ``metadata.labels``. Raises GfdLabelError for a malformed integer label."""
    return GfdLabels(
        count=_int_label(labels, PREFIX + "gpu.count"),
        product=labels.get(PREFIX + "gpu.product"),
        replicas=_int_label(labels, PREFIX + "gpu.replicas"),
        sharing_strategy=labels.get(PREFIX + "gpu.sharing-strategy"),
        memory=_int_label(labels, PREFIX + "gpu.memory"),
        present=labels.get(PREFIX + "gpu.present") == "true",
        family=labels.get(PREFIX + "gpu.family"),
        mig_strategy=labels.get(PREFIX + "mig.strategy"),
        driver_version=_driver_version(labels),
        device_plugin_config=labels.get(PREFIX + "device-plugin.config"),
    )


def sanitise(part: str) -> str:
    """GFD's sanitising of one product-name part ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3")."""
    return "-".join(_UNSAFE.sub("", part).split())


def expected_product_label(product_name: str, shared: bool, mig_profile: str | None = None) -> str:
    """The nvidia.com/gpu.product value GFD writes for a GPU model as nvidia-smi names it.

    ``shared``: the GPU is time-sliced (replicas > 1) AND renameByDefault is false, so GFD appends ``-SHARED``.
    ``mig_profile`` (e.g. "1g.10gb") gives the single-strategy MIG product ``<model>-MIG-<profile>``.
    Raises ValueError for an empty product name.
    """
    parts = [product_name] if mig_profile is None else [product_name, "MIG", mig_profile]
    # As GFD: empty parts are skipped before sanitising, every other part is kept even if sanitising empties it.
    sanitised = [sanitise(part) for part in parts if part]
    if not product_name or not sanitised:
        raise ValueError(f"product name {product_name!r} is empty")
    if shared:
        sanitised.append("SHARED")
    return "-".join(sanitised)


def driver_versions(nodes: Mapping[str, Mapping], names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``{node: driver version}`` from the GFD driver labels of the named nodes (``nodes``: name -> Node object
    as a dict). A node without the labels (GFD not running there yet) is left out; a malformed label too."""
    out: dict[str, str] = {}
    for name in names:
        labels = ((nodes.get(name) or {}).get("metadata") or {}).get("labels") or {}
        version = _driver_version(labels)
        if version:
            out[name] = str(version)
    return out
