"""Resolve a containerd configuration (root config.toml + imported drop-ins) the way containerd does. No I/O.

The caller reads the files; :func:`resolve` gets ``{absolute path: TOML text}`` for every file that exists (the
root config and every candidate drop-in) and returns the :class:`EffectiveConfig`: which files containerd loads,
in which order, the CRI runtimes that result, and the failures containerd would hit.

What is implemented, after containerd's ``LoadConfigWithPlugins`` / ``resolveImports`` / ``mergeConfig``
(cmd/containerd/server/config/config.go) and /work/shared/reference/gpu-stack.md ("containerd imports do NOT
deep-merge: an imported file's top-level table replaces the earlier one"):

* Load order: the root first, then its ``imports``, breadth first; an imported file's own ``imports`` are
  queued after it (relative paths resolve against the directory of the file that names them). A file is
  loaded once (import cycles are cut).
* An import containing ``*`` is a glob (containerd tests ``strings.Contains(path, "*")``; ``?`` and ``[`` alone
  do not make a glob). It is matched against the keys of ``files`` with fnmatch, segment by segment so that
  ``*`` does not cross ``/`` (as Go's filepath.Glob), and the matches are sorted (glob order). A glob that
  matches nothing is not an error; a plain path that is not in ``files`` is (containerd fails to open it).
* Merge: ``plugins`` merges per plugin id and each ``plugins.<id>`` table is REPLACED whole by a later file
  that has it (mergo merges the Plugins map by key, values are replaced entirely). So a drop-in with
  ``[plugins."io.containerd.grpc.v1.cri"]`` replaces the whole CRI section, runtimes included
  (canonical/k8s-snap#1991). ``imports`` / ``required_plugins`` / ``disabled_plugins`` lists are appended
  (without duplicates); other top-level tables (``grpc``, ``debug``, ``timeouts``, ...) are merged one level
  deep, key by key; top-level scalars are overridden by a later non-empty value.
* Versions: a file without ``version`` is version 1. A root of version 1 (or above 3) is reported as
  unsupported. A drop-in whose version is higher than the root's is the error containerd stops on
  (``drop-in config version 4 higher than root config version 2``, NVIDIA/aicr#1688). A drop-in of a lower
  version is migrated first, as containerd does: v1 ``plugins.cri`` becomes ``io.containerd.grpc.v1.cri``;
  under a version 3 root, a v2 CRI section is migrated into ``io.containerd.cri.v1.runtime`` (containerd
  2.x ``configMigration`` of the CRI runtime plugin: the ``containerd`` sub-table is copied, keys already in
  the target win), and that migrated table then replaces the root's like any other plugin table.
* CRI: version 2 reads ``plugins."io.containerd.grpc.v1.cri".containerd``, version 3
  ``plugins."io.containerd.cri.v1.runtime".containerd`` (runtimes at ``.runtimes``, ``default_runtime_name``).
  ``default_runtime_name`` defaults to ``runc``. When the effective CRI section has no ``runtimes`` table,
  containerd's built-in runc applies (``builtin_runtimes``); when it has one that lacks the default runtime,
  the CRI plugin fails to load (``no corresponding runtime configured in containerd.runtimes for
  default_runtime_name = "runc"``, canonical/k8s-snap#1991). That is containerd 1.6/1.7 behaviour (k8s-snap
  1.32-1.34), where decoding the runtimes table replaces the built-in one; containerd 2.x may keep its
  built-in runc entry, so on 2.x the finding is a strong warning rather than a certain failure.

Any finding in ``errors`` means containerd (or its CRI plugin) would not start with this configuration. A TOML
file that does not parse, or whose ``version`` / ``imports`` / ``plugins`` have the wrong type (containerd
cannot decode it), raises ContainerdConfigError naming the file.
"""

from __future__ import annotations

import copy
import fnmatch
import posixpath
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import Array

__all__ = [
    "CRI_PLUGIN_IDS",
    "RUNC_DROPIN_PATH",
    "ContainerdConfigError",
    "ContainerdFinding",
    "EffectiveConfig",
    "Runtime",
    "add_import",
    "cri_plugin_id",
    "import_dirs",
    "render_runc_dropin",
    "resolve",
]

CRI_PLUGIN_IDS: dict[int, str] = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
RUNC_DROPIN_PATH = "/etc/containerd/conf.d/00-k8s-runc.toml"

_V1_PLUGIN_RENAMES = {"cri": "io.containerd.grpc.v1.cri"}
_LIST_KEYS = ("imports", "required_plugins", "disabled_plugins")
# Keys of the v2 CRI section that containerd 2.x does not carry into io.containerd.cri.v1.runtime.
_V3_SKIPPED_CRI_KEYS = frozenset(
    {
        "cni",
        "containerd",
        "sandbox_image",
        "registry",
        "image_decryption",
        "max_concurrent_downloads",
        "image_pull_progress_timeout",
        "image_pull_with_sync_fs",
        "stats_collect_period",
        "disable_tcp_service",
        "stream_server_address",
        "stream_server_port",
        "stream_idle_timeout",
        "enable_tls_streaming",
        "x509_key_pair_streaming",
    }
)
_V3_SKIPPED_CONTAINERD_KEYS = frozenset({"snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers"})


class ContainerdConfigError(ValueError):
    """A containerd config file that containerd itself could not decode; the message names the file."""


@dataclass(frozen=True)
class Runtime:
    """A CRI runtime handler (``containerd.runtimes.<name>``)."""

    runtime_type: str | None
    binary_name: str | None
    systemd_cgroup: bool | None


@dataclass(frozen=True)
class ContainerdFinding:
    """A failure containerd would hit with the effective configuration.

    kind: unsupported-version | drop-in-version-higher | missing-import | default-runtime-missing |
    invalid-plugin-config.
    """

    kind: str
    message: str
    path: str
    remediation: str


@dataclass(frozen=True)
class EffectiveConfig:
    """What containerd makes of a root config and its imports (see the module docstring for the rules)."""

    root_path: str
    version: int
    imports: list[str]
    runtimes: dict[str, Runtime]
    default_runtime_name: str | None
    drop_in_versions: dict[str, int]
    errors: list[ContainerdFinding]
    cri_plugin_id: str | None = None
    cri_source: str | None = None
    builtin_runtimes: bool = False
    merged: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def cri_plugin_id(version: int) -> str:
    """The plugin id that holds ``containerd.runtimes`` for a config version (2 or 3)."""
    try:
        return CRI_PLUGIN_IDS[version]
    except KeyError:
        raise ValueError(f"containerd config version {version} is not supported (2 or 3)") from None


# --------------------------------------------------------------------------------------------------------------
# loading


def _load(path: str, text: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ContainerdConfigError(f"{path}: invalid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ContainerdConfigError(f"{path}: invalid TOML: nested too deeply") from exc
    for key in _LIST_KEYS:
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise ContainerdConfigError(f"{path}: {key} must be an array of strings, got {value!r}")
    plugins = data.get("plugins")
    if plugins is not None and not isinstance(plugins, dict):
        raise ContainerdConfigError(f"{path}: plugins must be a table, got {plugins!r}")
    _version_of(data, path)
    return data


def _version_of(data: Mapping[str, Any], path: str) -> int:
    version = data.get("version")
    if version is None:
        return 1
    if isinstance(version, bool) or not isinstance(version, int):
        raise ContainerdConfigError(f"{path}: version must be an integer, got {version!r}")
    return version


def _glob(pattern: str, candidates: Mapping[str, str]) -> list[str]:
    parts = pattern.split("/")
    matches = [
        path
        for path in candidates
        if len(path.split("/")) == len(parts)
        and all(fnmatch.fnmatchcase(seg, pat) for seg, pat in zip(path.split("/"), parts, strict=True))
    ]
    return sorted(matches, key=lambda path: path.split("/"))


def _clean_import(parent: str, entry: str) -> str:
    path = posixpath.normpath(entry) if entry else "."
    if not posixpath.isabs(path):
        path = posixpath.normpath(posixpath.join(posixpath.dirname(parent), path))
    return path


def _resolve_imports(parent: str, imports: list[str], files: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for entry in imports:
        path = _clean_import(parent, entry)
        if "*" in path:
            out.extend(_glob(path, files))
        else:
            out.append(path)
    return out


# --------------------------------------------------------------------------------------------------------------
# migration and merge


def _migrate_cri_v2_to_v3(src: Mapping[str, Any], dst: dict[str, Any]) -> dict[str, Any]:
    for key, value in src.items():
        if key not in _V3_SKIPPED_CRI_KEYS:
            dst.setdefault(key, copy.deepcopy(value))
    cni = src.get("cni")
    if isinstance(cni, dict):
        new_cni = dst.get("cni") if isinstance(dst.get("cni"), dict) else {}
        for key, value in cni.items():
            if key == "bin_dir":
                if not new_cni.get("bin_dirs"):
                    new_cni["bin_dirs"] = [value]
            else:
                new_cni.setdefault(key, copy.deepcopy(value))
        dst["cni"] = new_cni
    containerd = src.get("containerd")
    if not isinstance(containerd, dict):
        return dst
    new_containerd = dst.get("containerd") if isinstance(dst.get("containerd"), dict) else {}
    for key, value in containerd.items():
        if key not in _V3_SKIPPED_CONTAINERD_KEYS:
            new_containerd.setdefault(key, copy.deepcopy(value))
    dst["containerd"] = new_containerd
    runtimes = new_containerd.get("runtimes")
    if isinstance(runtimes, dict):
        for runtime in runtimes.values():
            if isinstance(runtime, dict) and "sandbox_mode" in runtime and "sandboxer" not in runtime:
                runtime["sandboxer"] = runtime.pop("sandbox_mode")
    return dst


def _migrate(data: dict[str, Any], version: int, target: int) -> dict[str, Any]:
    """Bring a drop-in of an older version up to ``target`` (containerd migrates before merging)."""
    if version >= target:
        return data
    data = copy.deepcopy(data)
    data["version"] = target
    plugins = data.get("plugins")
    if not isinstance(plugins, dict):
        return data
    if version < 2:
        for old, new in _V1_PLUGIN_RENAMES.items():
            if old in plugins and new not in plugins:
                plugins[new] = plugins.pop(old)
    if target >= 3 and isinstance(plugins.get(CRI_PLUGIN_IDS[2]), dict):
        existing = plugins.get(CRI_PLUGIN_IDS[3])
        dst = existing if isinstance(existing, dict) else {}
        plugins[CRI_PLUGIN_IDS[3]] = _migrate_cri_v2_to_v3(plugins[CRI_PLUGIN_IDS[2]], dst)
    return data


def _is_empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def _merge(merged: dict[str, Any], data: Mapping[str, Any], path: str, plugin_sources: dict[str, str]) -> None:
    for key, value in data.items():
        if key == "plugins" and isinstance(value, dict):
            plugins = merged.setdefault("plugins", {})
            for plugin_id, table in value.items():
                plugins[plugin_id] = copy.deepcopy(table)
                plugin_sources[plugin_id] = path
        elif key in _LIST_KEYS and isinstance(value, list):
            existing = merged.setdefault(key, [])
            existing.extend(item for item in value if item not in existing)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(copy.deepcopy(value))
        elif key not in merged or not _is_empty(value):
            merged[key] = copy.deepcopy(value)


# --------------------------------------------------------------------------------------------------------------
# CRI runtimes


def _runtime(name: str, table: Any, plugin_id: str, source: str, errors: list[ContainerdFinding]) -> Runtime | None:
    def invalid(what: str) -> None:
        errors.append(
            ContainerdFinding(
                kind="invalid-plugin-config",
                message=f"failed to load plugin {plugin_id}: runtime {name!r}: {what}",
                path=source,
                remediation=f'Fix [plugins."{plugin_id}".containerd.runtimes.{name}] in {source}.',
            )
        )

    if not isinstance(table, dict):
        invalid(f"must be a table, got {table!r}")
        return None
    runtime_type = table.get("runtime_type")
    if runtime_type is not None and not isinstance(runtime_type, str):
        invalid(f"runtime_type must be a string, got {runtime_type!r}")
        runtime_type = None
    options = table.get("options", {})
    if not isinstance(options, dict):
        invalid(f"options must be a table, got {options!r}")
        options = {}
    binary = options.get("BinaryName")
    if binary is not None and not isinstance(binary, str):
        invalid(f"options.BinaryName must be a string, got {binary!r}")
        binary = None
    systemd = options.get("SystemdCgroup")
    if systemd is not None and not isinstance(systemd, bool):
        invalid(f"options.SystemdCgroup must be a boolean, got {systemd!r}")
        systemd = None
    return Runtime(runtime_type=runtime_type, binary_name=binary, systemd_cgroup=systemd)


def _cri(
    merged: Mapping[str, Any], version: int, plugin_sources: Mapping[str, str], errors: list[ContainerdFinding]
) -> tuple[str | None, str | None, dict[str, Runtime], str | None, bool]:
    """(plugin id, source file, runtimes, default runtime name, built-in runtimes in effect)."""
    plugin_id = CRI_PLUGIN_IDS.get(version)
    if plugin_id is None:
        return None, None, {}, None, False
    source = plugin_sources.get(plugin_id)
    cri = merged.get("plugins", {}).get(plugin_id)
    if cri is None:
        return plugin_id, None, {}, "runc", True
    where = source or "?"

    def invalid(what: str) -> tuple[str | None, str | None, dict[str, Runtime], str | None, bool]:
        errors.append(
            ContainerdFinding(
                kind="invalid-plugin-config",
                message=f"failed to load plugin {plugin_id}: {what}",
                path=where,
                remediation=f'Fix [plugins."{plugin_id}"] in {where}.',
            )
        )
        return plugin_id, source, {}, None, False

    if not isinstance(cri, dict):
        return invalid(f"the plugin section must be a table, got {cri!r}")
    section = cri.get("containerd", {})
    if not isinstance(section, dict):
        return invalid(f"containerd must be a table, got {section!r}")
    default = section.get("default_runtime_name", "runc")
    if not isinstance(default, str):
        return invalid(f"containerd.default_runtime_name must be a string, got {default!r}")
    tables = section.get("runtimes")
    if tables is None:
        return plugin_id, source, {}, default, True
    if not isinstance(tables, dict):
        return invalid(f"containerd.runtimes must be a table, got {tables!r}")
    runtimes: dict[str, Runtime] = {}
    for name, table in tables.items():
        runtime = _runtime(name, table, plugin_id, where, errors)
        if runtime is not None:
            runtimes[name] = runtime
    if default not in tables:
        errors.append(
            ContainerdFinding(
                kind="default-runtime-missing",
                message=(
                    f"failed to load plugin {plugin_id}: no corresponding runtime configured in containerd.runtimes "
                    f'for default_runtime_name = "{default}"'
                ),
                path=where,
                remediation=(
                    f"The CRI section in effect comes from {where}, and containerd replaces the whole "
                    f'plugins."{plugin_id}" table with the last file that has it (no deep merge). Declare '
                    f'[plugins."{plugin_id}".containerd.runtimes.{default}] in {where} (or in a drop-in that sorts '
                    f"after it and carries the whole CRI section), then restart containerd "
                    f"(canonical/k8s-snap#1991)."
                ),
            )
        )
    return plugin_id, source, runtimes, default, False


# --------------------------------------------------------------------------------------------------------------
# public API


def resolve(root_path: str, files: Mapping[str, str]) -> EffectiveConfig:
    """Resolve ``root_path`` and its imports against ``files`` (absolute path -> TOML text of each file that
    exists) into the configuration containerd would run with. Raises ContainerdConfigError for a file that
    does not decode (or when the root config is not in ``files``)."""
    if root_path not in files:
        raise ContainerdConfigError(f"{root_path}: root config not given (open {root_path}: no such file)")
    root = _load(root_path, files[root_path])
    root_version = _version_of(root, root_path)
    errors: list[ContainerdFinding] = []
    if root_version not in CRI_PLUGIN_IDS:
        detail = "no version key: version 1" if "version" not in root else f"version = {root_version}"
        errors.append(
            ContainerdFinding(
                kind="unsupported-version",
                message=f"unsupported containerd config version {root_version} in {root_path} ({detail})",
                path=root_path,
                remediation=(
                    f"Rewrite {root_path} as version 2 or 3 (`containerd config migrate` prints the migrated "
                    "config); version 1 configs are not supported by containerd 2.x nor by this suite."
                ),
            )
        )

    merged: dict[str, Any] = {}
    plugin_sources: dict[str, str] = {}
    loaded: set[str] = set()
    order: list[str] = []
    drop_in_versions: dict[str, int] = {}
    pending: list[tuple[str, str]] = [(root_path, "")]
    while pending:
        path, parent = pending.pop(0)
        if path in loaded:
            continue
        loaded.add(path)
        if path not in files:
            errors.append(
                ContainerdFinding(
                    kind="missing-import",
                    message=f"open {path}: no such file or directory (imported by {parent})",
                    path=path,
                    remediation=f"Create {path} or remove it from the imports of {parent}.",
                )
            )
            continue
        data = root if path == root_path else _load(path, files[path])
        if path != root_path:
            version = _version_of(data, path)
            drop_in_versions[path] = version
            order.append(path)
            if version > root_version:
                errors.append(
                    ContainerdFinding(
                        kind="drop-in-version-higher",
                        message=f"drop-in config version {version} higher than root config version {root_version}",
                        path=path,
                        remediation=(
                            f"Rewrite {path} with version = {root_version} (the container toolkit copies the version "
                            f"of its config source: set RUNTIME_CONFIG_SOURCE=file and CONTAINERD_CONFIG={root_path}), "
                            "or remove it; containerd does not start until then (NVIDIA/aicr#1688)."
                        ),
                    )
                )
            data = _migrate(data, version, root_version)
        _merge(merged, data, path, plugin_sources)
        pending.extend((child, path) for child in _resolve_imports(path, data.get("imports", []), files))

    plugin_id, source, runtimes, default, builtin = _cri(merged, root_version, plugin_sources, errors)
    return EffectiveConfig(
        root_path=root_path,
        version=root_version,
        imports=order,
        runtimes=runtimes,
        default_runtime_name=default,
        drop_in_versions=drop_in_versions,
        errors=errors,
        cri_plugin_id=plugin_id,
        cri_source=source,
        builtin_runtimes=builtin,
        merged=merged,
    )


def import_dirs(root_text: str, root_path: str | None = None) -> list[str]:
    """The directories the root config's ``imports`` read drop-ins from, in import order, without duplicates.

    A glob contributes the directory part of its pattern, a plain path its directory. Relative imports are
    resolved against ``root_path``'s directory when given (else returned relative).
    """
    data = _load(root_path or "<root config>", root_text)
    dirs: list[str] = []
    for entry in data.get("imports", []):
        path = posixpath.normpath(entry) if entry else "."
        if root_path is not None and not posixpath.isabs(path):
            path = _clean_import(root_path, path)
        directory = posixpath.dirname(path) or "."
        if directory not in dirs:
            dirs.append(directory)
    return dirs


def render_runc_dropin(version: int = 2) -> str:
    """The k8s-snap workaround drop-in (``/etc/containerd/conf.d/00-k8s-runc.toml``): re-declares the runc
    runtime (runtime_type io.containerd.runc.v2, SystemdCgroup = true) and default_runtime_name "runc" under
    the CRI plugin of ``version`` (2: io.containerd.grpc.v1.cri, 3: io.containerd.cri.v1.runtime)."""
    plugin_id = cri_plugin_id(version)
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Re-declares the runc runtime so that the CRI plugin keeps a default runtime"))
    doc.add(tomlkit.comment("(canonical/k8s-snap#1991). Written by gpu-node-conformance."))
    doc.add("version", version)
    options = tomlkit.table()
    options["SystemdCgroup"] = True
    runc = tomlkit.table()
    runc["runtime_type"] = "io.containerd.runc.v2"
    runc["options"] = options
    runtimes = tomlkit.table(is_super_table=True)
    runtimes["runc"] = runc
    containerd = tomlkit.table()
    containerd["default_runtime_name"] = "runc"
    containerd["runtimes"] = runtimes
    cri = tomlkit.table(is_super_table=True)
    cri["containerd"] = containerd
    plugins = tomlkit.table(is_super_table=True)
    plugins[plugin_id] = cri
    doc["plugins"] = plugins
    return tomlkit.dumps(doc)


def add_import(root_text: str, glob: str, path: str = "<root config>") -> str:
    """``root_text`` with ``glob`` added to its ``imports`` array, everything else (comments, layout) kept.

    Idempotent: returns ``root_text`` unchanged when the entry is already there. Raises ContainerdConfigError
    when the text is not TOML or ``imports`` is not an array.
    """
    try:
        doc = tomlkit.parse(root_text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ContainerdConfigError(f"{path}: invalid TOML: {exc}") from exc
    imports = doc.get("imports")
    if imports is None:
        doc["imports"] = [glob]
        return tomlkit.dumps(doc)
    if not isinstance(imports, Array) or not all(isinstance(item, str) for item in imports.unwrap()):
        raise ContainerdConfigError(f"{path}: imports must be an array of strings, got {imports!r}")
    if glob in imports.unwrap():
        return root_text
    imports.append(glob)
    return tomlkit.dumps(doc)
