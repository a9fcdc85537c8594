"""Load an Ansible inventory (YAML or INI) into plain ``InventoryHost`` records.

With ansible-core importable, Ansible's own ``InventoryManager``/``DataLoader`` parse the file (so INI,
YAML, group_vars/host_vars next to the inventory and group inheritance behave exactly as in Ansible).
Without it, YAML inventories are read with PyYAML (groups, children, vars, hosts); INI then needs
ansible-core. A file that does not parse raises ``InventoryError`` naming the file and the parser's message.

The suite's inventories use the groups ``baremetal_gpus``, ``k8s_control_plane`` and ``k8s_workers`` and
the host vars ``gpu_count``, ``gpu_model``, ``arch`` (plus the usual ``ansible_host``/``ansible_port``/...).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["InventoryError", "InventoryHost", "ansible_available", "load_inventory"]

_YAML_SUFFIXES = (".yml", ".yaml", ".json")
_PSEUDO_GROUPS = frozenset({"all", "ungrouped"})
# Ansible's magic variables that the inventory manager adds; not part of what the file says.
_MAGIC_VARS = frozenset({"inventory_file", "inventory_dir", "inventory_hostname", "inventory_hostname_short",
                         "group_names"})


class InventoryError(ValueError):
    """The inventory cannot be read or parsed, or a host's variables are invalid."""


@dataclass(frozen=True)
class InventoryHost:
    """One host of the inventory: its groups (with parent groups, without all/ungrouped) and variables.

    ``vars`` holds every variable of the host (group vars merged, host vars last), as plain Python values;
    ``gpu_count``, ``gpu_model``, ``arch`` and ``ansible_host`` are the ones the suite uses, checked.
    """

    name: str
    groups: tuple[str, ...]
    gpu_count: int | None = None
    gpu_model: str | None = None
    arch: str | None = None
    ansible_host: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)


def ansible_available() -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None
                   for m in ("ansible", "ansible.inventory.manager", "ansible.parsing.dataloader"))
    except ImportError:
        return False


def _plain(value: Any) -> Any:
    """Strip ansible-core's tagged str/int/... subclasses down to plain Python values."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def _make_host(path: Path, name: str, groups: list[str], hostvars: Mapping[str, Any]) -> InventoryHost:
    vars_ = {k: _plain(v) for k, v in hostvars.items() if k not in _MAGIC_VARS}
    gpu_count = vars_.get("gpu_count")
    if gpu_count is not None:
        if isinstance(gpu_count, str) and gpu_count.strip().isdigit():
            gpu_count = int(gpu_count)
        if isinstance(gpu_count, bool) or not isinstance(gpu_count, int) or gpu_count < 0:
            raise InventoryError(f"inventory {path}: host {name!r} has gpu_count {gpu_count!r}, "
                                 "not a non-negative integer")
    strings: dict[str, str | None] = {}
    for key in ("gpu_model", "arch", "ansible_host"):
        value = vars_.get(key)
        if value is not None and not isinstance(value, str):
            value = str(value)
        strings[key] = value
    return InventoryHost(
        name=name,
        groups=tuple(sorted(g for g in set(groups) if g not in _PSEUDO_GROUPS)),
        gpu_count=gpu_count,
        gpu_model=strings["gpu_model"],
        arch=strings["arch"],
        ansible_host=strings["ansible_host"],
        vars=vars_,
    )


class _FailureRecorder:
    """Stands in for ansible.inventory.manager's Display while parsing: keeps the plugins' failures (which
    Ansible only prints as warnings) so they can be raised; everything else goes to the real Display."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.failures: list[tuple[str, BaseException]] = []
        self.warnings: list[str] = []

    def error_as_warning(self, msg: str, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.failures.append((msg, exception))

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.warnings.append(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_ANSIBLE_LOCK = threading.Lock()


def _describe_failures(failures: list[tuple[str, BaseException]], yaml_first: bool) -> list[str]:
    """One line per distinct parser message, "plugin: message (at file:line:col)"; the plugins that match
    the file's kind first (the ini plugin's view of a YAML file is noise)."""
    seen: dict[str, tuple[str, str]] = {}
    for msg, exc in failures:
        text = " ".join((str(exc).strip() or type(exc).__name__).split())
        plugin = msg.split("'")[1] if msg.count("'") >= 2 else "ansible"
        origin = getattr(exc, "obj", None)
        where = f" (at {origin})" if origin is not None and getattr(origin, "line_num", None) else ""
        if text not in seen or (where and not seen[text][1]):
            seen[text] = (seen[text][0] if text in seen else plugin, where)
    lines = [f"{plugin}: {text}{where}" for text, (plugin, where) in seen.items()]
    lines.sort(key=lambda line: 0 if line.startswith(("yaml", "auto")) == yaml_first else 1)
    return lines


def _load_with_ansible(path: Path) -> list[InventoryHost]:
    import ansible.inventory.manager as manager_module
    from ansible.inventory.helpers import get_group_vars
    from ansible.parsing.dataloader import DataLoader
    from ansible.utils.vars import combine_vars

    with _ANSIBLE_LOCK:
        recorder = _FailureRecorder(manager_module.display)
        real_display = manager_module.display
        manager_module.display = recorder
        try:
            inventory = manager_module.InventoryManager(loader=DataLoader(), sources=[str(path)])
        except Exception as e:  # AnsibleError when configured to fail on unparsed sources
            raise InventoryError(f"inventory {path} does not parse: {e}") from e
        finally:
            manager_module.display = real_display
    unparsed = any(w.startswith("Unable to parse") for w in recorder.warnings)
    if recorder.failures or unparsed:
        messages = _describe_failures(recorder.failures, path.suffix in _YAML_SUFFIXES)
        detail = "; ".join(messages) or "; ".join(recorder.warnings) or "no inventory plugin accepted it"
        raise InventoryError(f"inventory {path} does not parse: {detail}")
    hosts = []
    for host in sorted(inventory.get_hosts(), key=lambda h: h.name):
        groups = host.get_groups()
        merged = combine_vars(get_group_vars(groups), host.get_vars())
        hosts.append(_make_host(path, host.name, [g.name for g in groups], merged))
    return hosts


def _yaml_message(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        text = " ".join(p for p in (e.context, e.problem) if p)
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            text += f" (line {mark.line + 1}, column {mark.column + 1})"
        return text
    return " ".join(str(e).split())


def _load_with_pyyaml(path: Path) -> list[InventoryHost]:
    if path.suffix not in _YAML_SUFFIXES:
        raise InventoryError(f"inventory {path}: INI inventories need ansible-core (only YAML is read without it)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InventoryError(f"inventory {path} does not parse: yaml: {_yaml_message(e)}") from e
    if data is None:
        return []
    if not isinstance(data, dict):
        raise InventoryError(f"inventory {path} does not parse: the top level must be a mapping of groups")

    host_groups: dict[str, list[str]] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    # (depth, group) -> vars, applied shallow-to-deep like Ansible's group priority by depth
    group_vars: dict[str, tuple[int, dict[str, Any]]] = {}

    def walk(name: str, body: Any, ancestors: tuple[str, ...]) -> None:
        if name in ancestors:
            raise InventoryError(f"inventory {path} does not parse: group {name!r} is its own ancestor")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise InventoryError(f"inventory {path} does not parse: group {name!r} must be a mapping")
        unknown = set(body) - {"hosts", "children", "vars"}
        if unknown:
            raise InventoryError(f"inventory {path} does not parse: group {name!r} has unknown keys {sorted(unknown)}")
        lineage = (*ancestors, name)
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise InventoryError(f"inventory {path} does not parse: vars of group {name!r} must be a mapping")
        depth, previous = group_vars.get(name, (len(ancestors), {}))
        group_vars[name] = (max(depth, len(ancestors)), {**previous, **gvars})
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise InventoryError(f"inventory {path} does not parse: hosts of group {name!r} must be a mapping")
        for host, hvars in hosts.items():
            if hvars is not None and not isinstance(hvars, dict):
                raise InventoryError(f"inventory {path} does not parse: vars of host {host!r} must be a mapping")
            host_groups.setdefault(str(host), []).extend(lineage)
            host_vars.setdefault(str(host), {}).update(hvars or {})
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise InventoryError(f"inventory {path} does not parse: children of group {name!r} must be a mapping")
        for child, child_body in children.items():
            walk(str(child), child_body, lineage)

    for top, body in data.items():
        walk(str(top), body, ())
    hosts = []
    for name in sorted(host_groups):
        groups = set(host_groups[name])
        merged: dict[str, Any] = {}
        for _depth, gname in sorted((group_vars[g][0], g) for g in groups | {"all"} if g in group_vars):
            merged.update(group_vars[gname][1])
        merged.update(host_vars[name])
        hosts.append(_make_host(path, name, list(groups), merged))
    return hosts


_CACHE: dict[tuple[str, int, int, bool], list[InventoryHost]] = {}


def load_inventory(path: str | os.PathLike[str], *, use_ansible: bool | None = None) -> list[InventoryHost]:
    """Read the inventory at ``path`` into a list of InventoryHost, sorted by name.

    ``use_ansible``: None (default) uses ansible-core when importable; False forces the PyYAML reader.
    Results are cached per file version (path, mtime, size).
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise InventoryError(f"inventory {p} cannot be read: {e.strerror or e}") from e
    if not p.is_file():
        raise InventoryError(f"inventory {p} is not a file")
    with_ansible = ansible_available() if use_ansible is None else use_ansible
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, with_ansible)
    if key not in _CACHE:
        _CACHE[key] = _load_with_ansible(p) if with_ansible else _load_with_pyyaml(p)
    return list(_CACHE[key])
