"""Host access: node -> host, quoted commands, guarded file changes (see docs/host-access.md).

Names are imported lazily, so ``import provision.hosts.guard`` (used by the Kubernetes layer) does not pull
testinfra, paramiko or the Kubernetes client in.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HostAccess": "access",
    "StrictParamikoBackend": "access",
    "Transport": "access",
    "WRITE_GUARD": "guard",
    "ReadOnlyViolation": "guard",
    "WriteGuard": "guard",
    "InventoryError": "inventory",
    "InventoryHost": "inventory",
    "load_inventory": "inventory",
    "PodExecBackend": "pod_backend",
    "build_pod_manifest": "pod_backend",
    "CommandFailed": "results",
    "CommandResult": "results",
    "HostCommandError": "results",
    "HostUnreachable": "results",
    "WriteResult": "results",
    "UnsafeHostAddress": "safety",
    "UnsafeNodeName": "safety",
    "UnsafePath": "safety",
    "build_command": "safety",
    "validate_host_path": "safety",
    "validate_node_name": "safety",
    "HostMappingError": "spec",
    "HostSpec": "spec",
    "load_host_map": "spec",
    "map_node": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
