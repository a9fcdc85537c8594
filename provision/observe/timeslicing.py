"""Time-slicing configuration of the NVIDIA device plugin: parse, validate, render (no I/O).

The config is the YAML text of one key of the ConfigMap named by ClusterPolicy spec.devicePlugin.config
(/work/shared/reference/gpu-stack.md, "Time-slicing"):

    version: v1
    flags:
      migStrategy: none
    sharing:
      timeSlicing:
        renameByDefault: false
        failRequestsGreaterThanOne: false
        resources:
        - name: nvidia.com/gpu
          replicas: 4

replicas must be >= 2. This module also rejects more than MAX_REPLICAS (1024): the device plugin sets no upper
bound, but each replica is one pod slot on one GPU, so a larger number is a typo (an extra zero, a memory size)
rather than a plan, and it would make the node advertise that many nvidia.com/gpu.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "GPU_RESOURCE",
    "MAX_REPLICAS",
    "InvalidReplicas",
    "TimeSlicingConfig",
    "TimeSlicingError",
    "parse_config",
    "render_config",
    "validate_replicas",
]

GPU_RESOURCE = "nvidia.com/gpu"
MAX_REPLICAS = 1024
MIG_STRATEGIES = ("none", "single", "mixed")
_INTEGER = re.compile(r"[+-]?[0-9]+")


class TimeSlicingError(ValueError):
    """A time-slicing config or setting the device plugin would reject (or this suite refuses)."""


class InvalidReplicas(TimeSlicingError):
    """A replicas value that is not an integer in [2, MAX_REPLICAS]; the message says what to fix."""


@dataclass(frozen=True)
class TimeSlicingConfig:
    """A parsed config. ``replicas`` is that of nvidia.com/gpu, None when the config does not share GPUs."""

    version: str
    replicas: int | None
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    mig_strategy: str | None = None
    resources: dict[str, int] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)  # resource -> the ``rename`` it is advertised under
    mps: bool = False  # shared through sharing.mps (the MPS control daemon) instead of sharing.timeSlicing

    @property
    def strategy(self) -> str:
        """GFD's nvidia.com/gpu.sharing-strategy for this config: mps, time-slicing or none."""
        return "none" if not self.shares_gpus else ("mps" if self.mps else "time-slicing")

    @property
    def shares_gpus(self) -> bool:
        return self.replicas is not None

    def advertised_name(self, resource: str) -> str:
        """The name the device plugin advertises a time-sliced ``resource`` under: its ``rename``, else
        ``<resource>.shared`` with renameByDefault, else the resource itself (not time-sliced: itself)."""
        if resource not in self.resources:
            return resource
        if resource in self.renames:
            return self.renames[resource]
        return f"{resource}.shared" if self.rename_by_default else resource

    def renamed(self, resource: str) -> bool:
        return self.advertised_name(resource) != resource


def _too_small(value: object) -> InvalidReplicas:
    return InvalidReplicas(
        f"replicas must be an integer >= 2 (time-slicing shares each GPU between that many pods); got {value!r}"
    )


def validate_replicas(value: object) -> int:
    """``value`` as an int if it is an integer in [2, MAX_REPLICAS] (an int, or a string of digits such as "4").

    Booleans, floats, other strings and everything else raise InvalidReplicas, e.g.
    ``replicas must be an integer >= 2 (time-slicing shares each GPU between that many pods); got 'four'``.
    """
    if isinstance(value, bool):
        raise _too_small(value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise _too_small(value)
    if number < 2:
        raise _too_small(value)
    if number > MAX_REPLICAS:
        raise InvalidReplicas(
            f"replicas must be at most {MAX_REPLICAS} (each replica is one pod slot on one GPU, so more is almost "
            f"certainly a typo); got {value!r}"
        )
    return number


def _bool(value: Any, where: str, source: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TimeSlicingError(f"{source}: {where} must be true or false, got {value!r}")
    return value


def _mapping(value: Any, where: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TimeSlicingError(f"{source}: {where} must be a mapping, got {value!r}")
    return value


def parse_config(text: str, source: str = "time-slicing config") -> TimeSlicingConfig:
    """Parse and validate the YAML of one time-slicing ConfigMap key. ``source`` names it in error messages
    (e.g. "configmap gpu-operator/time-slicing-config key any"). Raises TimeSlicingError / InvalidReplicas."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TimeSlicingError(f"{source}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TimeSlicingError(f"{source}: expected a mapping with version: v1, got {data!r}")
    version = data.get("version")
    if version != "v1":
        raise TimeSlicingError(f"{source}: version must be v1 (the device plugin config version), got {version!r}")

    flags = _mapping(data.get("flags"), "flags", source)
    mig_strategy = flags.get("migStrategy")
    if mig_strategy is not None and mig_strategy not in MIG_STRATEGIES:
        raise TimeSlicingError(
            f"{source}: flags.migStrategy must be one of {', '.join(MIG_STRATEGIES)}, got {mig_strategy!r}"
        )

    sharing = _mapping(data.get("sharing"), "sharing", source)
    section = "timeSlicing"
    if sharing.get("mps") is not None:
        if sharing.get("timeSlicing"):
            raise TimeSlicingError(f"{source}: sharing.timeSlicing and sharing.mps cannot both be set (the device "
                                   "plugin refuses a config with both)")
        section = "mps"
    time_slicing = _mapping(sharing.get(section), f"sharing.{section}", source)
    rename = _bool(time_slicing.get("renameByDefault"), f"sharing.{section}.renameByDefault", source)
    fail_gt_one = _bool(
        time_slicing.get("failRequestsGreaterThanOne"), f"sharing.{section}.failRequestsGreaterThanOne", source
    )
    resources: dict[str, int] = {}
    renames: dict[str, str] = {}
    if time_slicing:
        items = time_slicing.get("resources")
        if not isinstance(items, list) or not items:
            raise TimeSlicingError(
                f"{source}: sharing.{section}.resources must be a non-empty list of {{name, replicas}}, got {items!r}"
            )
        for position, item in enumerate(items):
            where = f"sharing.{section}.resources[{position}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise TimeSlicingError(f"{source}: {where} must have a name (e.g. {GPU_RESOURCE}), got {item!r}")
            name = item["name"]
            if name in resources:
                raise TimeSlicingError(f"{source}: {where}: {name} is listed twice")
            try:
                resources[name] = validate_replicas(item.get("replicas"))
            except InvalidReplicas as exc:
                raise InvalidReplicas(f"{source}: {where} ({name}): {exc}") from None
            new_name = item.get("rename")
            if new_name is not None and (not isinstance(new_name, str) or not new_name):
                raise TimeSlicingError(f"{source}: {where}.rename must be a resource name, got {new_name!r}")
            if new_name:
                renames[name] = new_name if "/" in new_name else f"nvidia.com/{new_name}"
    return TimeSlicingConfig(
        version=version,
        replicas=resources.get(GPU_RESOURCE),
        rename_by_default=rename,
        fail_requests_greater_than_one=fail_gt_one,
        mig_strategy=mig_strategy,
        resources=resources,
        renames=renames,
        mps=section == "mps" and bool(time_slicing),
    )


def render_config(
    replicas: int | str, rename_by_default: bool = False, fail_requests_greater_than_one: bool = False,
    mig_strategy: str = "none", mig_resources: Sequence[str] = (),
    mps: bool = False,
) -> str:
    """The YAML of a config that time-slices every nvidia.com/gpu into ``replicas`` (validated first); with
    ``mps`` the same under sharing.mps (MPS has no failRequestsGreaterThanOne: it is left out)."""
    count = validate_replicas(replicas)
    for name, flag in (
        ("rename_by_default", rename_by_default),
        ("fail_requests_greater_than_one", fail_requests_greater_than_one),
        ("mps", mps),
    ):
        if not isinstance(flag, bool):
            raise TimeSlicingError(f"{name} must be True or False, got {flag!r}")
    doc = {
        "version": "v1",
        "flags": {"migStrategy": mig_strategy},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": rename_by_default,
                "failRequestsGreaterThanOne": fail_requests_greater_than_one,
                "resources": [{"name": GPU_RESOURCE, "replicas": count},
                              *({"name": r, "replicas": count} for r in mig_resources)],
            }
        },
    }
    if mps:
        section = doc["sharing"].pop("timeSlicing")
        section.pop("failRequestsGreaterThanOne")
        doc["sharing"]["mps"] = section
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
