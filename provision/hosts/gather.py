"""One round trip per host: the read-only facts a run needs, gathered by one command as one document.

``GatherPlan`` says what to gather: files to read, paths to test, directories to list (and which of their files
to read), commands to run (argv and timeout), and whether to find the node's containerd (the k8s snap's base dir
from its lock file, the root config's folder, ``containerd config dump``). ``gather_argv`` builds one
``/bin/sh -c SCRIPT sh ARGS...`` process tree from it: the script is a constant, everything else is a positional
argument, and node-controlled text (file names, contents, command output) only ever travels as data. The script
prints JSON Lines; every value that comes from the host is base64 (so quotes, newlines and NULs cannot break the
framing) and the rest are the plan's own ids and exit statuses. ``parse_document`` reads them back (json,
base64) into a ``HostDocument``: what each file held (or that it is absent), each directory's entries, each
command's exit status and output.

What the document does not cover is not guessed: ``GatheredHost`` (provision/hosts/cached.py) answers from the
document only what it covers and goes to the host for the rest.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from .safety import validate_host_path

#: exit status the script records for a file or path that does not exist
ABSENT_RC = 3
#: what ``GatheredHost`` waits for the whole gather (each command has its own timeout inside)
GATHER_TIMEOUT_S = 300

# Positional arguments after R (the prefix under which the host's files are seen, "" on a real host):
#   f PATH                       read a file          -> {"k":"f","a":"f<i>","o":b64,"rc":0|3|n,"e":b64}
#   p PATH                       test -e / -L         -> {"k":"p","a":"p<i>","rc":0|3}
#   d PATH DEPTH PATTERN         list (depth 1 or 2), read the regular files matching PATTERN
#                                -> {"k":"ls","a":"d<i>[/<j>]","o":b64("<t><name>\0"...)}, t = d|f|o|l
#                                -> {"k":"f","a":"d<i>[/<j>]/<j>","o":b64,"rc":...} for the files read
#                                (t: dir, file, other, dangling link)
#   c TIMEOUT N ARG1..ARGN       run a command        -> {"k":"c","a":"c<i>","o":b64 stdout,"e":b64 stderr,"rc":n}
#   k CHROOT LOCK DEFAULT LAYOUT SNAPBIN VANILLABIN TIMEOUT DEPTH PATTERN
#                                the node's containerd: -> {"k":"kb","a":"k","o":b64(base dir)} then the listing of
#                                the root config's folder as "k" (like d), then, when a binary is there,
#                                {"k":"c","a":"kdump","o","e","rc"} of [chroot CHROOT] BIN --config CFG config dump
# The script always exits 0 after its last record: a failed part is a record with its exit status.
_SCRIPT = r"""
R=$1; shift
exec 4>&1
b() { base64 -w0 "$@"; }
e64() { [ -z "$1" ] || printf '%s' "$1" | b; }  # an empty value is "" without a process (most stderrs)
run() {  # run ID CMD...: stdout and stderr base64, the exit status last on stderr's channel
  printf '{"k":"c","a":"%s","o":"' "$1"; shift
  err=$( { { "$@" 2>&5 5>&- 4>&-; echo "rc=$?" >&5; } | b >&4; } 5>&1 )
  rc=${err##*rc=}; err=${err%rc=*}
  printf '","e":"'; e64 "$err"; printf '","rc":%s}\n' "$rc"
}
readf() {  # readf ID FSPATH
  if [ -e "$2" ]; then
    printf '{"k":"f","a":"%s","o":"' "$1"
    err=$( { b -- "$2" 2>&5 5>&-; echo "rc=$?" >&5; } 5>&1 >&4 )
    rc=${err##*rc=}; err=${err%rc=*}
    printf '","e":"'; e64 "$err"; printf '","rc":%s}\n' "$rc"
  else printf '{"k":"f","a":"%s","rc":3}\n' "$1"; fi
}
listd() {  # listd ID FSDIR DEPTH PATTERN (in a subshell: sh has no local variables)
  id=$1 dir=$2 depth=$3 pat=$4
  [ -d "$dir" ] || { printf '{"k":"ls","a":"%s","rc":3}\n' "$id"; return; }
  set -- "$dir"/* "$dir"/.*
  printf '{"k":"ls","a":"%s","o":"' "$id"
  any=
  for e do  # an empty folder (most of them) is "" without a pipe and a process
    case ${e##*/} in .|..) continue;; esac
    if [ -e "$e" ] || [ -L "$e" ]; then any=1; break; fi
  done
  [ -z "$any" ] || for e do
    n=${e##*/}; case $n in .|..) continue;; esac
    if [ -d "$e" ]; then t=d; elif [ -f "$e" ]; then t=f; elif [ -e "$e" ]; then t=o
    elif [ -L "$e" ]; then t=l; else continue; fi
    printf '%s%s\0' "$t" "$n"
  done | b
  printf '","rc":0}\n'
  j=0
  for e do
    n=${e##*/}; case $n in .|..) continue;; esac
    if [ -d "$e" ]; then
      if [ "$depth" -gt 1 ]; then ( listd "$id/$j" "$e" $((depth - 1)) "$pat" ); fi
    elif [ -f "$e" ]; then case $n in $pat) readf "$id/$j" "$e";; esac
    elif ! [ -e "$e" ] && ! [ -L "$e" ]; then continue; fi
    j=$((j + 1))
  done
}
fi_=0 pi=0 di=0 ci=0
while [ $# -gt 0 ]; do
  case $1 in
  f) readf "f$fi_" "$R$2"; fi_=$((fi_ + 1)); shift 2;;
  p) if [ -e "$R$2" ] || [ -L "$R$2" ]; then rc=0; else rc=3; fi
     printf '{"k":"p","a":"p%s","rc":%s}\n' "$pi" "$rc"; pi=$((pi + 1)); shift 2;;
  d) ( listd "d$di" "$R$2" "$3" "$4" ); di=$((di + 1)); shift 4;;
  c) t=$2 n=$3; shift 3
     ( total=$#; i=0; for a do [ "$i" -lt "$n" ] && set -- "$@" "$a"; i=$((i + 1)); done; shift "$total"
       run "c$ci" timeout -k 5 "$t" "$@" )
     shift "$n"; ci=$((ci + 1));;
  k) ch=$2 lock=$3 base=$4 layout=$5 snapbin=$6 vanilla=$7 t=$8 depth=$9 pat=${10}; shift 10
     if [ -e "$R$lock" ]; then line=; IFS=' 	' read -r line < "$R$lock" || :; [ -n "$line" ] && base=$line; fi
     printf '{"k":"kb","a":"k","o":"'; printf '%s' "$base" | b; printf '","rc":0}\n'
     cfg=$base/$layout/etc/containerd/config.toml
     ( listd k "$R${cfg%/*}" "$depth" "$pat" )
     bin=
     if [ -e "$R$snapbin" ]; then bin=$snapbin
     elif ! [ -e "$R$lock" ] && [ -e "$R$vanilla" ]; then bin=$vanilla cfg=/etc/containerd/config.toml; fi
     if [ -n "$bin" ]; then
       printf '{"k":"kc","a":"k","o":"'; printf '%s' "$cfg" | b; printf '","b":"'; printf '%s' "$bin" | b
       printf '","rc":0}\n'
       if [ -n "$ch" ]; then ( run kdump timeout -k 5 "$t" chroot "$ch" "$bin" --config "$cfg" config dump )
       else ( run kdump timeout -k 5 "$t" "$bin" --config "$cfg" config dump ); fi
     fi;;
  *) printf '{"k":"error","a":"bad-argument","rc":2}\n'; exit 0;;
  esac
done
printf '{"k":"end","a":"","rc":0}\n'
"""


@dataclass(frozen=True)
class DirSpec:
    path: str
    depth: int = 1          # 1: the folder's entries; 2: also the entries of its sub-folders
    read: str = "*.toml"    # shell pattern of the regular files whose content is read

    def __post_init__(self) -> None:
        validate_host_path(self.path, "directory")
        if self.depth not in (1, 2):
            raise ValueError(f"depth {self.depth} must be 1 or 2")


@dataclass(frozen=True)
class ContainerdSpec:
    """Find the node's containerd as provision/hostfacts.py does: base dir from the lock file, its root config."""

    lock_file: str
    default_base: str
    layout: str
    snap_binary: str
    vanilla_binary: str
    chroot: str = ""        # run the binary in a chroot of this folder (a host folder, exec mode path)
    timeout: float = 30
    depth: int = 2
    read: str = "*.toml"


@dataclass(frozen=True)
class GatherPlan:
    files: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    dirs: tuple[DirSpec, ...] = ()
    commands: tuple[tuple[tuple[str, ...], float], ...] = ()
    containerd: ContainerdSpec | None = None

    def __post_init__(self) -> None:
        for p in (*self.files, *self.probes):
            validate_host_path(p)
        for argv, timeout in self.commands:
            if not argv or not all(isinstance(a, str) for a in argv):
                raise TypeError(f"a gathered command is a non-empty argv of str: {argv!r}")
            if not timeout > 0:
                raise ValueError(f"timeout {timeout!r} must be positive")


def _secs(t: float) -> str:
    return f"{t:g}"


def gather_args(plan: GatherPlan, fs_prefix: str) -> list[str]:
    """The script's positional arguments (after ``sh``): the fs prefix, then one group per item of the plan."""
    args = [fs_prefix]
    for p in plan.files:
        args += ["f", p]
    for p in plan.probes:
        args += ["p", p]
    for d in plan.dirs:
        args += ["d", d.path, str(d.depth), d.read]
    for argv, timeout in plan.commands:
        args += ["c", _secs(timeout), str(len(argv)), *argv]
    k = plan.containerd
    if k is not None:
        args += ["k", k.chroot, k.lock_file, k.default_base, k.layout, k.snap_binary, k.vanilla_binary,
                 _secs(k.timeout), str(k.depth), k.read]
    return args


def gather_argv(plan: GatherPlan, fs_prefix: str = "") -> list[str]:
    """One process tree on the host: ``/bin/sh -c <constant script> sh <data...>``."""
    return ["/bin/sh", "-c", _SCRIPT, "sh", *gather_args(plan, fs_prefix)]


# ----------------------------------------------------------------------------------------------- document
@dataclass(frozen=True)
class CommandOutput:
    rc: int
    stdout: bytes
    stderr: bytes


@dataclass
class HostDocument:
    """What one gather found. Paths are host-absolute."""

    files: dict[str, bytes | None] = field(default_factory=dict)      # read: content, or None (absent)
    file_errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # could not be read: rc, stderr
    probes: dict[str, bool] = field(default_factory=dict)
    listings: dict[str, dict[str, str] | None] = field(default_factory=dict)  # dir -> {name: d|f|o}; None absent
    read_patterns: dict[str, str] = field(default_factory=dict)       # dir -> the pattern of files read there
    commands: dict[tuple[tuple[str, ...], float], CommandOutput] = field(default_factory=dict)
    containerd_base: str | None = None
    containerd_dump: tuple[tuple[str, ...], float, CommandOutput] | None = None  # argv, timeout, output
    complete: bool = False  # the script's last record arrived


class GatherParseError(ValueError):
    """The gather's output is not the script's document (the host's sh or base64 differs, or it was cut)."""


def _b64(rec: dict, key: str) -> bytes:
    value = rec.get(key, "")
    if not isinstance(value, str):
        raise GatherParseError(f"record {rec.get('a')!r}: {key} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise GatherParseError(f"record {rec.get('a')!r}: {key} is not base64 ({exc})") from exc


def _entries(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in data.split(b"\0"):
        if raw:
            out[raw[1:].decode("utf-8", errors="surrogateescape")] = raw[:1].decode()
    return out


def parse_document(plan: GatherPlan, stdout: bytes) -> HostDocument:
    """The document the script printed for ``plan``. Raises GatherParseError when it is not one."""
    doc = HostDocument()
    dir_ids: dict[str, str] = {f"d{i}": d.path for i, d in enumerate(plan.dirs)}
    dir_pattern: dict[str, str] = {f"d{i}": d.read for i, d in enumerate(plan.dirs)}
    order: dict[str, list[str]] = {}   # listing id -> entry names in the script's order (ids of the entries)
    k = plan.containerd
    dump_cfg: str | None = None
    dump_bin: str | None = None
    for lineno, line in enumerate(stdout.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise GatherParseError(f"line {lineno} of the gather is not JSON: {line[:120]!r}") from exc
        if not isinstance(rec, dict) or not isinstance(rec.get("k"), str) or not isinstance(rec.get("a"), str):
            raise GatherParseError(f"line {lineno} of the gather is not a record: {line[:120]!r}")
        kind, rid = rec["k"], rec["a"]
        rc = rec.get("rc", 0)
        if not isinstance(rc, int):
            raise GatherParseError(f"record {rid!r}: rc {rc!r} is not a number")
        if kind == "end":
            doc.complete = True
        elif kind == "error":
            raise GatherParseError(f"the gather script refused its arguments ({rid})")
        elif kind == "p":
            doc.probes[plan.probes[int(rid[1:])]] = rc == 0
        elif kind == "kb":
            base = _b64(rec, "o").decode("utf-8", errors="surrogateescape")
            doc.containerd_base = base
            if k is not None:
                cfg = posixpath.join(base, k.layout, "etc/containerd/config.toml")
                dir_ids["k"] = posixpath.dirname(cfg)
                dir_pattern["k"] = k.read
        elif kind == "kc":
            dump_cfg = _b64(rec, "o").decode("utf-8", errors="surrogateescape")
            dump_bin = _b64(rec, "b").decode("utf-8", errors="surrogateescape")
        elif kind == "ls":
            path = _resolve(rid, dir_ids, order)
            if rc == ABSENT_RC:
                doc.listings[path] = None
                continue
            entries = _entries(_b64(rec, "o"))
            doc.listings[path] = entries
            doc.read_patterns[path] = dir_pattern[rid.split("/", 1)[0]]
            order[rid] = [n for n in entries]
        elif kind == "f":
            path = plan.files[int(rid[1:])] if rid.startswith("f") else _resolve(rid, dir_ids, order)
            if rc == 0:
                doc.files[path] = _b64(rec, "o")
            elif rc == ABSENT_RC:
                doc.files[path] = None
            else:
                doc.file_errors[path] = (rc, _b64(rec, "e").decode("utf-8", errors="replace"))
        elif kind == "c":
            out = CommandOutput(rc, _b64(rec, "o"), _b64(rec, "e"))
            if rid == "kdump":
                if k is None or dump_cfg is None or dump_bin is None:
                    raise GatherParseError("a containerd dump without its binary and config path")
                dump: tuple[str, ...] = (dump_bin, "--config", dump_cfg, "config", "dump")
                doc.containerd_dump = (("chroot", k.chroot, *dump) if k.chroot else dump, float(k.timeout), out)
            else:
                argv, timeout = plan.commands[int(rid[1:])]
                doc.commands[(tuple(argv), float(timeout))] = out
        else:
            raise GatherParseError(f"record {rid!r} of unknown kind {kind!r}")
    return doc


def _resolve(rid: str, dir_ids: dict[str, str], order: dict[str, list[str]]) -> str:
    """The host path of a listing or file id: ``d1`` (a planned dir), ``d1/4`` (its 5th entry), ``d1/4/0``..."""
    head, _, rest = rid.partition("/")
    if head not in dir_ids:
        raise GatherParseError(f"record id {rid!r} names no planned directory")
    path, cur = dir_ids[head], head
    for part in rest.split("/") if rest else []:
        names = order.get(cur)
        if names is None or not part.isdigit() or int(part) >= len(names):
            raise GatherParseError(f"record id {rid!r} names no listed entry")
        path = posixpath.join(path, names[int(part)])
        cur = f"{cur}/{part}"
    return path


def command_key(argv: Sequence[str], timeout: float | None) -> tuple[tuple[str, ...], float] | None:
    return None if timeout is None else (tuple(argv), float(timeout))
