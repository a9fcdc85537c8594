"""Pure helpers for Docker's /etc/docker/daemon.json (no I/O).

The original playbook overwrote daemon.json whole, losing every other Docker setting; here the nvidia runtime is
merged into what is there (every other key, other runtimes included, is kept) and the change is shown as a diff.
Fact used (/work/shared/reference/gpu-stack.md, "Docker (DGX Spark nodes)"): runtimes.nvidia must be
``{"path": "nvidia-container-runtime", "runtimeArgs": []}`` and Docker must be restarted to load it.
"""

from __future__ import annotations

import copy
import json
import posixpath
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DAEMON_JSON_PATH",
    "NVIDIA_RUNTIME",
    "DaemonJsonError",
    "diff",
    "has_nvidia_runtime",
    "merge_nvidia_runtime",
    "parse",
    "render",
]

DAEMON_JSON_PATH = "/etc/docker/daemon.json"
NVIDIA_RUNTIME: dict[str, Any] = {"path": "nvidia-container-runtime", "runtimeArgs": []}


class DaemonJsonError(ValueError):
    """daemon.json content Docker would refuse; the message names the file."""


def parse(text: str, path: str = DAEMON_JSON_PATH) -> dict[str, Any]:
    """The JSON object in ``text``; an empty (or all-whitespace) file is ``{}``, as Docker treats it.

    Raises DaemonJsonError naming ``path`` for invalid JSON or a top level that is not an object.
    """
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaemonJsonError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except RecursionError as exc:
        raise DaemonJsonError(f"{path}: invalid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise DaemonJsonError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    return data


def merge_nvidia_runtime(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A new config with ``runtimes.nvidia`` set to NVIDIA_RUNTIME and everything else of ``cfg`` kept.

    Raises DaemonJsonError when ``runtimes`` exists but is not an object (Docker would refuse it anyway).
    """
    merged = copy.deepcopy(dict(cfg))
    runtimes = merged.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise DaemonJsonError(f"runtimes must be a JSON object, got {type(runtimes).__name__}")
    runtimes["nvidia"] = copy.deepcopy(NVIDIA_RUNTIME)
    merged["runtimes"] = runtimes
    return merged


def has_nvidia_runtime(cfg: Mapping[str, Any]) -> bool:
    """True if ``runtimes.nvidia.path`` names nvidia-container-runtime (bare or as an absolute path)."""
    runtimes = cfg.get("runtimes")
    if not isinstance(runtimes, Mapping):
        return False
    nvidia = runtimes.get("nvidia")
    if not isinstance(nvidia, Mapping):
        return False
    path = nvidia.get("path")
    return isinstance(path, str) and posixpath.basename(path) == "nvidia-container-runtime"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def _diff(before: Any, after: Any, prefix: str, out: list[str]) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in before:
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in after:
                out.append(f"remove {where} (was {_show(before[key])})")
            else:
                _diff(before[key], after[key], where, out)
        for key in after:
            if key not in before:
                where = f"{prefix}.{key}" if prefix else str(key)
                out.append(f"add {where} = {_show(after[key])}")
        return
    if type(before) is not type(after) or _show(before) != _show(after):
        out.append(f"change {prefix or '(top level)'}: {_show(before)} -> {_show(after)}")


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Human-readable changes from ``before`` to ``after``, one per leaf, with dotted key paths:
    ``add runtimes.nvidia = {...}``, ``change log-level: "info" -> "debug"``, ``remove x (was 1)``.
    Empty when the two are equal."""
    out: list[str] = []
    _diff(before, after, "", out)
    return out


def render(cfg: Mapping[str, Any]) -> str:
    """daemon.json text: 2-space indent, keys in the order given, trailing newline."""
    return json.dumps(cfg, indent=2, ensure_ascii=False) + "\n"
