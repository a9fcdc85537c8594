"""lab/twin/hostview.py: the layout of a seeded host view for every node kind of the default spec."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

from lab.spec import Fault, NodeSpec
from lab.state import REPO_ROOT, LabPaths
from lab.twin import containerd, hostview, seeding, shim_server

from .conftest import SNAP_CONFIG, B, hp


def test_every_default_node_kind_is_seeded_like_a_k8s_snap_node(hosts: dict[str, Path],
                                                                 spec_nodes: dict[str, NodeSpec]) -> None:
    assert set(hosts) == {"cp-1", "gpu-a", "gpu-b", "spark-1"}
    for name, root in hosts.items():
        node = spec_nodes[name]
        assert root == LabPaths(root=root.parent.parent).host_root(name)
        assert hp(root, "/etc/containerd/conf.d").is_dir() and not any(hp(root, "/etc/containerd/conf.d").iterdir())
        assert hp(root, f"{B}/etc/containerd/conf.d").is_dir()
        assert not any(hp(root, f"{B}/etc/containerd/conf.d").iterdir())
        assert hp(root, f"{B}/run/containerd/containerd.sock").exists()
        assert hp(root, "/var/snap/k8s/common/lock/.containerd-base-dir").read_text().strip() == "/var/lib/k8s-containerd"
        assert hp(root, "/run/nvidia/validations").is_dir()
        assert not hp(root, "/run/nvidia/validations/host-driver-ready").exists()   # /run is tmpfs
        assert hp(root, "/etc/systemd/system").is_dir()
        assert (root / ".twin/seeded").exists()

        cfg = tomllib.loads(hp(root, SNAP_CONFIG).read_text())
        assert hp(root, SNAP_CONFIG).read_text().startswith("# ")          # k8sd's header comment
        assert cfg["version"] == 2
        assert cfg["imports"] == [f"{B}/etc/containerd/conf.d/*.toml"]
        assert cfg["grpc"]["address"] == f"{B}/run/containerd/containerd.sock"
        cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
        assert cri["sandbox_image"]
        assert cri["containerd"]["default_runtime_name"] == "runc"
        runc = cri["containerd"]["runtimes"]["runc"]
        assert runc == {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}
        assert cri["cni"] == {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d"}
        assert cri["registry"]["config_path"] == f"{B}/etc/containerd/hosts.d"

        # the real binaries: the snap's containerd of the node's track; Docker's containerd and its config
        assert os.access(hp(root, hostview.SNAP_CONTAINERD), os.X_OK)
        assert hp(root, "/usr/bin/containerd").exists() == node.docker
        if node.docker:
            docker_cfg = tomllib.loads(hp(root, hostview.DOCKER_CONTAINERD_CONFIG).read_text())
            assert docker_cfg == {"disabled_plugins": ["cri"]}
        assert hp(root, "/dev/null").is_char_device()

        shims = {p.name for p in (root / "usr/bin").iterdir()} - {"containerd"}
        gpu_shims = {"nvidia-smi", "journalctl", "dmesg", "lspci"}
        want = {"snap", "systemctl"} | (gpu_shims if node.is_gpu else set()) | ({"docker"} if node.docker else set())
        assert shims == want
        fast = shim_server.client_binary() is not None  # sh shims asking the lab's shim server, Python behind them
        for shim in shims:
            text = (root / "usr/bin" / shim).read_text()
            assert os.access(root / "usr/bin" / shim, os.X_OK)
            if fast:
                assert text.startswith("#!/bin/sh\n") and str(shim_server.client_binary()) in text
                assert str(root) not in text                         # the root comes from the script's location
                text = (root / ".twin/shims" / shim).read_text()
                assert os.access(root / ".twin/shims" / shim, os.X_OK)
            assert text.startswith(f"#!{sys.executable}\n")
            body = text.split("\n", 1)[1]
            assert body.count(str(REPO_ROOT)) == 1                  # only the sys.path insertion
            assert str(root) not in text                             # the root comes from the script's location

        assert hostview.load_node(root) == node
        st = json.loads((root / ".twin/containerd.json").read_text())
        assert st["running"] is True and st["runtimes"] == ["runc"] and st["default_runtime"] == "runc"
        assert st["restarts"] == 0

        daemon = hp(root, "/etc/docker/daemon.json")
        if node.docker:
            assert daemon.read_text() == node.files["/etc/docker/daemon.json"].read_text()   # spec's file wins
        else:
            assert not daemon.exists()


def test_a_docker_node_without_files_gets_an_empty_daemon_json(make_host) -> None:
    root = make_host("dock", base="spark-1", files={})
    assert hp(root, "/etc/docker/daemon.json").read_text().strip() == "{}"


def test_seed_is_idempotent_and_leaves_a_seeded_host_alone(paths: LabPaths, spec_nodes: dict[str, NodeSpec]) -> None:
    node = spec_nodes["gpu-a"]
    root = seeding.seed(paths, node)
    cfg = hp(root, SNAP_CONFIG)
    cfg.write_text(cfg.read_text() + "\n# changed by the suite\n")
    (root / "usr/bin/snap").write_text("stale")
    assert seeding.seed(paths, node) == root
    assert cfg.read_text().endswith("# changed by the suite\n")
    assert (root / "usr/bin/snap").read_text().startswith("#!")            # shims are refreshed


def test_containerd_2_nodes_get_k8sds_version_2_config_and_containerd_migrates_it(make_host) -> None:
    """k8sd writes a version 2 root config on every track (defaultContainerdConfig in k8s-snap's release-1.35
    branch and in canonical/k8sd for 1.36); containerd 2.3 migrates it to its v3 CRI plugin ids when it loads."""
    root = make_host("new", k8s_snap_track="1.36")
    cfg = tomllib.loads(hp(root, SNAP_CONFIG).read_text())
    assert cfg["version"] == 2
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["default_runtime_name"] == "runc" and "runc" in cri["containerd"]["runtimes"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["registry"]["config_path"] == f"{B}/etc/containerd/hosts.d"
    ev = containerd.effective(root)
    assert ev.ok and ev.runtimes == ["runc"] and ev.cri_plugin == "io.containerd.cri.v1.runtime"


def test_custom_base_dir(make_host) -> None:
    root = make_host("custom", containerd_base_dir="/data/ctr")
    assert hp(root, "/data/ctr/k8s-containerd/etc/containerd/config.toml").exists()
    assert containerd.effective(root).config == "/data/ctr/k8s-containerd/etc/containerd/config.toml"


def test_set_faults_changes_node_json(hosts: dict[str, Path]) -> None:
    hostview.set_faults(hosts["gpu-a"], [Fault.DRIVER_BROKEN])
    assert hostview.load_node(hosts["gpu-a"]).faults == (Fault.DRIVER_BROKEN,)


def test_host_path_refuses_escapes(tmp_path: Path) -> None:
    assert hostview.host_path(tmp_path, "/etc/x") == tmp_path / "etc/x"
    for bad in ("etc/x", "/etc/../../x"):
        try:
            hostview.host_path(tmp_path, bad)
        except ValueError:
            continue
        raise AssertionError(bad)
