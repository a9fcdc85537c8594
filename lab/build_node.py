"""Build the real programs of a lab GPU node from the Go module proxy, once per version, into the user cache.

* containerd, at the version each k8s-snap track ships (nearest the proxy serves), static
  (``CGO_ENABLED=0``, no btrfs/devmapper/zfs/aufs snapshotters), plus the lab's judge program
  (lab/containerd_judge/v<major>/) built **inside a copy of that containerd module**: the judge uses
  containerd's own config loader and CRI config validation, some of which (2.x ``internal/cri/config``) only
  code inside the module may import. Both binaries come from one ``go build``.
* the runtime-configuration half of the NVIDIA container toolkit container (lab/toolkit_runtime/), built against
  ``github.com/NVIDIA/nvidia-container-toolkit`` at the version the chart's toolkit image tag names; go-nvml
  needs cgo, so it links statically with ``-linkmode external -extldflags -static``.

Cache: ``~/.cache/gpu-node-conformance/lab/containerd-<version>/bin/{containerd,containerd-judge-<sha>}`` and
``…/lab/toolkit-<version>/bin/toolkit-runtime``. Only the versions the default lab and ``make test`` use are
built by :func:`ensure_node_binaries`; other versions are built on request (``python -m lab build-node
--containerd v2.1.9``). See docs/containerd.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from lab import versions
from lab.build import BuildError, _go_env, _log, _run

__all__ = [
    "CONTAINERD_FOR_TRACK",
    "DEFAULT_TRACK",
    "DOCKER_CONTAINERD",
    "TOOLKIT_FOR_TAG",
    "containerd_bin",
    "containerd_build_for",
    "ensure_containerd",
    "ensure_node_binaries",
    "ensure_toolkit",
    "judge_bin",
    "toolkit_runtime_bin",
    "toolkit_version_for",
]

HERE = Path(__file__).resolve().parent
# k8s-snap track -> containerd it ships (gpu-stack.md), as the nearest version the Go module proxy serves
CONTAINERD_FOR_TRACK = {"1.33": "v1.7.35", "1.34": "v1.7.35", "1.35": "v2.1.9", "1.36": "v2.3.7"}
DEFAULT_TRACK = "1.34"
# Docker's containerd (containerd.io) on the DGX Spark hosts of canonical/k8s-snap#1991: a 1.7 release
DOCKER_CONTAINERD = "v1.7.35"
# the chart's toolkit image tag (values.yaml toolkit.version) -> the toolkit module version built for it
TOOLKIT_FOR_TAG = {"v1.19.0": "v1.19.0", "v1.20.0": "v1.20.0"}
# built by ensure_node_binaries (what the default lab and `make test` use); others on request
DEFAULT_CONTAINERD = ("v1.7.35", "v2.1.9", "v2.3.7")
DEFAULT_TOOLKITS = ("v1.19.0", "v1.20.0")   # the v26.3 and v26.7 charts (the upgrade test runs both)
CONTAINERD_TAGS = "no_btrfs no_devmapper no_zfs no_aufs"


def _module(version: str) -> str:
    return "github.com/containerd/containerd" if version.startswith("v1.") else "github.com/containerd/containerd/v2"


def containerd_dir(version: str) -> Path:
    return versions.cache_root() / f"containerd-{version}" / "bin"


def toolkit_dir(version: str) -> Path:
    return versions.cache_root() / f"toolkit-{version}" / "bin"


def _need(path: Path, what: str, how: str) -> Path:
    if not path.is_file():
        raise BuildError(f"{what} is not built ({path} is missing): run `{how}`")
    return path


def containerd_bin(version: str) -> Path:
    return _need(containerd_dir(version) / "containerd", f"containerd {version}",
                 f"python -m lab build-node --containerd {version}")


def _judge_major(version: str) -> str:
    """The judge for this containerd's API: 1.x; 2.0-2.2 (LoadConfig + MigrateConfig); 2.3+ (LoadConfigWithPlugins)."""
    return "v1" if version.startswith("v1.") else ("v2.1" if int(version.split(".")[1]) < 3 else "v2")


def judge_name(version: str) -> str:
    """The judge's file name: named by its source's sha256, so a changed judge is rebuilt (and checkouts with
    different judges can share the cache)."""
    src = HERE / "containerd_judge" / _judge_major(version)
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in ("main.go", "export.go"))).hexdigest()
    return f"containerd-judge-{digest[:12]}"


def judge_bin(version: str) -> Path:
    return _need(containerd_dir(version) / judge_name(version), f"the containerd judge for {version}",
                 f"python -m lab build-node --containerd {version}")


def toolkit_runtime_bin(version: str) -> Path:
    return _need(toolkit_dir(version) / "toolkit-runtime", f"the toolkit runtime program {version}",
                 f"python -m lab build-node --toolkit {version}")


def toolkit_version_for(image_tag: str | None) -> str:
    """The toolkit module version for a toolkit image tag (``v1.19.0`` or ``v1.19.0-ubuntu20.04``)."""
    tag = (image_tag or DEFAULT_TOOLKITS[0]).split("-")[0]
    if tag in TOOLKIT_FOR_TAG:
        return TOOLKIT_FOR_TAG[tag]
    raise BuildError(f"no lab build of the NVIDIA container toolkit for image tag {image_tag!r}; known: "
                     f"{sorted(TOOLKIT_FOR_TAG)} (add it to lab/build_node.py TOOLKIT_FOR_TAG)")


def containerd_build_for(version: str) -> str:
    """The lab build that plays containerd ``version`` (``1.7.28`` -> ``v1.7.35``: same minor, newest served)."""
    v = "v" + version.lstrip("v")
    builds = sorted(set(CONTAINERD_FOR_TRACK.values()) | {DOCKER_CONTAINERD})
    if v in builds:
        return v
    minor = ".".join(v.split(".")[:2])
    for b in builds:
        if b.startswith(minor + "."):
            return b
    raise BuildError(f"no lab build of containerd for {version!r}; the lab builds {builds} "
                     "(lab/build_node.py CONTAINERD_FOR_TRACK)")


def _env() -> dict[str, str]:
    if shutil.which("go") is None:
        raise BuildError("the lab builds containerd and the toolkit with Go, and `go` is not on PATH: install Go "
                         "1.26 or newer (containerd v2.3.7's go.mod asks for go 1.26.8)")
    env = _go_env()
    env["GOTOOLCHAIN"] = "local"
    return env


def _module_dir(module: str, version: str, env: dict[str, str]) -> Path:
    import json

    res = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True,
                         env=env, cwd=versions.cache_root())
    if res.returncode != 0:
        raise BuildError(f"could not fetch {module}@{version} from the Go module proxy: {res.stdout}{res.stderr}")
    return Path(json.loads(res.stdout)["Dir"])


def _nice(cmd: list[str]) -> list[str]:
    return ["nice", "-n", "10", *cmd] if shutil.which("nice") else cmd


def ensure_containerd(version: str) -> Path:
    """containerd ``version`` and its judge, built once into the cache; returns the bin folder."""
    out = containerd_dir(version)
    judge = judge_name(version)
    targets = [t for t, name in (("./cmd/containerd", "containerd"), ("./cmd/containerd-judge", judge))
               if not (out / name).is_file()]
    if not targets:
        return out
    major = _judge_major(version)
    env = _env()
    versions.cache_root().mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _log(f"containerd {version}: fetching the module")
    src_mod = _module_dir(_module(version), version, env)
    src = versions.cache_root() / f"src-containerd-{version}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(src_mod, src)
    for p in [src, *src.rglob("*")]:   # the module cache is read-only
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    judge_src = HERE / "containerd_judge" / major
    (src / "cmd" / "containerd-judge").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(judge_src / "main.go", src / "cmd" / "containerd-judge" / "main.go")
    shutil.copyfile(judge_src / "export.go", src / "cmd" / "containerd" / "command" / "zz_lab_judge_export.go")
    tmp = out.parent / "bin.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    ldflags = f"-s -w -X {_module(version)}/version.Version={version}"
    _run(_nice(["go", "build", "-mod=mod", "-trimpath", "-tags", CONTAINERD_TAGS, "-ldflags", ldflags,
                "-o", str(tmp) + "/", *targets]),
         src, env, f"build {', '.join(t.rsplit('/', 1)[1] for t in targets)} {version}")
    built = {t.rsplit("/", 1)[1]: n for t, n in (("./cmd/containerd", "containerd"), ("./cmd/containerd-judge", judge))
             if t in targets}
    for name in built:
        if not (tmp / name).is_file():
            raise BuildError(f"expected {name} in {tmp} after the build, found {sorted(os.listdir(tmp))}")
    out.mkdir(parents=True, exist_ok=True)
    for name, final in built.items():
        os.replace(tmp / name, out / final)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    _log(f"containerd {version}: built in {int(time.monotonic() - started)}s")
    return out


def toolkit_go_mod(version: str) -> str:
    return ("module lab.local/toolkitruntime\n\ngo 1.25.0\n\n"
            f"require github.com/NVIDIA/nvidia-container-toolkit {version}\n")


def ensure_toolkit(version: str) -> Path:
    """The toolkit runtime program against nvidia-container-toolkit ``version``; returns the bin folder."""
    out = toolkit_dir(version)
    if (out / "toolkit-runtime").is_file():
        return out
    env = _env()
    env["CGO_ENABLED"] = "1"     # go-nvml needs cgo
    started = time.monotonic()
    src = versions.cache_root() / f"src-toolkit-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(toolkit_go_mod(version))
    shutil.copyfile(HERE / "toolkit_runtime" / "main.go", src / "main.go")
    _run(["go", "mod", "tidy"], src, env, f"toolkit {version}: resolve modules (go mod tidy)")
    tmp = out.parent / "bin.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    _run(_nice(["go", "build", "-trimpath", "-ldflags", '-s -w -linkmode external -extldflags "-static"',
                "-o", str(tmp / "toolkit-runtime"), "."]), src, env, f"build toolkit runtime {version}")
    out.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / "toolkit-runtime", out / "toolkit-runtime")
    shutil.rmtree(tmp, ignore_errors=True)
    _log(f"toolkit {version}: built in {int(time.monotonic() - started)}s")
    return out


def ensure_node_binaries(containerd: tuple[str, ...] = DEFAULT_CONTAINERD,
                         toolkits: tuple[str, ...] = DEFAULT_TOOLKITS) -> None:
    """Build what the default lab and the tests need (quick no-op when cached)."""
    for v in containerd:
        ensure_containerd(v)
    for v in toolkits:
        ensure_toolkit(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab build-node", description=__doc__.split("\n")[0])
    ap.add_argument("--containerd", action="append", default=[], help="containerd version (v1.7.35, v2.3.7, ...)")
    ap.add_argument("--toolkit", action="append", default=[], help="toolkit version (v1.19.0, v1.20.0)")
    args = ap.parse_args(argv)
    try:
        if not args.containerd and not args.toolkit:
            ensure_node_binaries()
        for v in args.containerd:
            print(ensure_containerd(v))
        for v in args.toolkit:
            print(ensure_toolkit(v))
    except BuildError as exc:
        print(f"lab build-node: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
