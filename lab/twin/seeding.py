"""Seeding a node's host view (lab/twin/hostview.py: its layout and helpers): the files, binaries and shims of a
k8s-snap GPU node or another distribution's, then the first verdict of its containerd (lab/twin/containerd.py) and,
on Docker nodes, Docker's start (lab/twin/hostcmd.py). Above all three, so none of them imports back.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from lab.spec import NodeSpec
from lab.state import LabPaths
from lab.twin import containerd, hostcmd
from lab.twin.hostview import (
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    HOST_DRIVER_VALIDATIONS,
    LOCK_FILE,
    SEEDED_MARKER,
    _initial_systemd,
    _join,
    _node_to_json,
    _seed_distribution,
    _write_shims,
    containerd_major,
    containerd_root,
    host_path,
    place_containerd,
    twin_dir,
    write_json,
    write_k8s_containerd_config,
)

_SEED_VERDICTS: dict[tuple, Any] = {}


def _copy_spec_files(root: Path, node: NodeSpec) -> None:
    """The files the node's spec seeds (`files: {host path: local file}`), over what seeding wrote."""
    for host, local in node.files.items():
        target = host_path(root, host)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)


def seed(paths: LabPaths, node: NodeSpec) -> Path:
    """Create the host view of ``node`` and return its root. Idempotent.

    When ``<root>/.twin/seeded`` exists the host's files are left alone (a restarted lab keeps what the suite
    changed); only the shims in usr/bin are rewritten, so they always point at the running interpreter.
    """
    root = paths.host_root(node.name)
    root.mkdir(parents=True, exist_ok=True)
    if (root / SEEDED_MARKER).exists():
        _write_shims(root, node)
        return root

    if node.distribution != "k8s-snap":
        for d in ("/etc/systemd/system", HOST_DRIVER_VALIDATIONS, CNI_BIN_DIR, CNI_CONF_DIR):
            host_path(root, d).mkdir(parents=True, exist_ok=True)
        _seed_distribution(root, node)
        _write_shims(root, node)
        _copy_spec_files(root, node)
        tw = twin_dir(root)
        write_json(tw / "node.json", _node_to_json(node))
        write_json(tw / "containerd.json", containerd.state_record(containerd.effective(root), restarts=0))
        write_json(tw / "systemd.json", _initial_systemd(node))
        (root / SEEDED_MARKER).write_text(f"{time.time():.3f}\n")
        return root

    croot = containerd_root(node.containerd_base_dir)
    for d in ("/etc/containerd/conf.d", "/etc/systemd/system", HOST_DRIVER_VALIDATIONS,
              _join(croot, "etc/containerd/conf.d"), _join(croot, "etc/containerd/hosts.d"),
              _join(croot, "run/containerd"), CNI_BIN_DIR, CNI_CONF_DIR):
        host_path(root, d).mkdir(parents=True, exist_ok=True)
    write_k8s_containerd_config(root, node)
    host_path(root, _join(croot, "run/containerd/containerd.sock")).touch()  # placeholder, not a socket
    lock = host_path(root, LOCK_FILE)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(node.containerd_base_dir + "\n")
    if node.docker:
        daemon = host_path(root, "/etc/docker/daemon.json")
        daemon.parent.mkdir(parents=True, exist_ok=True)
        daemon.write_text("{}\n")
        host_path(root, "/run/containerd").mkdir(parents=True, exist_ok=True)
        host_path(root, "/run/containerd/containerd.sock").touch()   # Docker's containerd (placeholder)
    if containerd_major(node.containerd_version) >= 2:
        # containerd 2.x serves NRI by default (its config dump: plugins."io.containerd.nri.v1.nri" disable = false,
        # socket_path /var/run/nri/nri.sock); 1.7 dumps disable = true. Placeholder, not a socket (issue 16)
        host_path(root, "/var/run/nri/nri.sock").parent.mkdir(parents=True, exist_ok=True)
        host_path(root, "/var/run/nri/nri.sock").touch()
    place_containerd(root, node)
    _write_shims(root, node)
    _copy_spec_files(root, node)

    tw = twin_dir(root)
    write_json(tw / "node.json", _node_to_json(node))
    # a fresh node's containerd: k8sd's config, judged once per containerd version and base dir (fleet-scale labs
    # seed thousands of identical nodes); a node whose spec seeds files is judged on its own
    key = (node.containerd_version, node.containerd_base_dir, node.docker) if not node.files else None
    ev = _SEED_VERDICTS.get(key) if key else None
    if ev is None:
        ev = containerd.effective(root)
        if key:
            _SEED_VERDICTS[key] = ev
    write_json(tw / "containerd.json", containerd.state_record(ev, restarts=0))
    write_json(tw / "systemd.json", _initial_systemd(node))
    if node.docker:
        write_json(tw / "docker.json", hostcmd.docker_start_record(root, restarts=0))
    (root / SEEDED_MARKER).write_text(f"{time.time():.3f}\n")
    return root
