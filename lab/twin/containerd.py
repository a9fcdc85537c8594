"""containerd on a lab host view: how the snap's containerd reads its config, and what the NVIDIA container
toolkit pod writes. Written from containerd's and the toolkit's own sources, independently of the suite's
parser (provision/): the twin is the suite's test oracle. Rules and sources: lab/twin/README-host.md.

* :func:`effective` - the config k8s-snap's containerd would load right now, and whether it would start.
* :func:`restart` - ``snap restart k8s.containerd``: evaluate and record the result in .twin/containerd.json.
* :func:`state` - the recorded result (what is running now; files changed since are not read until a restart).
* :func:`toolkit_install` / :func:`toolkit_uninstall` - the toolkit container's install and cleanup on the host.
"""

from __future__ import annotations

import copy
import glob
import posixpath
import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomlkit

from lab.twin.hostview import (
    LOCK_FILE,
    containerd_major,
    containerd_root,
    host_path,
    load_node,
    read_json,
    twin_dir,
    update_json,
)

__all__ = [
    "CRI_ERROR",
    "TOOLKIT_DIR",
    "VERSION_ERROR",
    "ContainerdEval",
    "ToolkitError",
    "effective",
    "render",
    "restart",
    "state",
    "state_record",
    "toolkit_install",
    "toolkit_uninstall",
]

CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_V3 = "io.containerd.cri.v1.runtime"
# canonical/k8s-snap#1991 (as reported there); containerd's own text has backticks around
# `containerd.runtimes` and reads "for `containerd` `default_runtime_name = ..."`
CRI_ERROR = ("failed to load plugin {plugin}: no corresponding runtime configured in containerd.runtimes for "
             'default_runtime_name = "{name}"')
# containerd >= 2.0 LoadConfigWithPlugins (NVIDIA/aicr#1688); containerd itself prints the part after the path
VERSION_ERROR = "failed to load TOML: {path}: drop-in config version {version} higher than root config version {root}"
LOAD_ERROR = "failed to load TOML: {path}: {detail}"

TOOLKIT_DIR = "/usr/local/nvidia/toolkit"
DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
DEFAULT_DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
DEFAULT_CONFIG_SOURCE = "command,file"
DEFAULT_CONTAINERD_VERSION = "1.7.28"
# `containerd config dump` on a host with Docker dumps Docker's containerd (containerd.io, 1.7 series on the DGX
# Spark hosts of canonical/k8s-snap#1991): version 2 and the CRI plugin disabled, so no CRI section at all.
DOCKER_CONTAINERD_DUMP: dict[str, Any] = {
    "version": 2,
    "root": "/var/lib/containerd",
    "state": "/run/containerd",
    "disabled_plugins": ["cri"],
    "imports": [],
    "grpc": {"address": "/run/containerd/containerd.sock", "uid": 0, "gid": 0},
    "plugins": {
        "io.containerd.runtime.v2.task": {"platforms": ["linux/arm64/v8"]},
        "io.containerd.snapshotter.v1.overlayfs": {"root_path": ""},
    },
}


class ToolkitError(RuntimeError):
    """The toolkit container would fail (and crash-loop): no usable config source, a config it cannot read."""


@dataclass(frozen=True)
class ContainerdEval:
    ok: bool
    error: str | None
    runtimes: list[str]
    default_runtime: str
    imports: list[str]                       # files loaded after the root config, in load order (host paths)
    config: str = ""                         # the root config (host path)
    cri_plugin: str = CRI_V2                 # plugin id whose containerd.runtimes were read
    daemon_up: bool = True                   # CRI failures leave containerd running (no CRI); load errors do not
    version: int = 0                         # root config version
    containerd_version: str = DEFAULT_CONTAINERD_VERSION


# ------------------------------------------------------------------------------------------------ loading
def _node_containerd_version(root: Path) -> str:
    try:
        return load_node(root).containerd_version
    except FileNotFoundError:
        return DEFAULT_CONTAINERD_VERSION


def _base_dir(root: Path) -> str:
    try:
        return host_path(root, LOCK_FILE).read_text().strip() or "/"
    except FileNotFoundError:
        return "/"   # k8s-snap without a custom base dir (classic confinement): containerd under /


def snap_config_path(root: Path) -> str:
    """The config.toml k8s-snap's containerd is started with (``--config``), as a host path."""
    base = _base_dir(root)
    path = posixpath.join(containerd_root(base), "etc/containerd/config.toml")
    # k8s-snap's own lock file may already hold B/k8s-containerd (what k8sd uses as its containerd root);
    # take the value as is when only that reading names an existing config
    as_is = posixpath.join(base, "etc/containerd/config.toml")
    if base != "/" and not host_path(root, path).exists() and host_path(root, as_is).exists():
        return as_is
    return path


def _to_host(root: Path, p: Path) -> str:
    return "/" + p.relative_to(root).as_posix()


def _resolve_imports(root: Path, parent: str, imports: list[str]) -> list[str]:
    """containerd's resolveImports: relative to the parent's directory; a path with '*' is a glob (sorted)."""
    out: list[str] = []
    for imp in imports:
        path = posixpath.normpath(imp if imp.startswith("/") else posixpath.join(posixpath.dirname(parent), imp))
        if "*" in path:
            pattern = str(root) + path
            out.extend(_to_host(root, Path(m)) for m in sorted(glob.glob(pattern, include_hidden=True)))
        else:
            out.append(path)
    return out


class _LoadError(Exception):
    pass


def _load_file(root: Path, path: str) -> dict[str, Any]:
    try:
        text = host_path(root, path).read_text()
    except FileNotFoundError as exc:
        raise _LoadError(LOAD_ERROR.format(path=path, detail=f"open {path}: no such file or directory")) from exc
    except IsADirectoryError as exc:
        raise _LoadError(LOAD_ERROR.format(path=path, detail=f"read {path}: is a directory")) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _LoadError(LOAD_ERROR.format(path=path, detail=str(exc))) from exc
    version = doc.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _LoadError(f"failed to unmarshal TOML: {path}: version must be an integer, got {version!r}")
    if not isinstance(doc.get("imports", []), list) or not all(isinstance(i, str) for i in doc.get("imports", [])):
        raise _LoadError(f"failed to unmarshal TOML: {path}: imports must be an array of strings")
    plugins = doc.get("plugins", {})
    if not isinstance(plugins, dict) or not all(isinstance(v, dict) for v in plugins.values()):
        raise _LoadError(f"failed to unmarshal TOML: {path}: plugins must be a table of tables")
    return doc


def _migrate(doc: dict[str, Any], version: int) -> None:
    """containerd 2.x migrates every file below version 3 before merging (v1 -> v2 -> v3)."""
    plugins = doc.setdefault("plugins", {})
    if version <= 1 and "cri" in plugins:
        plugins[CRI_V2] = plugins.pop("cri")
    if version <= 2 and CRI_V2 in plugins:
        # the CRI runtime plugin's ConfigMigration: the whole v2 CRI table becomes the v3 runtime plugin's config
        plugins[CRI_V3] = copy.deepcopy(plugins[CRI_V2])


def _deep_merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _empty(v: Any) -> bool:
    return v in (0, "", False, None) or v == [] or v == {}


def _merge(out: dict[str, Any], doc: Mapping[str, Any], v2_semantics: bool) -> None:
    """mergeConfig: mergo.Merge(WithOverride, append slices) plus containerd's own map rules.

    1.x: each ``plugins.<id>`` table (and timeouts / stream_processors / proxy_plugins entries) replaces the
    earlier one WHOLE. 2.x (containerd/containerd#9982): plugin tables merge deep, key by key.
    """
    for k, v in doc.items():
        if k == "plugins":
            plugins = out.setdefault("plugins", {})
            for pid, table in v.items():
                if v2_semantics and isinstance(plugins.get(pid), dict):
                    _deep_merge(plugins[pid], table)
                else:
                    plugins[pid] = copy.deepcopy(table)
        elif k in ("timeouts", "stream_processors", "proxy_plugins") and isinstance(v, dict):
            out.setdefault(k, {}).update(copy.deepcopy(v))
        elif isinstance(v, list):
            cur = out.setdefault(k, [])
            cur.extend(x for x in v if not (v2_semantics and x in cur))
        elif isinstance(v, dict):
            cur = out.setdefault(k, {})
            for kk, vv in v.items():       # struct fields: a non-empty value overrides
                if not _empty(vv) or kk not in cur:
                    cur[kk] = copy.deepcopy(vv)
        elif not _empty(v) or k not in out:
            out[k] = copy.deepcopy(v)


def effective(host_root: Path) -> ContainerdEval:
    """What k8s-snap's containerd would load from the host view now, and whether it (and its CRI) starts."""
    root = Path(host_root)
    ctr_version = _node_containerd_version(root)
    v2x = containerd_major(ctr_version) >= 2
    config = snap_config_path(root)
    out: dict[str, Any] = {}
    loaded: list[str] = []
    pending = [config]
    root_version = 0
    cri_id = CRI_V3 if v2x else CRI_V2

    def fail(msg: str, first_version: int = 0) -> ContainerdEval:
        return ContainerdEval(ok=False, error=msg, runtimes=[], default_runtime="", imports=loaded[1:],
                              config=config, cri_plugin=cri_id, daemon_up=False, version=first_version,
                              containerd_version=ctr_version)

    while pending:
        path, pending = pending[0], pending[1:]
        if path in loaded:
            continue
        try:
            doc = _load_file(root, path)
        except _LoadError as exc:
            return fail(str(exc), root_version)
        version = doc.get("version", 0)
        if v2x:
            if root_version == 0:
                root_version = version
            if version > root_version:
                return fail(VERSION_ERROR.format(path=path, version=version, root=root_version), root_version)
            if version < 3:
                _migrate(doc, version)
        elif not loaded:
            root_version = version
        _merge(out, doc, v2x)
        loaded.append(path)
        pending.extend(_resolve_imports(root, path, doc.get("imports", [])))

    if not v2x and out.get("version", 0) <= 1:
        cri_id = "cri"    # containerd 1.x decodes a version 1 config by short plugin ids
    disabled = out.get("disabled_plugins") or []
    runtimes: list[str]
    if cri_id in disabled or "cri" in disabled:
        return ContainerdEval(ok=False, error=f"plugin {cri_id} is disabled (disabled_plugins)", runtimes=[],
                              default_runtime="", imports=loaded[1:], config=config, cri_plugin=cri_id,
                              daemon_up=True, version=root_version, containerd_version=ctr_version)
    cri = (out.get("plugins") or {}).get(cri_id) or {}
    ctrd = cri.get("containerd") if isinstance(cri.get("containerd"), dict) else {}
    table = ctrd.get("runtimes")
    # decoding a runtimes table replaces the built-in {"runc": ...} map; without one the built-in runc applies
    runtimes = sorted(table) if isinstance(table, dict) else ["runc"]
    default = ctrd.get("default_runtime_name", "runc")
    if default not in runtimes:
        plugin = CRI_V2 if cri_id == "cri" else cri_id
        return ContainerdEval(ok=False, error=CRI_ERROR.format(plugin=plugin, name=default), runtimes=runtimes,
                              default_runtime=default, imports=loaded[1:], config=config, cri_plugin=cri_id,
                              daemon_up=True, version=root_version, containerd_version=ctr_version)
    return ContainerdEval(ok=True, error=None, runtimes=runtimes, default_runtime=default, imports=loaded[1:],
                          config=config, cri_plugin=cri_id, daemon_up=True, version=root_version,
                          containerd_version=ctr_version)


def state_record(ev: ContainerdEval, restarts: int) -> dict[str, Any]:
    d = asdict(ev)
    d.pop("ok")
    return {"running": ev.ok, "restarts": restarts, "at": time.time(), **d}


def restart(host_root: Path) -> ContainerdEval:
    """``snap restart k8s.containerd``: containerd re-reads its config; the result is what runs from now on."""
    root = Path(host_root)
    ev = effective(root)
    update_json(root, "containerd.json",
                lambda old: state_record(ev, restarts=int((old or {}).get("restarts", 0)) + 1))
    return ev


def state(host_root: Path) -> dict[str, Any]:
    """The containerd that is running (recorded at seed / last restart); evaluated now if never recorded."""
    root = Path(host_root)
    rec = read_json(twin_dir(root) / "containerd.json")
    if rec is None:
        return state_record(effective(root), restarts=0)
    return rec


# ------------------------------------------------------------------------------------------------ the toolkit
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "y", "on")


def _toml_table(d: Mapping[str, Any]) -> Any:
    t = tomlkit.table(is_super_table=False)
    for k in sorted(x for x in d if not isinstance(d[x], dict)):
        t.add(k, d[k])
    for k in sorted(x for x in d if isinstance(d[x], dict)):
        t.add(k, _toml_table(d[k]))
    return t


def render(data: Mapping[str, Any]) -> str:
    """A containerd config as the toolkit writes one (go-toml style: keys sorted, every table with its header)."""
    doc = tomlkit.document()
    for k in sorted(x for x in data if not isinstance(data[x], dict)):
        doc.add(k, data[k])
    for k in sorted(x for x in data if isinstance(data[x], dict)):
        doc.add(tomlkit.nl())
        doc.add(k, _toml_table(data[k]))
    return tomlkit.dumps(doc)


def _load_source(root: Path, sources: str, config_path: str, docker: bool) -> tuple[str, dict[str, Any]]:
    tried: list[str] = []
    for raw in sources.split(","):
        src = raw.strip()
        if not src:
            continue
        if src == "command":
            if docker:
                return "command", copy.deepcopy(DOCKER_CONTAINERD_DUMP)
            # the snap's containerd is not on the host's PATH: `containerd config dump` does not run
            tried.append('command: exec: "containerd": executable file not found in $PATH')
            continue
        if src == "file" or src.startswith("file="):
            path = src.partition("=")[2] or config_path
            try:
                text = host_path(root, path).read_text()
            except FileNotFoundError:
                return f"file={path}", {}
            try:
                return f"file={path}", tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ToolkitError(f"failed to load config: failed to read config {path}: {exc}") from exc
        raise ToolkitError(f"unsupported config source {src!r} in RUNTIME_CONFIG_SOURCE={sources!r}")
    raise ToolkitError("failed to load config: no config source succeeded: " + "; ".join(tried))


def _dropin(source: Mapping[str, Any], cdi_enabled: bool, set_default: bool, faults: tuple[str, ...],
            binary_dir: str = TOOLKIT_DIR) -> tuple[int, str, dict[str, Any]]:
    if not source:
        version = 2
    else:
        version = source.get("version", 1)
        if not isinstance(version, int) or version < 2:
            raise ToolkitError(f"containerd config version {version!r} is not modelled by the lab (v1 takes no "
                               "drop-in)")
    cri_id = CRI_V2 if version == 2 else CRI_V3
    cri = copy.deepcopy(((source.get("plugins") or {}).get(cri_id)) or {})
    ctrd = cri.setdefault("containerd", {})
    runtimes = ctrd.setdefault("runtimes", {})
    template = None
    for candidate in (ctrd.get("default_runtime_name"), "runc", "crun"):
        if candidate and isinstance(runtimes.get(candidate), dict):
            template = runtimes[candidate]
            break
    names = ["nvidia", *(["nvidia-cdi", "nvidia-legacy"] if cdi_enabled else [])]
    for name in names:
        suffix = name.removeprefix("nvidia").replace("-", ".")
        if template is not None:
            rt = copy.deepcopy(template)
        else:
            rt = {"runtime_type": "io.containerd.runc.v2", "runtime_root": "", "runtime_engine": "",
                  "privileged_without_host_devices": False}
        rt.setdefault("options", {})["BinaryName"] = f"{binary_dir}/nvidia-container-runtime{suffix}"
        runtimes[name] = rt
    if set_default:
        ctrd["default_runtime_name"] = "nvidia"
    if "containerd-breaks" in faults:
        ctrd["runtimes"] = {n: runtimes[n] for n in names}
        ctrd.pop("default_runtime_name", None)
    out_version = 4 if "dropin-version-too-high" in faults else version
    return version, cri_id, {"version": out_version, "plugins": {cri_id: cri}}


def toolkit_install(host_root: Path, env: Mapping[str, str], cdi_enabled: bool,
                    faults: tuple[str, ...] | list[str] = ()) -> list[str]:
    """What the NVIDIA container toolkit container does to the host's containerd config; returns host paths.

    Writes the drop-in RUNTIME_DROP_IN_CONFIG (the CRI section of the config source plus the nvidia runtimes)
    and adds ``imports = ["<drop-in dir>/*.toml"]`` to CONTAINERD_CONFIG (creating it with version + imports
    when missing). Raises ToolkitError where the real container would fail. Recorded in .twin/toolkit.json.
    """
    root = Path(host_root)
    faults = tuple(faults)
    config_path = env.get("CONTAINERD_CONFIG") or DEFAULT_CONTAINERD_CONFIG
    dropin_path = env.get("RUNTIME_DROP_IN_CONFIG") or DEFAULT_DROP_IN
    sources = env.get("RUNTIME_CONFIG_SOURCE") or DEFAULT_CONFIG_SOURCE
    set_default = (_truthy(env.get("NVIDIA_RUNTIME_SET_AS_DEFAULT")) or _truthy(env.get("CONTAINERD_SET_AS_DEFAULT")))
    set_default = set_default and not cdi_enabled
    try:
        docker = load_node(root).docker
    except FileNotFoundError:
        docker = False
    used, source = _load_source(root, sources, config_path, docker)
    version, cri_id, dropin = _dropin(source, cdi_enabled, set_default, faults)

    target = host_path(root, dropin_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(dropin))

    cfg_file = host_path(root, config_path)
    try:
        doc = tomlkit.parse(cfg_file.read_text())
    except FileNotFoundError:
        doc = tomlkit.document()
    pattern = posixpath.dirname(dropin_path) + "/*.toml"
    current = list(doc.get("imports", []))
    if pattern not in current:
        if not doc:
            doc.add("version", version)
        if "imports" in doc:
            doc["imports"].append(pattern)
        else:
            doc.add("imports", [pattern])
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(tomlkit.dumps(doc))

    written = [dropin_path, config_path]
    record = {
        "at": time.time(), "env": dict(env), "cdi_enabled": cdi_enabled, "faults": list(faults),
        "source": used, "version": dropin["version"], "cri_plugin": cri_id, "set_as_default": set_default,
        "dropin": dropin_path, "config": config_path, "import": pattern, "written": written,
        "runtimes": sorted(dropin["plugins"][cri_id]["containerd"]["runtimes"]),
    }
    update_json(root, "toolkit.json", lambda old: {"installs": [*((old or {}).get("installs") or []), record],
                                                   "last": record, "installed": True})
    return written


def toolkit_uninstall(host_root: Path) -> list[str]:
    """The toolkit container's cleanup (pod deleted): remove its drop-in; simplify the top-level config.

    As nvidia-container-toolkit's ConfigWithDropIn: the import is removed only when the top-level config holds
    nothing but ``version`` and that one import (so on k8s-snap's config.toml the import stays behind), the
    version goes when it is the only key left, and an empty file is deleted. Returns the host paths changed.
    """
    root = Path(host_root)
    rec = (read_json(twin_dir(root) / "toolkit.json") or {}).get("last")
    if not rec:
        return []
    changed: list[str] = []
    dropin = host_path(root, rec["dropin"])
    if dropin.exists():
        dropin.unlink()
        changed.append(rec["dropin"])
    cfg_file = host_path(root, rec["config"])
    if cfg_file.exists():
        doc = tomlkit.parse(cfg_file.read_text())
        keys = set(doc.keys())
        if keys == {"version", "imports"} and list(doc["imports"]) == [rec["import"]]:
            del doc["imports"]
        if set(doc.keys()) == {"version"}:
            del doc["version"]
        if not doc.keys():
            cfg_file.unlink()
            changed.append(rec["config"])
        elif set(doc.keys()) != keys:
            cfg_file.write_text(tomlkit.dumps(doc))
            changed.append(rec["config"])
    update_json(root, "toolkit.json", lambda old: {**(old or {}), "installed": False, "uninstalled_at": time.time()})
    return changed

