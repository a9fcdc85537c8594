"""Build the lab's binaries from the Go module proxy, once per version, into the user cache.

kube-apiserver, kube-controller-manager, kube-scheduler and etcd come from one wrapper module that
requires k8s.io/kubernetes and replaces every staging module with its published v0.Y.Z; the version is
stamped into k8s.io/component-base/version so /version reports it. helm and kwok are `go install`ed at
their pinned releases. A cold build takes many minutes on two cores; progress is printed as it goes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import versions

ETCD_PACKAGE = "go.etcd.io/etcd/server/v3"
K8S_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
}


class BuildError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[lab build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wrapper_go_mod(k8s_version: str) -> str:
    staging = versions.staging_version(k8s_version)
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} {staging}" for m in versions.STAGING_MODULES)
    return (
        "module lab.local/controlplane\n\n"
        "go 1.24.0\n\n"
        f"require k8s.io/kubernetes {k8s_version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def tools_go() -> str:
    imports = "\n".join(f'\t_ "{p}"' for p in (*K8S_PACKAGES.values(), ETCD_PACKAGE))
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str, progress_total: int = 0) -> None:
    """Run a go command, streaming a progress line for each ~5% of packages compiled."""
    _log(f"{what}: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    started = time.monotonic()
    last_report = started
    for count, line in enumerate(proc.stdout, start=1):
        tail = [*tail, line.rstrip()][-40:]
        now = time.monotonic()
        if now - last_report >= 30:
            done = f"{count}/{progress_total} packages" if progress_total else f"{count} lines"
            _log(f"{what}: {done}, {int(now - started)}s elapsed")
            last_report = now
    if proc.wait() != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    _log(f"{what}: done in {int(time.monotonic() - started)}s")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    return env


def build_control_plane(k8s_version: str, out: Path) -> None:
    src = versions.cache_root() / f"src-{k8s_version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(wrapper_go_mod(k8s_version))
    (src / "tools.go").write_text(tools_go())
    env = _go_env()
    _run(["go", "mod", "tidy"], src, env, "resolve modules (go mod tidy)")
    minor = k8s_version.lstrip("v").split(".")[1]
    pkg = "k8s.io/component-base/version"
    ldflags = " ".join(
        [
            f"-X {pkg}.gitVersion={k8s_version}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
            "-s -w",
        ]
    )
    listed = subprocess.run(
        ["go", "list", "-deps", *K8S_PACKAGES.values(), ETCD_PACKAGE],
        cwd=src, env=env, capture_output=True, text=True,
    )
    total = len(listed.stdout.split()) if listed.returncode == 0 else 0
    tmp = out.parent / (out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    _run(
        ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(tmp) + "/",
         *K8S_PACKAGES.values(), ETCD_PACKAGE],
        src, env, f"build control plane {k8s_version}", total,
    )
    # go names the etcd binary after its module path without the major version suffix: "server".
    built_etcd = tmp / "server"
    if built_etcd.exists():
        built_etcd.rename(tmp / "etcd")
    for name in versions.CONTROL_PLANE_BINARIES:
        if not (tmp / name).exists():
            raise BuildError(f"expected {name} in {tmp} after the build, found {sorted(os.listdir(tmp))}")
        os.replace(tmp / name, out / name)


def go_install(module_cmd: str, version: str, out: Path, name: str) -> None:
    env = _go_env()
    gobin = out.parent / f"gobin-{name}"
    gobin.mkdir(parents=True, exist_ok=True)
    env["GOBIN"] = str(gobin)
    _run(["go", "install", "-v", "-trimpath", "-ldflags", "-s -w", f"{module_cmd}@{version}"],
         out, env, f"install {name} {version}")
    os.replace(gobin / name, out / name)
    shutil.rmtree(gobin, ignore_errors=True)


KWOK_CRDS = ("kwok.x-k8s.io_logs.yaml",)


def ensure_kwok_crds(out: Path) -> Path:
    """kwok serves pod logs from `Logs` objects; keep its CRD manifest beside the binary."""
    crd_dir = out / "kwok-crds"
    if all((crd_dir / f).exists() for f in KWOK_CRDS):
        return crd_dir
    res = subprocess.run(["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{versions.KWOK_VERSION}"],
                         capture_output=True, text=True, env=_go_env(), cwd=out)
    if res.returncode != 0:
        raise BuildError(f"could not fetch the kwok module for its CRDs: {res.stdout}{res.stderr}")
    src = Path(json.loads(res.stdout)["Dir"]) / "kustomize" / "crd" / "bases"
    crd_dir.mkdir(parents=True, exist_ok=True)
    for f in KWOK_CRDS:
        shutil.copyfile(src / f, crd_dir / f)
    return crd_dir


def missing(k8s_version: str = versions.K8S_VERSION) -> list[str]:
    out = versions.bin_dir(k8s_version)
    return [b for b in versions.ALL_BINARIES if not (out / b).exists()]


def ensure_binaries(k8s_version: str = versions.K8S_VERSION) -> Path:
    """Build whatever is missing for this version; quick no-op when everything is cached."""
    from lab import build_node  # late: it builds on this module's helpers

    build_node.ensure_node_binaries()   # the GPU nodes' real containerd and toolkit (lab/build_node.py)
    out = versions.bin_dir(k8s_version)
    todo = missing(k8s_version)
    if not todo:
        ensure_kwok_crds(out)
        return out
    if shutil.which("go") is None:
        raise BuildError("the lab builds its binaries with Go, and `go` is not on PATH: install Go 1.24 or newer")
    out.mkdir(parents=True, exist_ok=True)
    _log(f"building {', '.join(todo)} into {out} (cold build: many minutes on 2 cores)")
    if "helm" in todo:
        go_install("helm.sh/helm/v3/cmd/helm", versions.HELM_VERSION, out, "helm")
    if "kwok" in todo:
        go_install("sigs.k8s.io/kwok/cmd/kwok", versions.KWOK_VERSION, out, "kwok")
    if any(b in todo for b in versions.CONTROL_PLANE_BINARIES):
        build_control_plane(k8s_version, out)
    ensure_kwok_crds(out)
    return out


def ensure_all() -> Path:
    """Everything the lab runs: the control plane, helm and kwok, and the real GPU Operator of each chart."""
    from lab import build_operator

    out = ensure_binaries()
    build_operator.ensure_all()
    return out


def main() -> int:
    try:
        path = ensure_all()
    except (BuildError, ValueError) as exc:
        print(f"lab build: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
