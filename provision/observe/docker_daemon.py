"""Pure helpers for Docker's /etc/docker/daemon.json (no I/O).

The original playbook overwrote daemon.json whole, losing every other Docker setting; here the nvidia runtime is
merged into what is there (every other key, other runtimes included, is kept) and the change is shown as a diff.
A runtimes.nvidia entry that already works is never rewritten (nvidia-ctk writes ``{"path":
"nvidia-container-runtime", "args": []}``, older guides an absolute path with ``runtimeArgs``).
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
        raise DaemonJsonError(_syntax_error(path, exc)) from exc
    except RecursionError as exc:
        raise DaemonJsonError(f"{path}: invalid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise DaemonJsonError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    return data


def _syntax_error(path: str, exc: json.JSONDecodeError) -> str:
    """The message for a JSON syntax error. A trailing comma (``"a": 1,}`` or ``[1,]``) is reported where the
    comma is: Python's decoder (like dockerd: "invalid character '}' looking for beginning of object key
    string") stops at the token after it, often on the next line."""
    doc, pos = exc.doc, exc.pos
    before = pos - 1
    while before >= 0 and doc[before] in " \t\r\n":
        before -= 1
    if pos < len(doc) and doc[pos] in "}]" and before >= 0 and doc[before] == ",":
        line = doc.count("\n", 0, before) + 1
        column = before - (doc.rfind("\n", 0, before) + 1) + 1
        closer = "object" if doc[pos] == "}" else "array"
        got = "object key string" if doc[pos] == "}" else "value"
        return (f"{path}: invalid JSON at line {line} column {column}: trailing comma before the '{doc[pos]}' that "
                f"closes the {closer} (JSON allows no comma after the last member; dockerd says \"invalid character "
                f"'{doc[pos]}' looking for beginning of {got}\"): remove that comma")
    return f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"


def _names_nvidia_runtime(value: Any) -> bool:
    return isinstance(value, str) and posixpath.basename(value) == "nvidia-container-runtime"


def _working_nvidia_entry(nvidia: Any) -> bool:
    """A runtimes.nvidia entry Docker can run: ``path`` naming nvidia-container-runtime (bare, as the docs and
    ``nvidia-ctk runtime configure --runtime=docker`` write it, or absolute), or a shim entry (``runtimeType``)
    whose ``options.BinaryName`` names it."""
    if not isinstance(nvidia, Mapping):
        return False
    if _names_nvidia_runtime(nvidia.get("path")):
        return True
    options = nvidia.get("options")
    return bool(nvidia.get("runtimeType")) and isinstance(options, Mapping) and _names_nvidia_runtime(
        options.get("BinaryName"))


def merge_nvidia_runtime(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A new config whose ``runtimes.nvidia`` works, everything else of ``cfg`` kept.

    An entry that already works (:func:`has_nvidia_runtime`) is left exactly as it is (absolute ``path``,
    ``args`` / ``runtimeArgs`` and any other key the owner wrote). A missing entry is added as NVIDIA_RUNTIME;
    a broken one (an object whose ``path`` does not name nvidia-container-runtime) gets only its ``path`` set,
    its other keys kept. Raises DaemonJsonError when ``runtimes`` exists but is not an object (Docker would
    refuse it anyway).
    """
    merged = copy.deepcopy(dict(cfg))
    runtimes = merged.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise DaemonJsonError(f"runtimes must be a JSON object, got {type(runtimes).__name__}")
    nvidia = runtimes.get("nvidia")
    if _working_nvidia_entry(nvidia):
        return merged
    if isinstance(nvidia, dict) and not nvidia.get("runtimeType"):
        nvidia["path"] = NVIDIA_RUNTIME["path"]
    else:
        runtimes["nvidia"] = copy.deepcopy(NVIDIA_RUNTIME)
    merged["runtimes"] = runtimes
    return merged


def has_nvidia_runtime(cfg: Mapping[str, Any]) -> bool:
    """True if ``runtimes.nvidia`` works: its ``path`` names nvidia-container-runtime (bare or absolute), or it
    is a shim entry (``runtimeType``) whose ``options.BinaryName`` does."""
    runtimes = cfg.get("runtimes")
    if not isinstance(runtimes, Mapping):
        return False
    return _working_nvidia_entry(runtimes.get("nvidia"))


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


def render(cfg: Mapping[str, Any], like: str | None = None) -> str:
    """daemon.json text: keys in the order given, trailing newline; indented as ``like`` (the file's current
    text: its first indented line gives the indent, e.g. the 4 spaces nvidia-ctk writes), else 2 spaces."""
    indent: int | str = 2
    for line in (like or "").splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and stripped != line:
            indent = line[: len(line) - len(stripped)]
            break
    return json.dumps(cfg, indent=indent, ensure_ascii=False) + "\n"
