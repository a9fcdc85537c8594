"""lab/twin/containerd.py with the real programs: containerd's own loader and CRI validation (the judge), the real
toolkit's containerd setup, and the node's own `containerd config dump` for the suite - in host views (chroot)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from lab.spec import Fault
from lab.twin import containerd, hostview, toolkit
from provision.hostfacts import containerd_dump, containerd_facts
from provision.hosts.access import HostAccess
from provision.hosts.spec import HostSpec
from provision.observe import containerd_dump as dump_mod

from .conftest import K8S_SNAP_ENV, SNAP_CONFIG, SNAP_DROP_IN, SNAP_SOCKET, B, hp

# containerd's own text (pkg/cri/config ValidatePluginConfig, wrapped by the CRI plugin's init), canonical/k8s-snap#1991
NO_RUNC = 'no corresponding runtime configured in `containerd.runtimes` for `containerd` `default_runtime_name = "runc"'
ETC_DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
# The original playbooks' toolkit env (../shared/reference/original-playbooks.md): CONTAINERD_CONFIG and
# CONTAINERD_SOCKET under the snap, no RUNTIME_DROP_IN_CONFIG (so /etc/containerd/conf.d/99-nvidia.toml), no
# RUNTIME_CONFIG_SOURCE (so command,file), CONTAINERD_SET_AS_DEFAULT "true"; CDI on (the chart's default), so the
# operator sets NVIDIA_RUNTIME_SET_AS_DEFAULT=false, which the installer reads before CONTAINERD_SET_AS_DEFAULT
PLAYBOOK_ENV = {"CONTAINERD_CONFIG": SNAP_CONFIG, "CONTAINERD_SOCKET": SNAP_SOCKET, "CONTAINERD_SET_AS_DEFAULT": "true"}
# /etc/containerd/conf.d/00-k8s-runc.toml as the original playbooks write it
RUNC_DROPIN = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = true
"""


def _ask_node(root: Path) -> dump_mod.RuntimesVerdict:
    """What the suite's containerd check concludes on this host view (lab backend, exec mode path)."""
    host = HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name=root.name)
    facts = containerd_facts(host)
    return dump_mod.runtimes_verdict(containerd_dump(host, facts), facts.effective, facts.error)


def _toolkit(root: Path) -> dict:
    return json.loads((root / ".twin/toolkit.json").read_text())["last"]


def test_the_seeded_configs_start_with_runc(hosts: dict[str, Path], make_host) -> None:
    for root in [*hosts.values(), make_host("new", k8s_snap_track="1.36")]:
        ev = containerd.effective(root)
        assert ev.ok and ev.daemon_up and ev.error is None, ev
        assert ev.runtimes == ["runc"] and ev.default_runtime == "runc" and ev.config == SNAP_CONFIG
    # containerd 2.3's config version is 4: k8sd's version 2 root is migrated to 4 when loaded
    assert ev.cri_plugin == "io.containerd.cri.v1.runtime" and ev.version == 4 and ev.containerd_version == "2.3.7"
    assert containerd.effective(hosts["gpu-a"]).cri_plugin == "io.containerd.grpc.v1.cri"


def test_toolkit_with_the_suites_settings_gives_runc_and_nvidia(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    written = toolkit.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=True)
    assert SNAP_DROP_IN in written
    st = containerd.state(root)   # the installer's restart signal went to the snap's socket: containerd restarted
    assert st["running"] is True and st["restarts"] == 1, st
    assert {"nvidia", "runc"} <= set(st["runtimes"]) and st["default_runtime"] == "runc"
    assert SNAP_DROP_IN in st["imports"]
    dropin = tomllib.loads(hp(root, SNAP_DROP_IN).read_text())
    nvidia = dropin["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["nvidia"]
    assert nvidia["options"]["BinaryName"] == "/usr/local/nvidia/toolkit/nvidia-container-runtime"
    assert nvidia["options"]["SystemdCgroup"] is True            # copied from the snap's runc by the toolkit
    verdict = _ask_node(root)
    assert verdict.source == "node" and verdict.ok, verdict


def test_1991_dgx_spark_with_the_playbook_values(hosts: dict[str, Path]) -> None:
    """canonical/k8s-snap#1991 with real code only: the toolkit dumps Docker's containerd (command source),
    writes a drop-in whose CRI table holds no runc, the snap's containerd 1.7 then refuses its CRI plugin."""
    root = hosts["spark-1"]
    toolkit.toolkit_install(root, PLAYBOOK_ENV, cdi_enabled=True)
    rec = _toolkit(root)
    assert rec["dropin"] == ETC_DROP_IN and rec["resolved"]["config_sources"] == ["command", "file"]
    assert "runc" not in rec["runtimes"] and "nvidia" in rec["runtimes"]
    assert "/etc/containerd/conf.d/*.toml" in tomllib.loads(hp(root, SNAP_CONFIG).read_text())["imports"]
    st = containerd.state(root)
    assert st["running"] is False and st["daemon_up"] is True
    assert NO_RUNC in st["error"] and st["error"].startswith("failed to load plugin io.containerd.grpc.v1.cri")
    verdict = _ask_node(root)                           # the suite asks the node's containerd: it agrees
    assert verdict.source == "node" and not verdict.ok
    assert any(NO_RUNC in p for p in verdict.problems), verdict
    # the runc drop-in of the playbooks does not save it: 00- sorts before 99-, whose CRI table replaces it
    hp(root, "/etc/containerd/conf.d/00-k8s-runc.toml").write_text(RUNC_DROPIN)
    ev = containerd.restart(root)
    assert not ev.ok and NO_RUNC in (ev.error or "")
    assert not _ask_node(root).ok


def test_runc_drop_in_on_containerd_2_3(make_host) -> None:
    """The same playbook values on a 1.36-track node (containerd 2.3): what the real programs do."""
    root = make_host("spark-36", base="spark-1", k8s_snap_track="1.36")
    toolkit.toolkit_install(root, PLAYBOOK_ENV, cdi_enabled=True)
    first = containerd.state(root)
    hp(root, "/etc/containerd/conf.d/00-k8s-runc.toml").write_text(RUNC_DROPIN)
    second = containerd.restart(root)
    verdict = _ask_node(root)
    # the suite's verdict equals real containerd's, whatever it is
    assert verdict.ok == second.ok, (first, second, verdict)
    print("2.3 playbook values:", first["running"], first["runtimes"], "with 00-k8s-runc:", second.ok, second.runtimes)


@pytest.mark.parametrize("track", ["1.35", "1.36"])
def test_1991_does_not_break_containerd_2(make_host, track: str) -> None:
    """The playbook values on a Docker node of a 2.x track: the toolkit still dumps Docker's containerd and writes a
    version 2 drop-in without runc, but containerd 2.1/2.3 migrate k8sd's version 2 root and the drop-in together
    and keep runc beside nvidia (found with the real programs; the suite's resolver predicted no runc: the node's
    containerd wins and the verdict says so)."""
    root = make_host(f"spark-{track.replace('.', '')}", base="spark-1", k8s_snap_track=track)
    toolkit.toolkit_install(root, PLAYBOOK_ENV, cdi_enabled=True)
    rec = _toolkit(root)
    assert "runc" not in rec["runtimes"] and "nvidia" in rec["runtimes"], rec
    st = containerd.state(root)
    assert st["running"] and {"runc", "nvidia"} <= set(st["runtimes"]) and st["default_runtime"] == "runc", st
    verdict = _ask_node(root)
    assert verdict.source == "node" and verdict.ok and set(verdict.runtimes) == set(st["runtimes"]), verdict
    assert any("the node's containerd wins" in n for n in verdict.notes), verdict


def test_1_36_node_with_the_v26_3_toolkit(make_host) -> None:
    """containerd 2.3 (1.36 track) with toolkit v1.19.0 and the suite's settings: the suite's verdict equals
    real containerd's (NVIDIA/aicr#1688: the drop-in's version may differ from the root's)."""
    root = make_host("gpu-36", k8s_snap_track="1.36")
    toolkit.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=True)
    dropin = tomllib.loads(hp(root, SNAP_DROP_IN).read_text())
    st = containerd.state(root)
    verdict = _ask_node(root)
    assert verdict.source == "node"
    assert verdict.ok == st["running"], (dropin.get("version"), st, verdict)
    print("1.36 + v1.19.0: drop-in version", dropin.get("version"), "running", st["running"], st.get("error"))


def test_containerd_breaks_fault_is_judged_by_containerd(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-b"]
    toolkit.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False, faults=(Fault.CONTAINERD_BREAKS,))
    st = containerd.state(root)
    assert st["running"] is False and NO_RUNC in st["error"]
    assert not _ask_node(root).ok


def test_a_drop_in_that_does_not_parse_stops_the_daemon(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    hp(root, f"{B}/etc/containerd/conf.d/50-bad.toml").write_text("version = 2\n[plugins\n")
    ev = containerd.restart(root)
    assert not ev.ok and not ev.daemon_up and "failed to load TOML" in (ev.error or ""), ev
    verdict = _ask_node(root)
    assert not verdict.ok and verdict.source == "node" and "50-bad.toml" in verdict.problems[0]


def test_running_state_changes_only_on_restart(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    hp(root, f"{B}/etc/containerd/conf.d/50-bad.toml").write_text("not toml [")
    assert containerd.state(root)["running"] is True
    assert not containerd.effective(root).ok
    containerd.restart(root)
    assert containerd.state(root)["running"] is False


def test_toolkit_without_a_socket_it_can_signal_crash_loops(hosts: dict[str, Path]) -> None:
    """Chart defaults on k8s-snap: CONTAINERD_SOCKET /run/containerd/containerd.sock does not exist there."""
    root = hosts["gpu-a"]
    with pytest.raises(toolkit.ToolkitError, match="unable to restart containerd"):
        toolkit.toolkit_install(root, {k: v for k, v in K8S_SNAP_ENV.items() if k != "CONTAINERD_SOCKET"},
                                   cdi_enabled=False)


def test_toolkit_cleanup_is_the_installers(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    toolkit.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False)
    changed = toolkit.toolkit_uninstall(root)
    assert SNAP_DROP_IN in changed and not hp(root, SNAP_DROP_IN).exists()
    st = containerd.state(root)
    assert st["running"] is True and "nvidia" not in st["runtimes"]


def test_container_paths_map_through_the_pods_mounts(hosts: dict[str, Path]) -> None:
    """The real operator's env (container paths) with the pod's hostPath mounts."""
    root = hosts["gpu-b"]
    mounts = {"/runtime/config-dir": f"{B}/etc/containerd", "/runtime/config-dir.d": f"{B}/etc/containerd/conf.d",
              "/runtime/sock-dir": f"{B}/run/containerd", "/host": "/"}
    env = {"CONTAINERD_CONFIG": "/runtime/config-dir/config.toml",
           "RUNTIME_DROP_IN_CONFIG": "/runtime/config-dir.d/99-nvidia.toml",
           "RUNTIME_DROP_IN_CONFIG_HOST_PATH": SNAP_DROP_IN, "CONTAINERD_SOCKET": "/runtime/sock-dir/containerd.sock",
           "RUNTIME_CONFIG_SOURCE": "file"}
    assert toolkit.map_container_path("/runtime/config-dir.d/99-nvidia.toml", mounts) == SNAP_DROP_IN
    assert toolkit.map_container_path("/etc/x.toml", mounts) == "/.twin/toolkit-container/etc/x.toml"
    toolkit.toolkit_install(root, env, cdi_enabled=False, mounts=mounts)
    assert hp(root, SNAP_DROP_IN).exists()
    assert {"nvidia", "runc"} <= set(containerd.state(root)["runtimes"])


def test_k8sd_rewrite_drops_the_toolkit_import(hosts: dict[str, Path]) -> None:
    root = hosts["spark-1"]
    toolkit.toolkit_install(root, PLAYBOOK_ENV, cdi_enabled=True)
    assert not containerd.state(root)["running"]
    hostview.write_k8s_containerd_config(root, hostview.load_node(root))
    assert containerd.restart(root).ok


def test_lock_file_holding_the_containerd_root_itself(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    hp(root, hostview.LOCK_FILE).write_text(B + "\n")
    assert containerd.effective(root).config == SNAP_CONFIG


def test_container_paths_map_through_mounts_written_with_a_trailing_slash():
    """The real operator mounts the runtime config directories at /runtime/config-dir/ (with the slash)."""
    from lab.twin.toolkit import map_container_path

    mounts = {"/runtime/config-dir/": "/var/lib/k8s-containerd/k8s-containerd/etc/containerd", "/host": "/"}
    assert map_container_path("/runtime/config-dir/config.toml", mounts) == \
        "/var/lib/k8s-containerd/k8s-containerd/etc/containerd/config.toml"
    assert map_container_path("/host/etc/containerd/config.toml", mounts) == "/etc/containerd/config.toml"
