"""The suite's OCI image (deploy/image/build.sh), built once per committed tree into the user cache, and run with
runc from its unpacked bundle (host network: the lab is on loopback)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from lab import versions

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "image" / "build.sh"
TOOLS = ("mmdebstrap", "umoci", "runc", "git")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def cache_key() -> str:
    """What the image is made of: the committed tree (build.sh archives HEAD), the npm lock, helm's version."""
    tree = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD^{tree}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    h = hashlib.sha256(tree.encode())
    h.update((REPO / "package-lock.json").read_bytes())
    h.update(versions.HELM_VERSION.encode())
    return h.hexdigest()[:16]


def image_ref() -> str:
    """The image, built if the cache has none for this tree: ``<layout>:<tag>``."""
    out = versions.cache_root().parent / "image" / cache_key()
    ref_file = out / "ref"
    if not ref_file.is_file():
        if out.exists():
            shutil.rmtree(out)
        proc = subprocess.run(["bash", str(BUILD), str(out)], capture_output=True, text=True, timeout=1200, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"deploy/image/build.sh failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
        ref_file.write_text(proc.stdout.strip().splitlines()[-1])
    return ref_file.read_text().strip()


def unpack(ref: str, bundle: Path) -> dict:
    subprocess.run(["umoci", "unpack", "--image", ref, str(bundle)], capture_output=True, text=True, timeout=300,
                   check=True)
    return json.loads((bundle / "config.json").read_text())


def run_bundle(bundle: Path, config: dict, *, args: list[str], env: dict[str, str],
               binds: dict[str, tuple[Path, bool]], name: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the unpacked image with runc: the image's user, working directory and environment, ``args`` as the
    process, host network, a read-only root filesystem with a tmpfs /tmp (as the chart runs it), ``binds``:
    ``{path in the container: (host path, writable)}``."""
    proc = config["process"]
    proc["terminal"] = False
    proc["args"] = args
    proc["env"] = [*proc.get("env", []), *(f"{k}={v}" for k, v in env.items())]
    config["root"]["readonly"] = True
    linux = config["linux"]
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "mode=1777"]})
    config["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
                             "options": ["rbind", "ro"]})
    for dest, (src, writable) in binds.items():
        config["mounts"].append({"destination": dest, "type": "bind", "source": str(src),
                                 "options": ["rbind", "rw" if writable else "ro"]})
    (bundle / "config.json").write_text(json.dumps(config))
    return subprocess.run(["runc", "run", "--bundle", str(bundle), f"{name}-{os.getpid()}"], capture_output=True,
                          text=True, timeout=timeout, check=False)
