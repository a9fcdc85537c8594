"""Build the real NVIDIA GPU Operator controller from the source archives in ../shared/upstream/.

The Go module proxy does not serve the operator (its tags are not valid module versions), so the archives
are test inputs beside the charts. Each carries vendor/, so `go build ./cmd/gpu-operator` runs offline. A
build is cached per version and per archive sha256 under the lab cache; the archive's assets/ and manifests/
(which the operator reads from the hard-coded /opt/gpu-operator) are kept beside the binary.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lab import versions
from lab.build import BuildError, _go_env, _log, _run

OPERATOR_VERSIONS = ("v26.3.0", "v26.7.0")
ARCHIVE = "gpu-operator-{version}.tar.gz"


def upstream_dir() -> Path:
    """../shared/upstream beside the repository (LAB_UPSTREAM_DIR moves it)."""
    env = os.environ.get("LAB_UPSTREAM_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "upstream"


def archive_path(version: str) -> Path:
    return upstream_dir() / ARCHIVE.format(version=version)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class OperatorBuild:
    version: str
    binary: Path       # the gpu-operator controller
    manage_crds: Path  # the chart's pre-upgrade hook command (/usr/bin/manage-crds in the image)
    opt_dir: Path      # /opt/gpu-operator as the image has it: assets/*, manifests/, the CRD files


def build_dir(version: str, sha: str) -> Path:
    return versions.cache_root() / f"gpu-operator-{version}-{sha[:16]}"


def cached(version: str) -> OperatorBuild | None:
    """The build for this version if it is cached (no build, no archive hash when nothing is cached)."""
    for d in sorted(versions.cache_root().glob(f"gpu-operator-{version}-*")):
        b = _layout(version, d)
        if _complete(b, d):
            return b
    return None


def _complete(b: OperatorBuild, d: Path) -> bool:
    return b.binary.exists() and b.manage_crds.exists() and (d / ".complete").exists()


def _layout(version: str, d: Path) -> OperatorBuild:
    return OperatorBuild(version, d / "bin" / "gpu-operator", d / "bin" / "manage-crds", d / "opt")


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    return [m for m in tar.getmembers() if not (m.name.startswith("/") or ".." in Path(m.name).parts)]


def ensure(version: str) -> OperatorBuild:
    """Build (or reuse) the operator of one chart version; raises BuildError naming what is missing.
    One build at a time per cache (labs started side by side, or `lab build` beside a test, wait for it)."""
    versions.cache_root().mkdir(parents=True, exist_ok=True)
    with open(versions.cache_root() / ".gpu-operator-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(version)


def _ensure(version: str) -> OperatorBuild:
    if version not in OPERATOR_VERSIONS:
        raise BuildError(f"no operator source for {version}: the lab has {', '.join(OPERATOR_VERSIONS)}")
    archive = archive_path(version)
    if not archive.is_file():
        raise BuildError(f"the operator's source archive {archive} is missing: the lab builds the real GPU "
                         f"Operator {version} from it (set LAB_UPSTREAM_DIR to the folder that holds "
                         f"{archive.name})")
    sha = _sha256(archive)
    d = build_dir(version, sha)
    b = _layout(version, d)
    if _complete(b, d):
        return b
    if shutil.which("go") is None:
        raise BuildError("the lab builds the GPU Operator with Go, and `go` is not on PATH")
    shutil.rmtree(d, ignore_errors=True)
    src = d / "src"
    src.mkdir(parents=True)
    _log(f"unpack {archive.name} (sha256 {sha[:12]}...)")
    with tarfile.open(archive) as tar:
        tar.extractall(src, members=_safe_members(tar), filter="data")
    # `git archive` may put everything under one top folder.
    tops = list(src.iterdir())
    if len(tops) == 1 and tops[0].is_dir() and not (src / "go.mod").exists():
        for p in tops[0].iterdir():
            p.rename(src / p.name)
        tops[0].rmdir()
    env = {**_go_env(), "GOFLAGS": "-mod=vendor -buildvcs=false", "GOTOOLCHAIN": "local"}
    (d / "bin").mkdir()
    pkg = "github.com/NVIDIA/gpu-operator/internal/info"
    ldflags = f"-s -w -X {pkg}.version={version}"
    _run(["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(d / "bin") + "/", "./cmd/gpu-operator",
          "./cmd/manage-crds"], src, env, f"build gpu-operator {version}")
    # /opt/gpu-operator as docker/Dockerfile lays it out in the operator image.
    opt = b.opt_dir
    shutil.copytree(src / "assets", opt)
    shutil.copytree(src / "manifests", opt / "manifests")
    chart = src / "deployments" / "gpu-operator"
    for crd in [*sorted((chart / "crds").glob("*.yaml")),
                *sorted((chart / "charts" / "node-feature-discovery" / "crds").glob("*.yaml"))]:
        shutil.copyfile(crd, opt / crd.name)
    shutil.rmtree(src)  # vendor/ and the rest: only the binaries and /opt are used
    (d / ".complete").write_text(sha + "\n")
    return b


def ensure_all() -> list[OperatorBuild]:
    return [ensure(v) for v in OPERATOR_VERSIONS]
