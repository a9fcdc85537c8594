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
* Versions (containerd 2.x LoadConfigWithPlugins; 1.7 services/server/config): a file without ``version`` is
  version 1. Versions 1 to 4 are read (MAX_CONFIG_VERSION; containerd 1.7 reads 1-2, 2.0-2.2 up to 3, 2.3+ up
  to 4: pass ``containerd_version`` to apply one release's limit and wording). A root above that is
  ``unsupported-version`` with containerd's text (2.x: ``expected containerd config version equal to or less
  than `4`, got `5```; 1.x: ``unsupported config version `3```). Every file is migrated to the layout of the
  root's version (at least 2) before merging, one version at a time, as containerd 2.x does: 1 -> 2 renames
  short plugin ids (``cri`` -> ``io.containerd.grpc.v1.cri``, v1MigratePluginName); 2 -> 3 splits the CRI section
  into ``io.containerd.cri.v1.runtime`` (the ``containerd`` sub-table, cni, ...: keys already in the target
  win) and ``io.containerd.cri.v1.images`` (sandbox_image -> pinned_images.sandbox, registry, snapshotter),
  leaving only the streaming keys in ``io.containerd.grpc.v1.cri``; 3 -> 4 moves the top-level grpc / ttrpc /
  debug / metrics addresses into the ``io.containerd.server.v1.*`` plugins. A drop-in whose version is higher
  than the root's is the error containerd 2.x stops on (``drop-in config version 4 higher than root config
  version 2``, NVIDIA/aicr#1688); a root without a version takes the first drop-in's (rootConfigVersion is 0
  until a file sets it). containerd 1.x compares nothing but keeps the last version any file sets, so a v3
  drop-in is ``unsupported config version `3``` and a v2 drop-in under a version-1 root with short plugin ids
  is ``invalid plugin key URI "cri"``.
* CRI: versions 1 and 2 read ``plugins."io.containerd.grpc.v1.cri".containerd``, 3 and 4
  ``plugins."io.containerd.cri.v1.runtime".containerd`` (runtimes at ``.runtimes``, ``default_runtime_name``).
  ``default_runtime_name`` defaults to ``runc``. When the effective CRI section has no ``runtimes`` table,
  containerd's built-in runc applies (``builtin_runtimes``); when it has one that lacks the default runtime,
  the CRI plugin fails to load (``no corresponding runtime configured in containerd.runtimes for
  default_runtime_name = "runc"``, canonical/k8s-snap#1991). That is containerd 1.6/1.7 behaviour (k8s-snap
  1.32-1.34), where decoding the runtimes table replaces the built-in one; containerd 2.x may keep its
  built-in runc entry, so on 2.x the finding is a strong warning rather than a certain failure.
* A runtime without ``runtime_type`` (e.g. a ``runtimes.nvidia`` table with only ``options.BinaryName``) is
  ``runtime-type-missing``: the CRI plugin loads it (neither 1.7's ValidatePluginConfig nor 2.x's
  ValidateRuntimeConfig checks the type), but RunPodSandbox passes the empty type to containerd as the
  runtime name and every pod with that handler fails: ``failed to create containerd container:
  container.Runtime.Name must be set: invalid argument`` (1.7 pkg/cri/server/sandbox_run.go and
  metadata/containers.go; 2.x internal/cri/server/podsandbox/sandbox_run.go). Exception: ``runc`` on containerd
  2.x, which decodes the table into its built-in runc entry (go-toml v2 decodes into an existing map value)
  and so keeps ``io.containerd.runc.v2``.

Any finding in ``errors`` means containerd (or its CRI plugin) would not start with this configuration, or
(runtime-type-missing) that the pods of that runtime would not. A TOML
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
    "CRI_IMAGES_PLUGIN_IDS",
    "CRI_PLUGIN_IDS",
    "MAX_CONFIG_VERSION",
    "RUNC_DROPIN_PATH",
    "ContainerdConfigError",
    "ContainerdFinding",
    "EffectiveConfig",
    "Runtime",
    "add_import",
    "cri_plugin_id",
    "import_dirs",
    "max_config_version",
    "render_runc_dropin",
    "resolve",
]

# The plugin that holds containerd.runtimes, per config version. Version 1 files name plugins by their short id
# ("cri"); they are migrated to version 2 names before anything is read (containerd 2.x v1Migrate; containerd
# 1.7 looks plugins up by id, the same table). Version 4 (containerd 2.3+) moved only server settings.
CRI_PLUGIN_IDS: dict[int, str] = {
    1: "io.containerd.grpc.v1.cri",
    2: "io.containerd.grpc.v1.cri",
    3: "io.containerd.cri.v1.runtime",
    4: "io.containerd.cri.v1.runtime",
}
# The plugin that holds the image settings (sandbox image, registry, snapshotter), per config version.
CRI_IMAGES_PLUGIN_IDS: dict[int, str] = {
    1: "io.containerd.grpc.v1.cri",
    2: "io.containerd.grpc.v1.cri",
    3: "io.containerd.cri.v1.images",
    4: "io.containerd.cri.v1.images",
}
MAX_CONFIG_VERSION = 4  # containerd 2.3 and 2.4 (version.ConfigVersion); 2.0-2.2 read up to 3, 1.7 up to 2
RUNC_DROPIN_PATH = "/etc/containerd/conf.d/00-k8s-runc.toml"

# containerd 2.x cmd/containerd/server/config/config.go v1MigratePluginName: the "corePlugins" of version 1.
_V1_PLUGIN_RENAMES = {
    "cri": "io.containerd.grpc.v1.cri",
    "cgroups": "io.containerd.monitor.v1.cgroups",
    "linux": "io.containerd.runtime.v1.linux",
    "scheduler": "io.containerd.gc.v1.scheduler",
    "bolt": "io.containerd.metadata.v1.bolt",
    "task": "io.containerd.runtime.v2.task",
    "opt": "io.containerd.internal.v1.opt",
    "restart": "io.containerd.internal.v1.restart",
    "tracing": "io.containerd.internal.v1.tracing",
    "otlp": "io.containerd.tracing.processor.v1.otlp",
    "aufs": "io.containerd.snapshotter.v1.aufs",
    "btrfs": "io.containerd.snapshotter.v1.btrfs",
    "devmapper": "io.containerd.snapshotter.v1.devmapper",
    "native": "io.containerd.snapshotter.v1.native",
    "overlayfs": "io.containerd.snapshotter.v1.overlayfs",
    "zfs": "io.containerd.snapshotter.v1.zfs",
}
# Keys of the v2 CRI section that containerd 2.x moves to io.containerd.cri.v1.images (images/plugin.go).
_V3_IMAGE_KEYS = ("registry", "image_decryption", "max_concurrent_downloads", "image_pull_progress_timeout",
                  "image_pull_with_sync_fs", "stats_collect_period")
_V3_IMAGE_CONTAINERD_KEYS = ("snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers")
# Keys that stay in io.containerd.grpc.v1.cri from version 3 on (plugins/cri/cri.go configMigration).
_V3_CRI_SERVER_KEYS = ("disable_tcp_service", "stream_server_address", "stream_server_port", "stream_idle_timeout",
                       "enable_tls_streaming", "x509_key_pair_streaming")
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
    runtime-type-missing | invalid-plugin-config.
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
    """The plugin id that holds ``containerd.runtimes`` for a config version (1 to 4; version 1 files are read
    after migration to version 2 names)."""
    try:
        return CRI_PLUGIN_IDS[version]
    except KeyError:
        raise ValueError(
            f"containerd config version {version} is not supported (1 to {MAX_CONFIG_VERSION})") from None


def max_config_version(containerd_version: str | None) -> int:
    """The highest config version a containerd release reads: 1.x: 2, 2.0-2.2: 3, 2.3 and later: 4 (its
    version.ConfigVersion). None (release unknown): MAX_CONFIG_VERSION."""
    if not containerd_version:
        return MAX_CONFIG_VERSION
    parts = [int(p) for p in containerd_version.lstrip("v").split("-")[0].split(".")[:2] if p.isdigit()]
    major, minor = [*parts, 0, 0][:2]
    if major < 2:
        return 2
    if major == 2 and minor < 3:
        return 3
    return MAX_CONFIG_VERSION


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


def _v1_plugin_name(name: str) -> str:
    """containerd 2.x v1MigratePluginName: a short (dot-less) version 1 plugin id as its full URI."""
    if "." in name:
        return name
    if name in _V1_PLUGIN_RENAMES:
        return _V1_PLUGIN_RENAMES[name]
    if name.endswith("-service"):
        return "io.containerd.service.v1." + name
    if name in ("windows", "windows-lcow"):
        return "io.containerd.snapshotter.v1." + name
    return "io.containerd.grpc.v1." + name


def _migrate_images_v2_to_v3(src: Mapping[str, Any], dst: dict[str, Any]) -> dict[str, Any]:
    """containerd 2.x plugins/cri/images migrateConfig: the image settings of the v2 CRI section."""
    pinned = dst.get("pinned_images") if isinstance(dst.get("pinned_images"), dict) else {}
    if "sandbox_image" in src:
        pinned["sandbox"] = copy.deepcopy(src["sandbox_image"])
    if pinned:
        dst["pinned_images"] = pinned
    for key in _V3_IMAGE_KEYS:
        if key in src:
            dst[key] = copy.deepcopy(src[key])
    containerd = src.get("containerd")
    if isinstance(containerd, dict):
        for key in _V3_IMAGE_CONTAINERD_KEYS:
            if key in containerd:
                dst[key] = copy.deepcopy(containerd[key])
    return dst


def _migrate_services_v3_to_v4(data: dict[str, Any], plugins: dict[str, Any]) -> None:
    """containerd 2.3+ serviceMigrate (the part a config file can show): top-level grpc / ttrpc / debug /
    metrics addresses move into the io.containerd.server.v1.* (and grpc-prometheus) plugin tables."""
    def table(key: str) -> dict[str, Any]:
        value = data.get(key)
        return value if isinstance(value, dict) else {}

    grpc, ttrpc, debug, metrics = table("grpc"), table("ttrpc"), table("debug"), table("metrics")
    if debug.get("address") and "io.containerd.server.v1.debug" not in plugins:
        plugins["io.containerd.server.v1.debug"] = {k: debug.pop(k) for k in ("address", "uid", "gid") if k in debug}
    grpc_keys = ("address", "uid", "gid", "max_recv_message_size", "max_send_message_size")
    if any(grpc.get(k) for k in grpc_keys) and "io.containerd.server.v1.grpc" not in plugins:
        plugins["io.containerd.server.v1.grpc"] = {k: grpc[k] for k in grpc_keys if k in grpc}
    if grpc.get("tcp_address") and "io.containerd.server.v1.grpc-tcp" not in plugins:
        plugins["io.containerd.server.v1.grpc-tcp"] = {
            {"tcp_address": "address", "tcp_tls_ca": "tls_ca", "tcp_tls_cert": "tls_cert", "tcp_tls_key": "tls_key",
             "tcp_tls_common_name": "tls_common_name"}[k]: v
            for k, v in grpc.items() if k.startswith("tcp_")}
    if "io.containerd.server.v1.ttrpc" not in plugins:
        address = ttrpc.get("address") or (f"{grpc['address']}.ttrpc" if grpc.get("address") else "")
        if address:
            plugins["io.containerd.server.v1.ttrpc"] = {"address": address, "uid": ttrpc.get("uid", grpc.get("uid", 0)),
                                                        "gid": ttrpc.get("gid", grpc.get("gid", 0))}
    if metrics.get("grpc_histogram") and "io.containerd.metrics.v1.grpc-prometheus" not in plugins:
        plugins["io.containerd.metrics.v1.grpc-prometheus"] = {"grpc_histogram": metrics.pop("grpc_histogram")}
    if metrics.get("address") and "io.containerd.server.v1.metrics" not in plugins:
        plugins["io.containerd.server.v1.metrics"] = {"address": metrics.pop("address")}
    for key in ("grpc", "ttrpc"):
        data.pop(key, None)


def _migrate(data: dict[str, Any], version: int, target: int) -> dict[str, Any]:
    """Bring a file of an older version up to ``target``, one version at a time, as containerd 2.x does before
    merging (MigrateConfigTo + each plugin's ConfigMigration)."""
    if version >= target:
        return data
    data = copy.deepcopy(data)
    data["version"] = target
    plugins = data.get("plugins")
    if not isinstance(plugins, dict):
        plugins = {}
    if version < 2:
        for old in [name for name in plugins if "." not in name]:
            new = _v1_plugin_name(old)
            if new not in plugins:
                plugins[new] = plugins.pop(old)
        for key in ("disabled_plugins", "required_plugins"):
            if isinstance(data.get(key), list):
                data[key] = [_v1_plugin_name(name) for name in data[key]]
    if version < 3 <= target and isinstance(plugins.get(CRI_PLUGIN_IDS[2]), dict):
        src = plugins[CRI_PLUGIN_IDS[2]]
        runtime = plugins.get(CRI_PLUGIN_IDS[3])
        plugins[CRI_PLUGIN_IDS[3]] = _migrate_cri_v2_to_v3(src, runtime if isinstance(runtime, dict) else {})
        images = plugins.get(CRI_IMAGES_PLUGIN_IDS[3])
        plugins[CRI_IMAGES_PLUGIN_IDS[3]] = _migrate_images_v2_to_v3(src, images if isinstance(images, dict) else {})
        plugins[CRI_PLUGIN_IDS[2]] = {k: copy.deepcopy(v) for k, v in src.items() if k in _V3_CRI_SERVER_KEYS}
    if version < 4 <= target:
        _migrate_services_v3_to_v4(data, plugins)
    if plugins:
        data["plugins"] = plugins
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


def _runtime_type_missing(name: str, plugin_id: str, source: str) -> ContainerdFinding:
    return ContainerdFinding(
        kind="runtime-type-missing",
        message=(
            f"runtime {name!r} in {source} has no runtime_type: containerd's CRI plugin loads it, but every pod "
            f"with runtimeClassName {name} fails to start with \"failed to create containerd container: "
            f"container.Runtime.Name must be set: invalid argument\""
        ),
        path=source,
        remediation=(
            f'Add runtime_type = "io.containerd.runc.v2" to [plugins."{plugin_id}".containerd.runtimes.{name}] in '
            f"{source} (the CRI plugin passes runtime_type to containerd as the runtime name; options.BinaryName "
            "alone is not enough), then restart containerd."
        ),
    )


def _runtime(name: str, table: Any, plugin_id: str, source: str, errors: list[ContainerdFinding],
             builtin_runc_type: bool = False) -> Runtime | None:
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
    if runtime_type == "" or (runtime_type is None and "runtime_type" not in table):
        if name == "runc" and builtin_runc_type:
            runtime_type = "io.containerd.runc.v2"  # containerd 2.x decodes into its built-in runc entry
        else:
            errors.append(_runtime_type_missing(name, plugin_id, source))
    return Runtime(runtime_type=runtime_type, binary_name=binary, systemd_cgroup=systemd)


def _cri(
    merged: Mapping[str, Any], version: int, plugin_sources: Mapping[str, str], errors: list[ContainerdFinding],
    builtin_runc_type: bool = False,
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
        runtime = _runtime(name, table, plugin_id, where, errors, builtin_runc_type)
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


def _unsupported(root_path: str, version: int, declared: bool, containerd_version: str | None,
                 highest: int) -> ContainerdFinding:
    detail = f"version = {version}" if declared else "no version key: version 1"
    if containerd_version and highest == 2:
        said = f"unsupported config version `{version}`"  # containerd 1.x ValidateV2
    else:
        said = f"expected containerd config version equal to or less than `{highest}`, got `{version}`"  # 2.x
    reads = (f"containerd {containerd_version} reads versions 1 to {highest}" if containerd_version else
             "containerd 2.3+ reads versions 1 to 4, 2.0-2.2 up to 3, 1.7 up to 2")
    return ContainerdFinding(
        kind="unsupported-version",
        message=f"failed to load TOML from {root_path}: {said} ({detail}; {reads})",
        path=root_path,
        remediation=(
            f"Rewrite {root_path} with a version the node's containerd reads (`containerd config migrate` prints the "
            "config migrated to the running containerd's version), or upgrade containerd to a release that reads it."
        ),
    )


def resolve(root_path: str, files: Mapping[str, str], containerd_version: str | None = None) -> EffectiveConfig:
    """Resolve ``root_path`` and its imports against ``files`` (absolute path -> TOML text of each file that
    exists) into the configuration containerd would run with. Raises ContainerdConfigError for a file that
    does not decode (or when the root config is not in ``files``).

    ``containerd_version`` (e.g. "1.7.28", "2.1.4"), when known, applies that release's rules: 1.x reads
    config versions 1 and 2 (the merged ``version`` is the last non-zero one, drop-ins are not compared with
    the root), 2.0-2.2 up to 3, 2.3+ up to 4 (2.x compares each drop-in with the root and migrates every file to
    its own version). Unknown: containerd 2.x's rules with versions up to 4 (a root of version 3 or 4 is only
    written for containerd 2.x)."""
    if root_path not in files:
        raise ContainerdConfigError(f"{root_path}: root config not given (open {root_path}: no such file)")
    root = _load(root_path, files[root_path])
    root_version = _version_of(root, root_path)
    declared = "version" in root
    highest = max_config_version(containerd_version)
    containerd_1 = highest == 2 and bool(containerd_version)
    errors: list[ContainerdFinding] = []
    if root_version < 1 or root_version > highest:
        errors.append(_unsupported(root_path, root_version, declared, containerd_version, highest))
    layout = max(root_version, 2) if root_version in CRI_PLUGIN_IDS else None
    # containerd 2.x decodes the CRI section into its default config (go-toml v2 decodes into the existing
    # map entry), so a runc table without runtime_type keeps the built-in io.containerd.runc.v2.
    builtin_runc_type = not containerd_1 and (layout or 0) >= (2 if containerd_version else 3)

    merged: dict[str, Any] = {}
    plugin_sources: dict[str, str] = {}
    loaded: set[str] = set()
    order: list[str] = []
    drop_in_versions: dict[str, int] = {}
    compare_with = root.get("version") or 0  # containerd 2.x: rootConfigVersion, taken from the next file while 0
    last_version = compare_with  # containerd 1.x: mergo keeps the last non-zero version
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
            raw = data.get("version") or 0
            drop_in_versions[path] = version
            order.append(path)
            last_version = raw or last_version
            if compare_with == 0:
                compare_with = raw
            if not containerd_1 and raw > compare_with:
                errors.append(
                    ContainerdFinding(
                        kind="drop-in-version-higher",
                        message=f"drop-in config version {raw} higher than root config version {compare_with}",
                        path=path,
                        remediation=(
                            f"Rewrite {path} with version = {compare_with} (the container toolkit copies the version "
                            f"of its config source: set RUNTIME_CONFIG_SOURCE=file and CONTAINERD_CONFIG={root_path}), "
                            "or remove it; containerd does not start until then (NVIDIA/aicr#1688)."
                        ),
                    )
                )
        if layout is not None:
            data = _migrate(data, _version_of(data, path), layout)
        _merge(merged, data, path, plugin_sources)
        pending.extend((child, path) for child in _resolve_imports(path, data.get("imports", []), files))

    if containerd_1 and last_version > 2 and root_version <= 2:
        errors.append(ContainerdFinding(
            kind="unsupported-version",
            message=(f"failed to load TOML from {root_path}: unsupported config version `{last_version}` (containerd "
                     f"{containerd_version} keeps the last version any file sets; a drop-in sets {last_version})"),
            path=next((p for p in reversed(order) if drop_in_versions.get(p) == last_version), root_path),
            remediation="Rewrite the drop-in with version = 2 (or without a version); containerd 1.x reads 1 and 2.",
        ))
    if containerd_1 and last_version == 2 and root_version == 1:
        short = sorted(name for name in (root.get("plugins") or {}) if "." not in name)
        if short:
            errors.append(ContainerdFinding(
                kind="invalid-plugin-config",
                message=(f'failed to load TOML from {root_path}: invalid plugin key URI "{short[0]}" expect '
                         "io.containerd.x.vx (a drop-in of version 2 makes the merged config version 2, and the "
                         "version 1 root names its plugins by short id)"),
                path=root_path,
                remediation=f"Migrate {root_path} to version 2 (`containerd config migrate`), or drop the version "
                            "from the drop-in.",
            ))

    if layout is None:
        plugin_id, source, runtimes, default, builtin = None, None, {}, None, False
    else:
        plugin_id, source, runtimes, default, builtin = _cri(merged, layout, plugin_sources, errors, builtin_runc_type)
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
    the CRI plugin of ``version`` (1: ``cri`` without a version key, which containerd 1.x reads by plugin id
    and 2.x migrates; 2: io.containerd.grpc.v1.cri; 3 and 4: io.containerd.cri.v1.runtime)."""
    plugin_id = "cri" if version == 1 else cri_plugin_id(version)
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Re-declares the runc runtime so that the CRI plugin keeps a default runtime"))
    doc.add(tomlkit.comment("(canonical/k8s-snap#1991). Written by gpu-node-conformance."))
    if version != 1:
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
