"""What the node's own containerd says about its configuration (`containerd --config ROOT config dump`). No I/O.

The suite asks the node: containerd loads the root config and its imports with its own code and prints the
merged result, or refuses with its own error. :func:`parse` reads that output; :func:`runtimes_verdict` decides
the runtimes check from it and compares it with the suite's resolver (provision/observe/containerd.py), which
stays to explain which file set what. When the two disagree the node's containerd wins and the verdict says so;
when containerd could not be run the resolver decides and the verdict says that instead.

``config dump`` does not start plugins, so the CRI plugin's own start-up check (the default runtime must be one
of ``containerd.runtimes``, containerd's ``ValidatePluginConfig`` / ``ValidateRuntimeConfig``) is applied here to
the dumped table, with containerd's wording.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from provision.observe import containerd as ctd

__all__ = ["Dump", "DumpedConfig", "RuntimesVerdict", "parse", "runtimes_verdict", "versions_verdict"]

CRI_IDS = ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri")
NO_DEFAULT = ('no corresponding runtime configured in `containerd.runtimes` for `containerd` '
              '`default_runtime_name = "{name}"')


@dataclass(frozen=True)
class Dump:
    """One run of ``containerd config dump`` on the node (``ran`` False: it could not be run, ``why`` says)."""

    ran: bool
    argv: tuple[str, ...] = ()
    rc: int = 0
    stdout: str = ""
    stderr: str = ""
    why: str = ""

    @property
    def refused(self) -> bool:
        return self.ran and self.rc != 0

    @property
    def error(self) -> str:
        """containerd's own error text (its last stderr line without the ``containerd: `` prefix)."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {self.rc}"
        return last.removeprefix("containerd: ")


@dataclass(frozen=True)
class DumpedConfig:
    version: int
    cri_plugin: str | None
    runtimes: tuple[str, ...]
    default_runtime: str | None
    disabled_plugins: tuple[str, ...]
    imports: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict, repr=False)


class DumpParseError(ValueError):
    pass


def parse(text: str) -> DumpedConfig:
    """The merged configuration containerd printed. Raises DumpParseError when it is not TOML."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DumpParseError(f"containerd config dump printed something that is not TOML: {exc}") from exc
    plugins = data.get("plugins") if isinstance(data.get("plugins"), dict) else {}
    cri_id = next((i for i in CRI_IDS if isinstance(plugins.get(i), dict)
                   and isinstance(plugins[i].get("containerd"), dict)), None)
    ctrd = plugins[cri_id]["containerd"] if cri_id else {}
    runtimes = ctrd.get("runtimes") if isinstance(ctrd.get("runtimes"), dict) else {}
    default = ctrd.get("default_runtime_name")
    return DumpedConfig(version=int(data.get("version") or 1), cri_plugin=cri_id, runtimes=tuple(sorted(runtimes)),
                        default_runtime=default if isinstance(default, str) else None,
                        disabled_plugins=tuple(str(x) for x in data.get("disabled_plugins") or ()),
                        imports=tuple(str(x) for x in data.get("imports") or ()), data=data)


@dataclass(frozen=True)
class RuntimesVerdict:
    ok: bool
    problems: list[str]
    runtimes: tuple[str, ...]
    source: str                    # "node" (containerd's own answer) or "resolver" (the suite's fallback)
    notes: list[str] = field(default_factory=list)


def _cri_disabled(cfg: DumpedConfig) -> bool:
    return bool({"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"} & set(cfg.disabled_plugins))


def _resolver_problems(eff: ctd.EffectiveConfig) -> tuple[list[str], tuple[str, ...], str | None]:
    problems = [f.message for f in eff.errors if f.kind != "drop-in-version-higher"]
    return problems, tuple(sorted(eff.runtimes)), eff.default_runtime_name


def _wanted(runtimes: tuple[str, ...], default: str | None) -> list[str]:
    problems = []
    if "runc" not in runtimes:
        problems.append("no runc runtime")
    if default not in (None, "runc"):
        problems.append(f"default runtime is {default!r}")
    if "nvidia" not in runtimes:
        problems.append("no nvidia runtime")
    return problems


def runtimes_verdict(dump: Dump, eff: ctd.EffectiveConfig | None, resolver_error: str | None = None) -> RuntimesVerdict:
    """runc (default) and nvidia in the node's containerd: decided by the node's containerd when it answered."""
    if not dump.ran:
        note = f"containerd config dump could not run on the node ({dump.why}): verdict from the suite's resolver"
        if eff is None:
            return RuntimesVerdict(False, [f"a readable containerd config: {resolver_error}"], (), "resolver", [note])
        problems, runtimes, default = _resolver_problems(eff)
        problems += _wanted(runtimes, default)
        return RuntimesVerdict(not problems, problems, runtimes, "resolver", [note])
    notes: list[str] = []
    if dump.refused:
        problems = [f"the node's containerd refuses its configuration: {dump.error}"]
        if eff is not None and eff.ok:
            notes.append("the suite's resolver saw no error here; the node's containerd wins")
        return RuntimesVerdict(False, problems, (), "node", notes)
    try:
        cfg = parse(dump.stdout)
    except DumpParseError as exc:
        return RuntimesVerdict(False, [str(exc)], (), "node", notes)
    problems = []
    if _cri_disabled(cfg) or cfg.cri_plugin is None:
        problems.append("the CRI plugin is disabled or absent in the node's containerd (disabled_plugins)")
    default = cfg.default_runtime or "runc"
    if cfg.cri_plugin is not None and default not in cfg.runtimes:
        problems.append(f"containerd's CRI plugin will not load: {NO_DEFAULT.format(name=default)}")
    problems += _wanted(cfg.runtimes, cfg.default_runtime)
    problems = list(dict.fromkeys(problems))
    if eff is not None:
        r_problems, r_runtimes, r_default = _resolver_problems(eff)
        if r_runtimes != cfg.runtimes or (r_default or "runc") != default:
            notes.append(f"the suite's resolver expected runtimes {list(r_runtimes)} (default {r_default or 'runc'}), "
                         f"the node's containerd has {list(cfg.runtimes)} (default {default}): the node's containerd "
                         "wins")
        elif bool(r_problems) != bool(problems):
            notes.append("the suite's resolver and the node's containerd disagree on whether this config works: "
                         "the node's containerd wins")
    return RuntimesVerdict(not problems, problems, cfg.runtimes, "node", notes)


_VERSION_WORDS = ("version",)


def versions_verdict(dump: Dump, higher: dict[str, int]) -> RuntimesVerdict:
    """Config versions: the node's containerd refusing its config over a version decides; the resolver's list of
    drop-ins above the root's version (``higher``) only explains (containerd 2.3 accepts version 4 drop-ins under
    a version 3 root; containerd 2.1 refuses them)."""
    notes: list[str] = []
    if dump.refused and any(w in dump.error for w in _VERSION_WORDS):
        return RuntimesVerdict(False, [f"the node's containerd refuses its configuration: {dump.error}"], (), "node",
                               [f"the suite's resolver names {', '.join(higher)}"] if higher else [])
    if higher:
        notes.append(f"{', '.join(f'{p} (version {v})' for p, v in higher.items())} above the root's version, which "
                     "the node's containerd accepts: the node's containerd wins")
    return RuntimesVerdict(True, [], (), "node", notes)


def dropins_without_runc(files: dict[str, str], root_path: str) -> list[str]:
    """Drop-ins whose CRI table declares runtimes but not runc (on containerd 1.x that table replaces the root's)."""
    out = []
    for path, text in sorted(files.items()):
        if path == root_path:
            continue
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        for pid in CRI_IDS:
            rts = (((data.get("plugins") or {}).get(pid) or {}).get("containerd") or {}).get("runtimes")
            if isinstance(rts, dict) and "runc" not in rts:
                out.append(path)
                break
    return out


def dumped_source(toolkit_env: dict[str, str], docker: bool) -> str:
    """Which config the toolkit copied into its drop-in, from its RUNTIME_CONFIG_SOURCE (nvidia-ctk-installer's
    default ``command,file``): ``command`` runs the ``containerd`` on the host's PATH - Docker's on a host with
    Docker, whose config has the CRI plugin disabled; without Docker it fails and ``file`` is used."""
    sources = toolkit_env.get("RUNTIME_CONFIG_SOURCES") or toolkit_env.get("RUNTIME_CONFIG_SOURCE") or "command,file"
    first = sources.split(",")[0].strip()
    if first == "command" and docker:
        return (f"RUNTIME_CONFIG_SOURCE={sources}: the toolkit ran `containerd config dump`, which on this host is "
                "Docker's /usr/bin/containerd (CRI plugin disabled): its drop-in has no runc")
    config = toolkit_env.get("CONTAINERD_CONFIG") or "/etc/containerd/config.toml"
    return f"RUNTIME_CONFIG_SOURCE={sources}: the toolkit copied {first if first != 'command' else 'file'} " \
           f"({config})"
