from __future__ import annotations

import tomllib

import pytest
import tomlkit

from provision.observe.containerd import (
    CRI_PLUGIN_IDS,
    ContainerdConfigError,
    Runtime,
    add_import,
    cri_plugin_id,
    import_dirs,
    render_runc_dropin,
    resolve,
)
from tests.unit.observe_fixtures import data_text, fixture_params, fixture_text

BASE = "/var/lib/k8s-containerd/k8s-containerd/etc/containerd"
ROOT = f"{BASE}/config.toml"
CONF_D = f"{BASE}/conf.d"
V2_DROPIN = "real-world/containerd/99-nvidia-v2-toolkit-test-expected.toml"
V3_DROPIN = "real-world/containerd/99-nvidia-v3-toolkit-test-expected.toml"
RUNC = Runtime(runtime_type="io.containerd.runc.v2", binary_name=None, systemd_cgroup=True)
NO_RUNC_V2 = (
    "failed to load plugin io.containerd.grpc.v1.cri: no corresponding runtime configured in containerd.runtimes "
    'for default_runtime_name = "runc"'
)

V3_ROOT = """version = 3
imports = ["/etc/containerd/conf.d/*.toml"]

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "/usr/bin/runc"
      SystemdCgroup = true
"""


def snap_root() -> str:
    return data_text("k8s-snap-containerd-config.toml")


def nvidia_binaries(runtimes: dict[str, Runtime]) -> dict[str, str | None]:
    return {name: rt.binary_name for name, rt in runtimes.items() if name.startswith("nvidia")}


# --- the k8s-snap root config ---------------------------------------------------------------------------------------


def test_k8s_snap_root_alone() -> None:
    cfg = resolve(ROOT, {ROOT: snap_root()})
    assert cfg.version == 2
    assert cfg.cri_plugin_id == "io.containerd.grpc.v1.cri"
    assert cfg.runtimes == {"runc": RUNC}
    assert cfg.default_runtime_name == "runc"
    assert cfg.imports == []
    assert cfg.drop_in_versions == {}
    assert cfg.errors == []
    assert cfg.ok
    assert cfg.cri_source == ROOT
    assert cfg.builtin_runtimes is False
    cri = cfg.merged["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "ghcr.io/canonical/k8s-snap/pause:3.10"


def test_k8s_snap_imports_dir() -> None:
    assert import_dirs(snap_root()) == [CONF_D]


def test_toolkit_v2_dropin_replaces_the_whole_cri_section() -> None:
    cfg = resolve(ROOT, {ROOT: snap_root(), f"{CONF_D}/99-nvidia.toml": fixture_text(V2_DROPIN)})
    assert cfg.imports == [f"{CONF_D}/99-nvidia.toml"]
    assert cfg.drop_in_versions == {f"{CONF_D}/99-nvidia.toml": 2}
    assert sorted(cfg.runtimes) == ["nvidia", "nvidia-cdi", "nvidia-legacy"]  # runc is gone
    assert nvidia_binaries(cfg.runtimes) == {
        "nvidia": "/usr/bin/nvidia-container-runtime",
        "nvidia-cdi": "/usr/bin/nvidia-container-runtime.cdi",
        "nvidia-legacy": "/usr/bin/nvidia-container-runtime.legacy",
    }
    assert cfg.runtimes["nvidia"].runtime_type == "io.containerd.runc.v2"
    assert cfg.cri_source == f"{CONF_D}/99-nvidia.toml"
    assert [e.kind for e in cfg.errors] == ["default-runtime-missing"]
    assert cfg.errors[0].message == NO_RUNC_V2
    assert cfg.errors[0].path == f"{CONF_D}/99-nvidia.toml"
    assert "k8s-snap#1991" in cfg.errors[0].remediation
    # what the root set outside the CRI section survives
    assert cfg.merged["grpc"]["max_recv_message_size"] == 16777216


def test_runc_dropin_alone_keeps_runc() -> None:
    cfg = resolve(ROOT, {ROOT: snap_root(), f"{CONF_D}/00-k8s-runc.toml": render_runc_dropin(2)})
    assert cfg.runtimes == {"runc": RUNC}
    assert cfg.errors == []
    assert cfg.cri_source == f"{CONF_D}/00-k8s-runc.toml"
    # the drop-in replaced the CRI table: the root's sandbox_image is no longer in it
    assert "sandbox_image" not in cfg.merged["plugins"]["io.containerd.grpc.v1.cri"]


def test_runc_dropin_does_not_survive_a_later_cri_dropin() -> None:
    files = {
        ROOT: snap_root(),
        f"{CONF_D}/99-nvidia.toml": fixture_text(V2_DROPIN),
        f"{CONF_D}/00-k8s-runc.toml": render_runc_dropin(2),
    }
    cfg = resolve(ROOT, files)
    assert cfg.imports == [f"{CONF_D}/00-k8s-runc.toml", f"{CONF_D}/99-nvidia.toml"]
    assert "runc" not in cfg.runtimes
    assert [e.message for e in cfg.errors] == [NO_RUNC_V2]


def test_toolkit_dropin_that_carries_runc_is_fine() -> None:
    # what the toolkit writes when its config source (containerd config dump) already has runc
    doc = tomlkit.parse(fixture_text(V2_DROPIN))
    containerd = doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    containerd["default_runtime_name"] = "runc"
    runc = tomlkit.table()
    runc["runtime_type"] = "io.containerd.runc.v2"
    runc["options"] = {"SystemdCgroup": True}
    containerd["runtimes"]["runc"] = runc
    cfg = resolve(ROOT, {ROOT: snap_root(), f"{CONF_D}/99-nvidia.toml": tomlkit.dumps(doc)})
    assert cfg.errors == []
    assert sorted(cfg.runtimes) == ["nvidia", "nvidia-cdi", "nvidia-legacy", "runc"]
    assert cfg.runtimes["runc"] == RUNC


def test_dropin_in_a_directory_that_is_not_imported_has_no_effect() -> None:
    files = {ROOT: snap_root(), "/etc/containerd/conf.d/99-nvidia.toml": fixture_text(V2_DROPIN)}
    cfg = resolve(ROOT, files)
    assert cfg.imports == []
    assert cfg.runtimes == {"runc": RUNC}
    assert "nvidia" not in cfg.runtimes


# --- versions -------------------------------------------------------------------------------------------------------


def test_dropin_with_higher_version_stops_containerd() -> None:
    cfg = resolve(ROOT, {ROOT: snap_root(), f"{CONF_D}/99-nvidia.toml": fixture_text(V3_DROPIN)})
    assert cfg.drop_in_versions == {f"{CONF_D}/99-nvidia.toml": 3}
    assert [e.kind for e in cfg.errors] == ["drop-in-version-higher"]
    assert cfg.errors[0].message == "drop-in config version 3 higher than root config version 2"
    assert cfg.errors[0].path == f"{CONF_D}/99-nvidia.toml"


def test_dropin_version_4_message_matches_containerd() -> None:
    cfg = resolve(ROOT, {ROOT: snap_root(), f"{CONF_D}/x.toml": "version = 4\n"})
    assert [e.message for e in cfg.errors] == ["drop-in config version 4 higher than root config version 2"]
    assert cfg.runtimes == {"runc": RUNC}


def test_version_3_root_with_the_v3_toolkit_dropin() -> None:
    root = "/etc/containerd/config.toml"
    dropin = "/etc/containerd/conf.d/99-nvidia.toml"
    cfg = resolve(root, {root: V3_ROOT, dropin: fixture_text(V3_DROPIN)})
    assert cfg.version == 3
    assert cfg.cri_plugin_id == "io.containerd.cri.v1.runtime"
    assert cfg.errors == []
    assert sorted(cfg.runtimes) == ["nvidia", "nvidia-cdi", "nvidia-legacy", "runc"]
    # the v3 drop-in re-emits runc without SystemdCgroup: the root's options are gone with the replaced table
    assert cfg.runtimes["runc"] == Runtime("io.containerd.runc.v2", "/usr/bin/runc", None)
    assert cfg.default_runtime_name == "runc"
    assert cfg.merged["plugins"]["io.containerd.cri.v1.images"] == {"snapshotter": "overlayfs"}


def test_v2_dropin_under_a_v3_root_is_migrated_to_the_v3_plugin() -> None:
    root = "/etc/containerd/config.toml"
    dropin = "/etc/containerd/conf.d/99-nvidia.toml"
    cfg = resolve(root, {root: V3_ROOT, dropin: fixture_text(V2_DROPIN)})
    assert cfg.drop_in_versions == {dropin: 2}
    assert sorted(cfg.runtimes) == ["nvidia", "nvidia-cdi", "nvidia-legacy"]
    assert [e.message for e in cfg.errors] == [
        "failed to load plugin io.containerd.cri.v1.runtime: no corresponding runtime configured in "
        'containerd.runtimes for default_runtime_name = "runc"'
    ]


def test_v2_dropin_without_containerd_section_under_v3_root_still_replaces_runtime_plugin() -> None:
    root = "/etc/containerd/config.toml"
    dropin = "/etc/containerd/conf.d/auth.toml"
    auth = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs."r.io".auth]\nusername = "u"\n'
    cfg = resolve(root, {root: V3_ROOT, dropin: auth})
    assert cfg.runtimes == {}
    assert cfg.builtin_runtimes is True  # no runtimes table left: containerd's built-in runc applies
    assert cfg.errors == []


def test_root_without_version_is_read_as_version_1() -> None:
    root = "/etc/containerd/config.toml"
    text = ('[plugins.cri.containerd]\ndefault_runtime_name = "runc"\n'
            '[plugins.cri.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n')
    cfg = resolve(root, {root: text})
    assert cfg.version == 1
    assert cfg.errors == []
    assert cfg.cri_plugin_id == "io.containerd.grpc.v1.cri"  # v1 "cri" read under its version 2 name
    assert cfg.runtimes == {"runc": Runtime("io.containerd.runc.v2", None, None)}


def test_versionless_v1_dropin_cri_section_is_renamed() -> None:
    dropin = f"{CONF_D}/old.toml"
    text = '[plugins.cri.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n'
    cfg = resolve(ROOT, {ROOT: snap_root(), dropin: text})
    assert cfg.drop_in_versions == {dropin: 1}
    assert cfg.runtimes == {"runc": Runtime("io.containerd.runc.v2", None, None)}
    assert cfg.cri_source == dropin
    assert cfg.errors == []


def test_cri_plugin_id() -> None:
    assert cri_plugin_id(1) == "io.containerd.grpc.v1.cri"
    assert cri_plugin_id(2) == "io.containerd.grpc.v1.cri"
    assert cri_plugin_id(3) == "io.containerd.cri.v1.runtime"
    assert cri_plugin_id(4) == "io.containerd.cri.v1.runtime"
    with pytest.raises(ValueError, match="version 5 is not supported"):
        cri_plugin_id(5)


# --- imports --------------------------------------------------------------------------------------------------------


def test_glob_order_relative_imports_and_no_crossing_of_slashes() -> None:
    root = "/etc/containerd/config.toml"
    files = {
        root: 'version = 2\nimports = ["conf.d/*.toml"]\n',
        "/etc/containerd/conf.d/99-b.toml": "version = 2\n",
        "/etc/containerd/conf.d/10-a.toml": "version = 2\n",
        "/etc/containerd/conf.d/a.toml": "version = 2\n",
        "/etc/containerd/conf.d/notes.txt": "not toml at all [",
        "/etc/containerd/conf.d/sub/x.toml": "version = 2\n",
    }
    cfg = resolve(root, files)
    assert cfg.imports == [
        "/etc/containerd/conf.d/10-a.toml",
        "/etc/containerd/conf.d/99-b.toml",
        "/etc/containerd/conf.d/a.toml",
    ]
    assert cfg.errors == []
    assert cfg.builtin_runtimes is True
    assert cfg.runtimes == {}


def test_nested_imports_cycles_and_missing_plain_import() -> None:
    root = "/etc/containerd/config.toml"
    files = {
        root: 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml", "/etc/containerd/extra.toml"]\n',
        "/etc/containerd/conf.d/a.toml": 'version = 2\nimports = ["../config.toml", "nested/b.toml"]\n',
        "/etc/containerd/conf.d/nested/b.toml": 'version = 2\n[grpc]\naddress = "/run/b.sock"\n',
    }
    cfg = resolve(root, files)
    # breadth first: the root's imports, then a.toml's
    assert cfg.imports == ["/etc/containerd/conf.d/a.toml", "/etc/containerd/conf.d/nested/b.toml"]
    assert [e.kind for e in cfg.errors] == ["missing-import"]
    assert cfg.errors[0].message == (
        "open /etc/containerd/extra.toml: no such file or directory (imported by /etc/containerd/config.toml)"
    )
    assert cfg.merged["grpc"] == {"address": "/run/b.sock"}
    assert cfg.merged["imports"] == [
        "/etc/containerd/conf.d/*.toml",
        "/etc/containerd/extra.toml",
        "../config.toml",
        "nested/b.toml",
    ]


def test_top_level_tables_merge_one_level_and_scalars_override() -> None:
    dropin = f"{CONF_D}/grpc.toml"
    text = "version = 2\noom_score = -999\n[grpc]\nmax_recv_message_size = 1024\n"
    cfg = resolve(ROOT, {ROOT: snap_root(), dropin: text})
    assert cfg.merged["grpc"] == {
        "uid": 0,
        "gid": 0,
        "max_recv_message_size": 1024,
        "max_send_message_size": 16777216,
    }
    assert cfg.merged["oom_score"] == -999
    assert cfg.runtimes == {"runc": RUNC}


def test_import_dirs() -> None:
    text = 'version = 2\nimports = ["conf.d/*.toml", "/opt/x/extra.toml", "/etc/containerd/conf.d/99-*.toml"]\n'
    assert import_dirs(text, "/etc/containerd/config.toml") == ["/etc/containerd/conf.d", "/opt/x"]
    assert import_dirs(text) == ["conf.d", "/opt/x", "/etc/containerd/conf.d"]
    assert import_dirs("version = 2\n") == []


# --- errors ---------------------------------------------------------------------------------------------------------


def test_invalid_toml_names_the_file_and_the_tomllib_error() -> None:
    files = {ROOT: snap_root(), f"{CONF_D}/broken.toml": "version = 2\n[plugins\n"}
    with pytest.raises(ContainerdConfigError, match=rf"^{CONF_D}/broken.toml: invalid TOML: .*line 2"):
        resolve(ROOT, files)


def test_root_must_be_given() -> None:
    with pytest.raises(ContainerdConfigError, match="root config not given"):
        resolve(ROOT, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version = "2"\n', r"version must be an integer, got '2'"),
        ("version = true\n", r"version must be an integer, got True"),
        ('version = 2\nimports = "/etc/containerd/conf.d/*.toml"\n', r"imports must be an array of strings"),
        ("version = 2\nplugins = 3\n", r"plugins must be a table"),
    ],
)
def test_wrong_types_containerd_cannot_decode(text: str, message: str) -> None:
    with pytest.raises(ContainerdConfigError, match=rf"^{ROOT}: {message}"):
        resolve(ROOT, {ROOT: text})


def test_malformed_runtime_is_a_plugin_finding() -> None:
    dropin = f"{CONF_D}/bad.toml"
    text = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes]\nrunc = "runc"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.x]\nruntime_type = 1\n'
    )
    cfg = resolve(ROOT, {ROOT: snap_root(), dropin: text})
    assert [e.kind for e in cfg.errors] == ["invalid-plugin-config", "invalid-plugin-config"]
    assert "runtime 'runc': must be a table" in cfg.errors[0].message
    assert "runtime 'x': runtime_type must be a string" in cfg.errors[1].message
    assert cfg.runtimes == {"x": Runtime(None, None, None)}


# --- real toolkit drop-ins --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", fixture_params("real-world/containerd", "*.toml"))
def test_real_toolkit_dropins_resolve_as_their_own_root(relative: str) -> None:
    text = fixture_text(relative)
    version = tomllib.loads(text)["version"]
    cfg = resolve("/etc/containerd/conf.d/99-nvidia.toml", {"/etc/containerd/conf.d/99-nvidia.toml": text})
    assert cfg.version == version
    assert cfg.cri_plugin_id == CRI_PLUGIN_IDS[version]
    assert {"nvidia", "nvidia-cdi", "nvidia-legacy"} <= set(cfg.runtimes)
    assert nvidia_binaries(cfg.runtimes)["nvidia"] == "/usr/bin/nvidia-container-runtime"
    # v2 expected drop-in has no runc (top-level config absent); v3 re-emits the runc of its source
    assert ("runc" in cfg.runtimes) is (version == 3)
    assert cfg.ok is (version == 3)


# --- renderers ------------------------------------------------------------------------------------------------------


def test_render_runc_dropin_v2() -> None:
    text = render_runc_dropin(2)
    assert tomllib.loads(text) == {
        "version": 2,
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}},
                }
            }
        },
    }
    assert text.startswith("# ")
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]' in text


def test_render_runc_dropin_v3() -> None:
    data = tomllib.loads(render_runc_dropin(3))
    assert data["version"] == 3
    assert list(data["plugins"]) == ["io.containerd.cri.v1.runtime"]
    runc = data["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc == {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}


def test_render_runc_dropin_rejects_unsupported_versions() -> None:
    with pytest.raises(ValueError, match="version 5 is not supported"):
        render_runc_dropin(5)


def test_add_import_preserves_the_file_and_is_idempotent() -> None:
    root = snap_root()
    extra = "/etc/containerd/conf.d/*.toml"
    once = add_import(root, extra)
    assert once != root
    assert tomllib.loads(once)["imports"] == [f"{CONF_D}/*.toml", extra]
    assert "# Sample root containerd config" in once  # comments kept
    assert "max_container_log_line_size = 16384" in once
    assert add_import(once, extra) == once
    # the only difference is the import entry
    assert once.replace(f', "{extra}"', "") == root


def test_add_import_to_a_config_without_imports() -> None:
    text = "# containerd\nversion = 2\n\n[grpc]\n  uid = 0\n"
    added = add_import(text, "/etc/containerd/conf.d/*.toml")
    assert tomllib.loads(added) == {"version": 2, "imports": ["/etc/containerd/conf.d/*.toml"], "grpc": {"uid": 0}}
    assert added.startswith("# containerd\nversion = 2\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [("version = 2\nimports = 5\n", "imports must be an array of strings"), ("version = [\n", "invalid TOML")],
)
def test_add_import_errors(text: str, message: str) -> None:
    with pytest.raises(ContainerdConfigError, match=message):
        add_import(text, "/x/*.toml", path="/etc/containerd/config.toml")
