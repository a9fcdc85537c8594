"""lab/twin/containerd.py: containerd's config semantics and what the NVIDIA toolkit writes, on real files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from lab.spec import SHARED
from lab.twin import containerd, hostview

from .conftest import K8S_SNAP_ENV, SNAP_CONFIG, SNAP_DROP_IN, B, hp

FIXTURES = SHARED / "fixtures" / "real-world" / "containerd"
CRI_ERROR_RUNC = ('failed to load plugin io.containerd.grpc.v1.cri: no corresponding runtime configured in '
                  'containerd.runtimes for default_runtime_name = "runc"')
RUNC_DROPIN = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = true
"""


def test_the_seeded_config_evaluates_ok_with_runc(hosts: dict[str, Path]) -> None:
    for root in hosts.values():
        ev = containerd.effective(root)
        assert ev.ok and ev.error is None
        assert ev.runtimes == ["runc"] and ev.default_runtime == "runc"
        assert ev.imports == [] and ev.config == SNAP_CONFIG and ev.version == 2


def test_toolkit_with_the_k8s_snap_settings_gives_runc_and_nvidia(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    before = hp(root, SNAP_CONFIG).read_text()
    written = containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False)
    assert written == [SNAP_DROP_IN, SNAP_CONFIG]
    assert hp(root, SNAP_CONFIG).read_text() == before          # the import is already there
    assert containerd.state(root)["runtimes"] == ["runc"]        # nothing changes before the restart
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["nvidia", "runc"] and ev.default_runtime == "runc"
    assert ev.imports == [SNAP_DROP_IN]
    st = containerd.state(root)
    assert st["running"] is True and st["runtimes"] == ["nvidia", "runc"] and st["restarts"] == 1
    dropin = tomllib.loads(hp(root, SNAP_DROP_IN).read_text())
    nvidia = dropin["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["nvidia"]
    assert nvidia["runtime_type"] == "io.containerd.runc.v2"
    assert nvidia["options"]["BinaryName"] == "/usr/local/nvidia/toolkit/nvidia-container-runtime"
    assert nvidia["options"]["SystemdCgroup"] is True            # options copied from runc, as the toolkit does
    rec = json.loads((root / ".twin/toolkit.json").read_text())["last"]
    assert rec["source"] == f"file={SNAP_CONFIG}" and rec["written"] == written

    containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=True)
    ev = containerd.restart(root)
    assert ev.runtimes == ["nvidia", "nvidia-cdi", "nvidia-legacy", "runc"]
    assert containerd.state(root)["restarts"] == 2


def test_toolkit_with_defaults_is_not_imported_by_the_snap(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-b"]
    written = containerd.toolkit_install(root, {}, cdi_enabled=True)
    assert written == ["/etc/containerd/conf.d/99-nvidia.toml", "/etc/containerd/config.toml"]
    assert tomllib.loads(hp(root, "/etc/containerd/config.toml").read_text()) == {
        "version": 2, "imports": ["/etc/containerd/conf.d/*.toml"]}
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["runc"] and ev.imports == []        # the snap never reads /etc/containerd


def test_dgx_spark_with_the_original_playbook_settings_breaks_containerd(hosts: dict[str, Path]) -> None:
    """canonical/k8s-snap#1991: CONTAINERD_CONFIG set, drop-in and config source left at their defaults: the
    toolkit dumps Docker's containerd (CRI disabled), writes a CRI section without runc to /etc/containerd/conf.d
    and imports that into the snap's config."""
    root = hosts["spark-1"]
    env = {"CONTAINERD_CONFIG": SNAP_CONFIG, "CONTAINERD_SET_AS_DEFAULT": "true"}
    containerd.toolkit_install(root, env, cdi_enabled=True)          # CDI on: set-as-default is forced off
    rec = json.loads((root / ".twin/toolkit.json").read_text())["last"]
    assert rec["source"] == "command" and rec["set_as_default"] is False
    assert "/etc/containerd/conf.d/*.toml" in tomllib.loads(hp(root, SNAP_CONFIG).read_text())["imports"]
    ev = containerd.restart(root)
    assert (ev.ok, ev.error) == (False, CRI_ERROR_RUNC)
    assert ev.runtimes == ["nvidia", "nvidia-cdi", "nvidia-legacy"] and ev.default_runtime == "runc"
    assert ev.daemon_up                                              # containerd runs, without CRI
    assert containerd.state(root)["running"] is False
    # CDI off and nvidia set as default: the CRI plugin loads (no runc at all, every pod runs under nvidia)
    containerd.toolkit_install(root, env, cdi_enabled=False)
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["nvidia"] and ev.default_runtime == "nvidia"


def test_containerd_breaks_fault(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=True, faults=("containerd-breaks",))
    cri = tomllib.loads(hp(root, SNAP_DROP_IN).read_text())["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert sorted(cri["runtimes"]) == ["nvidia", "nvidia-cdi", "nvidia-legacy"]
    assert "default_runtime_name" not in cri
    ev = containerd.restart(root)
    assert not ev.ok and ev.error == CRI_ERROR_RUNC


def test_a_runc_drop_in_sorting_before_the_broken_one_does_not_save_it(hosts: dict[str, Path]) -> None:
    """The original setup's /etc/containerd/conf.d/00-k8s-runc.toml: on containerd 1.x the later 99-nvidia.toml
    replaces the whole CRI plugin table, so the runc declared by 00-k8s-runc.toml is gone again."""
    root = hosts["spark-1"]
    hp(root, "/etc/containerd/conf.d/00-k8s-runc.toml").write_text(RUNC_DROPIN)
    containerd.toolkit_install(root, {"CONTAINERD_CONFIG": SNAP_CONFIG}, cdi_enabled=False)
    ev = containerd.restart(root)
    assert ev.imports == ["/etc/containerd/conf.d/00-k8s-runc.toml", "/etc/containerd/conf.d/99-nvidia.toml"]
    assert (ev.ok, ev.error) == (False, CRI_ERROR_RUNC)
    # sorting after the drop-in brings runc back - and drops nvidia (the table is replaced whole again)
    hp(root, "/etc/containerd/conf.d/zz-k8s-runc.toml").write_text(RUNC_DROPIN)
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["runc"]


def test_dropin_version_too_high_stops_containerd_2(make_host) -> None:
    root = make_host("new", containerd_version="2.1.4")
    containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=True, faults=("dropin-version-too-high",))
    assert tomllib.loads(hp(root, SNAP_DROP_IN).read_text())["version"] == 4
    ev = containerd.restart(root)
    assert not ev.ok and not ev.daemon_up
    assert ev.error == (f"failed to load TOML: {SNAP_DROP_IN}: drop-in config version 4 higher than root config "
                        "version 3")
    assert ev.error.endswith("drop-in config version 4 higher than root config version 3")


def test_containerd_1_7_has_no_drop_in_version_check(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False, faults=("dropin-version-too-high",))
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["nvidia", "runc"]


def test_containerd_2_merges_plugin_tables_deep(make_host) -> None:
    """containerd >= 2.0 (containerd/containerd#9982): a drop-in without runc no longer removes it."""
    root = make_host("new", containerd_version="2.1.4")
    containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False, faults=("containerd-breaks",))
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["nvidia", "runc"] and ev.cri_plugin == "io.containerd.cri.v1.runtime"
    # a version 2 drop-in is migrated into the v3 runtime plugin first
    hp(root, f"{B}/etc/containerd/conf.d/50-extra.toml").write_text(RUNC_DROPIN.replace(
        "runtimes.runc", "runtimes.extra").replace('default_runtime_name = "runc"', ""))
    ev = containerd.restart(root)
    assert ev.ok and ev.runtimes == ["extra", "nvidia", "runc"]


def test_a_drop_in_that_does_not_parse(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    bad = f"{B}/etc/containerd/conf.d/10-bad.toml"
    hp(root, bad).write_text("[plugins\nx = 1\n")
    ev = containerd.restart(root)
    assert not ev.ok and not ev.daemon_up
    try:
        tomllib.loads("[plugins\nx = 1\n")
    except tomllib.TOMLDecodeError as exc:
        assert ev.error == f"failed to load TOML: {bad}: {exc}"


def test_running_state_changes_only_on_restart(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    containerd.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False, faults=("containerd-breaks",))
    assert containerd.state(root)["running"] is True
    assert not containerd.effective(root).ok
    containerd.restart(root)
    assert containerd.state(root)["running"] is False


@pytest.mark.parametrize(("fixture", "source"), [
    ("99-nvidia-v2-toolkit-test-expected.toml", {}),
    ("99-nvidia-v3-toolkit-test-expected.toml", {
        "version": 3, "plugins": {"io.containerd.cri.v1.runtime": {"containerd": {"runtimes": {"runc": {
            "runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": "/usr/bin/runc"}}}}}}}),
])
def test_drop_in_matches_the_toolkit_test_expectations(fixture: str, source: dict) -> None:
    """nvidia-container-toolkit's own tests (config_test.go) with binaries in /usr/bin, CDI runtimes on."""
    _, _, dropin = containerd._dropin(source, cdi_enabled=True, set_default=False, faults=(), binary_dir="/usr/bin")
    assert tomllib.loads(containerd.render(dropin)) == tomllib.loads((FIXTURES / fixture).read_text())


def test_config_source_command_without_docker_falls_back_or_fails(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    with pytest.raises(containerd.ToolkitError, match="executable file not found"):
        containerd.toolkit_install(root, {**K8S_SNAP_ENV, "RUNTIME_CONFIG_SOURCE": "command"}, cdi_enabled=False)
    containerd.toolkit_install(root, {**K8S_SNAP_ENV, "RUNTIME_CONFIG_SOURCE": "command,file"}, cdi_enabled=False)
    assert json.loads((root / ".twin/toolkit.json").read_text())["last"]["source"] == f"file={SNAP_CONFIG}"


def test_set_as_default_is_forced_off_with_cdi(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    env = {**K8S_SNAP_ENV, "NVIDIA_RUNTIME_SET_AS_DEFAULT": "true"}
    containerd.toolkit_install(root, env, cdi_enabled=True)
    assert containerd.restart(root).default_runtime == "runc"
    containerd.toolkit_install(root, env, cdi_enabled=False)
    assert containerd.restart(root).default_runtime == "nvidia"


def test_toolkit_uninstall_leaves_the_import_in_the_snap_config(hosts: dict[str, Path]) -> None:
    root = hosts["spark-1"]
    containerd.toolkit_install(root, {"CONTAINERD_CONFIG": SNAP_CONFIG, "RUNTIME_CONFIG_SOURCE": "file"},
                               cdi_enabled=False)
    assert containerd.toolkit_uninstall(root) == ["/etc/containerd/conf.d/99-nvidia.toml"]
    assert "/etc/containerd/conf.d/*.toml" in tomllib.loads(hp(root, SNAP_CONFIG).read_text())["imports"]
    other = hosts["gpu-b"]
    containerd.toolkit_install(other, {}, cdi_enabled=False)
    assert containerd.toolkit_uninstall(other) == ["/etc/containerd/conf.d/99-nvidia.toml",
                                                   "/etc/containerd/config.toml"]
    assert not hp(other, "/etc/containerd/config.toml").exists()


def test_k8sd_rewrite_drops_the_toolkit_import(hosts: dict[str, Path]) -> None:
    root = hosts["spark-1"]
    containerd.toolkit_install(root, {"CONTAINERD_CONFIG": SNAP_CONFIG}, cdi_enabled=False)
    hostview.write_k8s_containerd_config(root, hostview.load_node(root))
    assert containerd.restart(root).ok


def test_lock_file_holding_the_containerd_root_itself(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    hp(root, hostview.LOCK_FILE).write_text(B + "\n")
    assert containerd.effective(root).config == SNAP_CONFIG
