"""Issue 14: verdicts on real-world inputs (samples in tests/unit/data/real-world/, sources in its SOURCES.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from provision import checks
from provision.context import NoHostAccess
from provision.converge.hosts import DockerRuntime
from provision.engine import Result
from provision.hosts.access import HostAccess
from provision.hosts.guard import WriteGuard
from provision.hosts.spec import HostSpec
from provision.observe import containerd as ctd
from provision.observe import cuda, docker_daemon
from provision.observe.nvidia_smi import classify_failure
from provision.observe.timeslicing import render_config
from provision.settings import Settings
from tests.unit.observe_fixtures import fixture_text

DATA = Path(__file__).parent / "data" / "real-world"


def sample(name: str) -> str:
    return (DATA / name).read_text()


# ------------------------------------------------------------------------------------ nvidia-smi: NVML mismatch
@pytest.mark.parametrize(
    ("name", "library", "kernel"),
    [
        ("nvidia-smi/nvml-mismatch-570.124.txt", "570.124", None),
        ("nvidia-smi/nvml-mismatch-550.144.txt", "550.144", None),
        ("nvidia-smi/nvml-mismatch-no-version.txt", None, None),
    ],
)
def test_nvml_version_mismatch_says_what_it_is(name: str, library: str | None, kernel: str | None) -> None:
    finding = classify_failure(18, sample(name), "")
    assert finding is not None
    assert finding.kind == "version-mismatch"
    assert "Driver/library version mismatch" in finding.message
    assert "kernel module" in finding.message and "unknown error" not in finding.message
    if library:
        assert f"user-space NVML library {library}" in finding.message
    else:
        assert "NVML library" not in finding.message.split("versions")[-1]
    assert "reboot" in finding.remediation.lower() and "modprobe nvidia" in finding.remediation
    assert "reinstall matching driver packages" in finding.remediation
    assert finding.message.count(f"(exit {finding.exit_code})") == 1


@pytest.mark.parametrize(
    ("name", "library", "kernel"),
    [
        ("nvidia-smi/nvrm-api-mismatch-syslog.txt", "535.54.03", "530.30.02"),
        ("nvidia-smi/nvrm-api-mismatch-dmesg.txt", "595.84", "595.80"),
    ],
)
def test_nvml_version_mismatch_names_both_versions_when_the_kernel_log_is_given(
    name: str, library: str, kernel: str
) -> None:
    out = sample("nvidia-smi/nvml-mismatch-no-version.txt")
    finding = classify_failure(18, out, sample(name))
    assert finding is not None and finding.kind == "version-mismatch"
    assert f"user-space NVML library {library}, kernel module {kernel}" in finding.message


def test_nvml_mismatch_is_recognised_by_its_text_whatever_the_exit_code() -> None:
    finding = classify_failure(255, sample("nvidia-smi/nvml-mismatch-570.124.txt"), "")
    assert finding is not None and finding.kind == "version-mismatch"


# ------------------------------------------------------------------------------------ nvidia-smi: no devices
def test_no_devices_fix_names_the_causes_seen_in_the_field() -> None:
    finding = classify_failure(6, "No devices were found\n", "")
    assert finding is not None and finding.kind == "no-devices"
    for cause in ("RmInitAdapter failed", "Above 4G Decoding", "Resizable BAR",
                  "This PCI I/O region assigned to your NVIDIA device is invalid", "64-bit MMIO"):
        assert cause in finding.remediation


# ------------------------------------------------------------------------------------ Docker daemon.json


@pytest.mark.parametrize(
    "name", ["docker/daemon-absolute-path.json", "docker/daemon-nvidia-ctk.json",
             "docker/daemon-docker-desktop-absolute-path.json"]
)
def test_a_working_nvidia_runtime_entry_is_left_alone(name: str) -> None:
    cfg = docker_daemon.parse(sample(name))
    assert docker_daemon.has_nvidia_runtime(cfg)
    merged = docker_daemon.merge_nvidia_runtime(cfg)
    assert merged == cfg
    assert docker_daemon.diff(cfg, merged) == []


def test_a_broken_entry_is_merged_not_replaced() -> None:
    cfg = docker_daemon.parse(sample("docker/daemon-absolute-path.json"))
    cfg["runtimes"]["nvidia"]["path"] = "/usr/bin/nvidia-docker"  # not the runtime
    cfg["runtimes"]["nvidia"]["runtimeArgs"] = ["--debug"]
    merged = docker_daemon.merge_nvidia_runtime(cfg)
    assert merged["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "runtimeArgs": ["--debug"]}
    assert docker_daemon.diff(cfg, merged) == [
        'change runtimes.nvidia.path: "/usr/bin/nvidia-docker" -> "nvidia-container-runtime"']


def test_a_shim_entry_naming_the_runtime_binary_works() -> None:
    cfg = {"runtimes": {"nvidia": {"runtimeType": "io.containerd.runc.v2",
                                   "options": {"BinaryName": "/usr/bin/nvidia-container-runtime"}}}}
    assert docker_daemon.has_nvidia_runtime(cfg)
    assert docker_daemon.merge_nvidia_runtime(cfg) == cfg


def test_render_keeps_the_files_indent() -> None:
    text = sample("docker/daemon-nvidia-ctk.json")
    cfg = docker_daemon.parse(text)
    assert docker_daemon.render(cfg, like=text) == text


@pytest.mark.parametrize(
    ("name", "line", "column"),
    [("docker/daemon-bottlerocket-trailing-comma.json", 9, 26),
     ("docker/daemon-moby-34673-trailing-comma.json", 3, 36)],
)
def test_json_trailing_comma_is_reported_at_the_comma(name: str, line: int, column: int) -> None:
    text = sample(name)
    assert text.splitlines()[line - 1][column - 1] == ","
    with pytest.raises(docker_daemon.DaemonJsonError) as err:
        docker_daemon.parse(text, "/etc/docker/daemon.json")
    msg = str(err.value)
    assert msg.startswith(f"/etc/docker/daemon.json: invalid JSON at line {line} column {column}: trailing comma")
    assert "invalid character '}' looking for beginning of object key string" in msg
    assert msg.endswith("remove that comma")


def test_a_trailing_comma_in_an_array_is_reported_at_the_comma() -> None:
    with pytest.raises(docker_daemon.DaemonJsonError, match=r"line 2 column 30: trailing comma before the ']'"):
        docker_daemon.parse('{\n  "insecure-registries": ["a",\n  ]\n}')


# ------------------------------------------------------------------------------------ Docker converger on a host


class _Record:
    def __init__(self) -> None:
        self.changed: list[str] = []

    def file_changed(self, path: str, text: str | None) -> None:
        self.changed.append(path)

    def backup_made(self, path: str | None) -> None:
        pass


def _docker_host(tmp_path: Path, daemon_json: str) -> tuple[SimpleNamespace, Path, Path]:
    root = tmp_path / "host"
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text(daemon_json)
    calls = tmp_path / "systemctl.calls"
    (root / "usr/bin").mkdir(parents=True)
    systemctl = root / "usr/bin/systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    systemctl.chmod(0o755)
    guard = WriteGuard()
    guard.enable("test")
    host = HostAccess(HostSpec(backend="lab", root=str(root)), name="spark-1", guard=guard)
    record = _Record()
    ctx = SimpleNamespace(gpu_nodes=["spark-1"], host=lambda node: host, host_record=lambda node: record)
    return ctx, root / "etc/docker/daemon.json", calls


@pytest.mark.parametrize("name", ["docker/daemon-absolute-path.json", "docker/daemon-nvidia-ctk.json"])
def test_docker_converger_plans_nothing_for_a_working_file(tmp_path: Path, name: str) -> None:
    ctx, path, calls = _docker_host(tmp_path, sample(name))
    result = Result("docker-runtime", "provision")
    assert DockerRuntime().plan(ctx, result) == []
    assert not result.node_failures and not result.node_errors
    assert path.read_text() == sample(name) and not calls.exists()


def test_docker_converger_merges_a_broken_entry_and_restarts_once(tmp_path: Path) -> None:
    text = sample("docker/daemon-docker-desktop-absolute-path.json").replace(
        "/usr/bin/nvidia-container-runtime", "/usr/bin/nvidia-container-runtime-hook")
    ctx, path, calls = _docker_host(tmp_path, text)
    result = Result("docker-runtime", "provision")
    changes = DockerRuntime().plan(ctx, result)
    assert [c.detail for c in changes] == [
        'change runtimes.nvidia.path: "/usr/bin/nvidia-container-runtime-hook" -> "nvidia-container-runtime"; '
        "then restart docker"]
    DockerRuntime().apply(ctx, changes, result)
    after = docker_daemon.parse(path.read_text())
    assert after["builder"] == {"gc": {"defaultKeepStorage": "20GB", "enabled": True}}
    assert after["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "runtimeArgs": []}
    assert calls.read_text().splitlines() == ["restart docker"]
    DockerRuntime().apply(ctx, changes, result)  # a second apply finds the file fixed: no write, no restart
    assert calls.read_text().splitlines() == ["restart docker"]


def test_docker_converger_never_touches_a_file_with_a_trailing_comma(tmp_path: Path) -> None:
    text = sample("docker/daemon-bottlerocket-trailing-comma.json")
    ctx, path, calls = _docker_host(tmp_path, text)
    result = Result("docker-runtime", "provision")
    assert DockerRuntime().plan(ctx, result) == []
    assert "line 9 column 26: trailing comma" in result.node_failures["spark-1"]
    assert path.read_text() == text and not calls.exists()


# ------------------------------------------------------------------------------------ containerd

ROOT = "/etc/containerd/config.toml"
V3_ROOT = 'version = 3\nimports = ["/etc/containerd/conf.d/*.toml"]\n'


def _without_nvidia_runtime_type(text: str) -> str:
    """The toolkit's v3 drop-in (shared fixture) with runtime_type removed from runtimes.nvidia only: the
    issue's example of a drop-in whose nvidia table has just options.BinaryName."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip().endswith("containerd.runtimes.nvidia]"))
    drop = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("runtime_type"))
    return "".join(lines[:drop] + lines[drop + 1:])


def test_a_runtime_without_runtime_type_is_failed_with_containerds_reason() -> None:
    dropin = "/etc/containerd/conf.d/99-nvidia.toml"
    text = _without_nvidia_runtime_type(fixture_text("real-world/containerd/99-nvidia-v3-toolkit-test-expected.toml"))
    cfg = ctd.resolve(ROOT, {ROOT: V3_ROOT, dropin: text})
    assert [e.kind for e in cfg.errors] == ["runtime-type-missing"]
    finding = cfg.errors[0]
    assert finding.message == (
        f"runtime 'nvidia' in {dropin} has no runtime_type: containerd's CRI plugin loads it, but every pod with "
        'runtimeClassName nvidia fails to start with "failed to create containerd container: container.Runtime.Name '
        'must be set: invalid argument"')
    assert 'runtime_type = "io.containerd.runc.v2"' in finding.remediation
    assert '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]' in finding.remediation
    assert cfg.runtimes["nvidia"].runtime_type is None
    assert not cfg.ok


@pytest.mark.parametrize(("containerd_version", "failed"), [(None, True), ("1.7.28", True), ("2.1.4", False)])
def test_runc_without_runtime_type_depends_on_the_containerd_release(containerd_version: str | None,
                                                                     failed: bool) -> None:
    text = sample("containerd/containerd-4618-runc-binaryname-no-type.toml")
    cfg = ctd.resolve(ROOT, {ROOT: text}, containerd_version)
    assert cfg.runtimes["runc"].binary_name == "/usr/bin/runc-alternative-name"
    assert ([e.kind for e in cfg.errors] == ["runtime-type-missing"]) is failed
    assert cfg.ok is not failed  # containerd 2.x decodes into its built-in runc (runtime_type kept)


def test_a_version_4_root_is_read_and_older_drop_ins_are_migrated_to_its_layout() -> None:
    files = {
        ROOT: sample("containerd/containerd-2.4-man-v4-root.toml"),
        "/etc/containerd/runtime_nvidia.toml": fixture_text("real-world/containerd/99-nvidia-v2-toolkit-test-expected.toml"),
        "/etc/containerd/debug.toml": 'version = 3\n[debug]\n  level = "debug"\n',
    }
    cfg = ctd.resolve(ROOT, files)
    assert cfg.version == 4 and cfg.cri_plugin_id == "io.containerd.cri.v1.runtime"
    assert cfg.imports == ["/etc/containerd/runtime_nvidia.toml", "/etc/containerd/debug.toml"]
    assert {"nvidia", "nvidia-cdi", "nvidia-legacy"} <= set(cfg.runtimes)  # the v2 drop-in, migrated
    assert cfg.cri_source == "/etc/containerd/runtime_nvidia.toml"
    assert [e.kind for e in cfg.errors] == ["default-runtime-missing"]  # the toolkit's v2 drop-in has no runc
    assert cfg.merged["plugins"]["io.containerd.server.v1.grpc"] == {"address": "/run/containerd/containerd.sock"}
    assert cfg.merged["debug"] == {"level": "debug"}


@pytest.mark.parametrize(
    ("containerd_version", "said"),
    [("2.2.1", "expected containerd config version equal to or less than `3`, got `4`"),
     ("1.7.28", "unsupported config version `4`"),
     (None, None), ("2.4.0", None)],
)
def test_a_version_4_root_against_the_containerd_that_reads_it(containerd_version: str | None,
                                                               said: str | None) -> None:
    files = {ROOT: sample("containerd/containerd-2.4-man-v4-root.toml"), "/etc/containerd/debug.toml": ""}
    cfg = ctd.resolve(ROOT, files, containerd_version)
    unsupported = [e for e in cfg.errors if e.kind == "unsupported-version"]
    if said is None:
        assert unsupported == []
    else:
        assert [e.message for e in unsupported] == [
            f"failed to load TOML from {ROOT}: {said} (version = 4; containerd {containerd_version} reads versions 1 "
            f"to {ctd.max_config_version(containerd_version)})"]


def test_a_versionless_root_with_full_plugin_names_is_read() -> None:
    cfg = ctd.resolve(ROOT, {ROOT: sample("containerd/containerd-man-multiple-runtimes-versionless.toml")})
    assert cfg.version == 1 and cfg.errors == []
    assert cfg.runtimes["other"].binary_name == "/usr/bin/path-to-runtime"
    assert cfg.default_runtime_name == "runc"


def test_a_v2_dropin_under_a_v3_root_moves_image_settings_to_the_images_plugin() -> None:
    dropin = "/etc/containerd/conf.d/10-snap.toml"
    cfg = ctd.resolve(ROOT, {ROOT: V3_ROOT, dropin: (DATA.parent / "k8s-snap-containerd-config.toml").read_text()})
    plugins = cfg.merged["plugins"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"] == {
        "sandbox": "ghcr.io/canonical/k8s-snap/pause:3.10"}
    assert "sandbox_image" not in plugins["io.containerd.cri.v1.runtime"]
    assert "containerd" not in plugins["io.containerd.grpc.v1.cri"]


def test_containerd_1_7_keeps_the_last_version_a_file_sets() -> None:
    v1_root = ('imports = ["/etc/containerd/conf.d/*.toml"]\n[plugins.cri.containerd]\n'
               'default_runtime_name = "runc"\n')
    files = {ROOT: v1_root, "/etc/containerd/conf.d/99-nvidia.toml":
             fixture_text("real-world/containerd/99-nvidia-v2-toolkit-test-expected.toml")}
    new = ctd.resolve(ROOT, files)  # containerd 2.x: the versionless root takes the drop-in's version
    assert "drop-in-version-higher" not in [e.kind for e in new.errors]
    old = ctd.resolve(ROOT, files, "1.7.28")
    assert ('failed to load TOML from /etc/containerd/config.toml: invalid plugin key URI "cri" expect '
            "io.containerd.x.vx") in [e.message.split(" (")[0] for e in old.errors]


def test_render_runc_dropin_for_every_version_resolves_clean() -> None:
    for version in (1, 2, 3, 4):
        root = ("" if version == 1 else f"version = {version}\n") + 'imports = ["/etc/containerd/conf.d/*.toml"]\n'
        cfg = ctd.resolve(ROOT, {ROOT: root, "/etc/containerd/conf.d/00-k8s-runc.toml": ctd.render_runc_dropin(version)})
        assert cfg.errors == [] and cfg.runtimes["runc"].systemd_cgroup is True, version


# ------------------------------------------------------------------------------------ drop-in outside the imports

SNAP_ETC = "/var/lib/k8s-containerd/k8s-containerd/etc/containerd"


def _snap_host(tmp_path: Path, files: dict[str, str]) -> HostAccess:
    root = tmp_path / "host"
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    return HostAccess(HostSpec(backend="lab", root=str(root)), name="gpu-a", guard=WriteGuard())


def test_a_dropin_in_a_directory_containerd_does_not_import_is_named(tmp_path: Path) -> None:
    # nvidia-ctk 1.18.0 wrote /etc/containerd/config.d/99-nvidia.toml (NVIDIA/nvidia-container-toolkit#1404)
    host = _snap_host(tmp_path, {
        f"{SNAP_ETC}/config.toml": f'version = 2\nimports = ["{SNAP_ETC}/conf.d/*.toml"]\n',
        f"{SNAP_ETC}/conf.d/00-k8s-runc.toml": ctd.render_runc_dropin(2),
        "/etc/containerd/config.d/99-nvidia.toml":
            fixture_text("real-world/containerd/99-nvidia-v2-toolkit-test-expected.toml"),
    })
    ctx = SimpleNamespace(host=lambda node: host,
                          kube=SimpleNamespace(snapshot=lambda: SimpleNamespace(cluster_policy=None)))
    finding = checks.containerd_dropins(ctx, "gpu-a")
    assert not finding.ok
    assert ("found 99-nvidia.toml is at /etc/containerd/config.d/99-nvidia.toml, not in an imported directory "
            f"(containerd imports {SNAP_ETC}/conf.d/*.toml). Fix: move the file(s) named into {SNAP_ETC}/conf.d/"
            ) in finding.message


def test_a_missing_dropin_says_what_containerd_imports(tmp_path: Path) -> None:
    host = _snap_host(tmp_path, {f"{SNAP_ETC}/config.toml": f'version = 2\nimports = ["{SNAP_ETC}/conf.d/*.toml"]\n'})
    ctx = SimpleNamespace(host=lambda node: host,
                          kube=SimpleNamespace(snapshot=lambda: SimpleNamespace(cluster_policy=None)))
    finding = checks.containerd_dropins(ctx, "gpu-a")
    # Only the toolkit's drop-in is required (00-k8s-runc.toml never kept runc with the real containerd).
    assert f"99-nvidia.toml is in no imported directory (containerd imports {SNAP_ETC}/conf.d/*.toml)" in (
        finding.message)


# ------------------------------------------------------------------------------------ CUDA errors and the driver minimum


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("vectoradd/insufficient-driver-gpu-operator-343.txt", "insufficient-driver", "runtimeClassName nvidia"),
        ("vectoradd/insufficient-driver-fake-gpu-operator-125.txt", "insufficient-driver", "RuntimeClass nvidia"),
        ("vectoradd/no-device-k8s-device-plugin-471.txt", "no-device", "NVIDIA_VISIBLE_DEVICES"),
        ("vectoradd/busy-gpu-operator-2842.txt", "devices-busy", "E. Process"),
        ("vectoradd/busy-old-wording-cbio-144.txt", "devices-busy", "nvidia-smi -i <gpu> -c DEFAULT"),
    ],
)
def test_the_fix_follows_the_cuda_error(name: str, kind: str, says: str) -> None:
    log = sample(name)
    error = cuda.classify_log(log, "nvidia", "12.5", "580.95.05")
    assert error is not None and error.kind == kind
    assert error.line in log and "error" in error.line.lower()
    assert says in error.fix


def test_insufficient_driver_names_the_driver_and_cuda_pair() -> None:
    log = sample("vectoradd/insufficient-driver-gpu-operator-343.txt")
    old = cuda.classify_log(log, "nvidia", cuda.image_cuda_version(Settings().workload_image), "470.82.01")
    assert old is not None
    assert "host driver 470.82.01, image CUDA 12.5; CUDA 12.5 needs driver >= 525" in old.fix
    assert "555.42.02" in old.fix and old.fix.endswith("the driver is too old: upgrade it, or use an image built "
                                                       "for an older CUDA")
    new = cuda.classify_log(log, "nvidia", "12.5", "580.95.05")
    assert new is not None and new.fix.endswith("the driver is new enough, so look at the runtime")


def test_a_passing_log_has_no_cuda_error() -> None:
    assert cuda.classify_log(fixture_text("real-world/vectoradd/cuda-vectoradd-logs-gpu-operator-docs.txt")) is None


@pytest.mark.parametrize(
    ("image", "version"),
    [("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04", "12.5"),
     ("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda10.2", "10.2"),
     ("nvcr.io/nvidia/cuda:12.1.0-base-ubi8", "12.1"),
     ("k8s.gcr.io/cuda-vector-add:v0.1", None),
     ("registry.local:5000/cuda-sample", None)],
)
def test_image_cuda_version(image: str, version: str | None) -> None:
    assert cuda.image_cuda_version(image) == version


def test_the_default_minimum_driver_follows_the_default_workload_image() -> None:
    s = Settings()
    assert s.min_driver == 470 and cuda.image_cuda_version(s.workload_image) == "12.5"
    binding, expected = checks.driver_minimum(s.workload_image, s.min_driver)
    assert binding == 525
    assert expected.startswith(f"driver >= 525, which the workload image {s.workload_image} needs: CUDA 12.5 needs "
                               "driver >= 525")
    assert expected.endswith("the min_driver setting 470 is lower")
    # a higher setting binds, and says what the image needs
    assert checks.driver_minimum(s.workload_image, 550) == (
        550, "driver >= 550 (min_driver; the workload image's CUDA 12.5 needs >= 525)")
    # an image whose tag does not name CUDA leaves the setting alone
    assert checks.driver_minimum("k8s.gcr.io/cuda-vector-add:v0.1", 470) == (470, "driver >= 470")


def test_a_470_node_fails_the_driver_check_that_used_to_pass_it(tmp_path: Path) -> None:
    # Tesla P100 with driver 470.82.01 (shared fixture real-world/nvidia-smi/p100-smi.txt), as the query prints it
    assert "470.82.01" in fixture_text("real-world/nvidia-smi/p100-smi.txt")
    root = tmp_path / "host"
    (root / "usr/bin").mkdir(parents=True)
    smi = root / "usr/bin/nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, Tesla P100-PCIE-12GB, GPU-0f2c4d4e-1d2b-4c55-9b87-0b8a0c6e6c01, 470.82.01, "
                   "12198, [N/A], 6.0, 00000000:00:04.0'\n")
    smi.chmod(0o755)
    host = HostAccess(HostSpec(backend="lab", root=str(root)), name="p100", guard=WriteGuard())
    ctx = SimpleNamespace(host=lambda node: host, host_fact=_uncached, settings=Settings())
    finding = checks.driver(ctx, "p100", 470)
    assert not finding.ok
    assert finding.message.startswith("expected driver >= 525, which the workload image "
                                      "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04 needs")
    assert "found driver 470.82.01. Fix: install NVIDIA driver 525 or newer on p100" in finding.message


# ------------------------------------------------------------------------------------ renamed time-slicing, MIG


def _describe_node_fragment(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, allocatable) of a docs-curated `kubectl describe node` fragment."""
    labels = dict(re.findall(r"^\s+(nvidia\.com/[\w./-]+)=(\S+)$", text, re.M))
    alloc_block = text.split("Allocatable:", 1)[1]
    return labels, dict(re.findall(r"^\s+(nvidia\.com/[\w./-]+):\s+(\d+)$", alloc_block, re.M))


def _uncached(node: str, name: str, read):
    """RunContext.host_fact for a fake context: read every time."""
    return read()


def _cluster_ctx(node: str, labels: dict, alloc: dict, config: str | None = None, replicas: int = 4,
                 mig: str | None = None) -> SimpleNamespace:
    def no_host(name: str) -> None:
        raise NoHostAccess(f"no host access to {name} in this test")

    spec: dict = {"devicePlugin": {"config": {"name": "time-slicing-config", "default": "any"}}}
    if mig:
        spec["mig"] = {"strategy": mig}
    snap = SimpleNamespace(
        nodes={node: {"metadata": {"name": node, "labels": labels}, "status": {"allocatable": alloc}}},
        cluster_policy={"spec": spec},
        configmaps={"time-slicing-config": {"data": {"any": config}}} if config else {},
    )
    return SimpleNamespace(kube=SimpleNamespace(snapshot=lambda: snap), host=no_host,
                           host_fact=_uncached, settings=Settings(replicas=replicas))


def test_renamed_time_slicing_is_judged_by_the_shared_resource() -> None:
    labels, alloc = _describe_node_fragment(
        fixture_text("real-world/k8s/t4-time-slicing-renamebydefault-describe-node-fragment.txt"))
    assert alloc == {"nvidia.com/gpu": "0", "nvidia.com/gpu.shared": "16"}
    labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"  # GFD writes it; the docs fragment elides it
    ctx = _cluster_ctx("t4-renamed", labels, alloc, render_config(4, rename_by_default=True))
    found = checks.allocatable(ctx, "t4-renamed")
    assert found.ok, found.message
    assert found.message.startswith("expected allocatable nvidia.com/gpu.shared = 4 physical x 4 replicas = 16; "
                                    "found 16; nvidia.com/gpu = 0 (renamed to nvidia.com/gpu.shared by ConfigMap "
                                    "time-slicing-config key any)")
    product = checks.gfd_labels(ctx, "t4-renamed")
    assert product.ok, product.message  # Tesla-T4 without -SHARED: the resource name says it is shared


def test_renamed_time_slicing_with_too_few_replicas_names_the_shared_resource() -> None:
    labels, alloc = _describe_node_fragment(
        fixture_text("real-world/k8s/t4-time-slicing-renamebydefault-describe-node-fragment.txt"))
    ctx = _cluster_ctx("t4-renamed-8", labels, alloc, render_config(8, rename_by_default=True), replicas=8)
    found = checks.allocatable(ctx, "t4-renamed-8")
    assert not found.ok
    assert "expected allocatable nvidia.com/gpu.shared = 4 physical x 8 replicas = 32; found 16" in found.message


def test_not_renamed_time_slicing_still_wants_the_shared_product() -> None:
    labels, alloc = _describe_node_fragment(
        fixture_text("real-world/k8s/t4-time-slicing-describe-node-fragment.txt"))
    labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
    ctx = _cluster_ctx("t4-shared", labels, alloc, render_config(4))
    assert checks.allocatable(ctx, "t4-shared").ok
    assert checks.gfd_labels(ctx, "t4-shared").ok
    labels["nvidia.com/gpu.product"] = "Tesla-T4"
    wrong = checks.gfd_labels(_cluster_ctx("t4-shared-2", labels, alloc, render_config(4)), "t4-shared-2")
    assert "gpu.product=Tesla-T4 (want Tesla-T4-SHARED)" in wrong.message


def test_mig_single_is_counted_in_mig_devices() -> None:
    text = fixture_text("real-world/k8s/h100-mig-single-1g10gb-labels-success-fragment.txt")
    labels = json.loads("{" + text.strip().rstrip(",") + "}")
    ctx = _cluster_ctx("h100-mig", labels, {"nvidia.com/gpu": "7"}, replicas=1, mig="single")
    found = checks.allocatable(ctx, "h100-mig")
    assert found.ok, found.message
    # a node labelled nvidia.com/mig.config=all-1g.10gb is judged in MIG mode (provision/mig.py)
    assert found.message.startswith("h100-mig judged in MIG mode (strategy single, profile all-1g.10gb): expected "
                                    "allocatable nvidia.com/gpu = the MIG devices x 1 time-slicing replicas "
                                    "(7x 1g.10gb)")
    timesliced = checks.allocatable(_cluster_ctx("h100-mig-4", labels, {"nvidia.com/gpu": "7"}, mig="single"),
                                    "h100-mig-4")
    assert not timesliced.ok
    assert "found allocatable nvidia.com/gpu=7 (want 7 MIG devices x 4 replicas = 28)" in timesliced.message


def test_mig_mixed_is_judged_by_the_mig_resources() -> None:
    node = yaml.safe_load(fixture_text("real-world/k8s/dgxa100-node-mig-7g40gb-mixed-openshift.yaml"))
    labels, alloc = node["metadata"]["labels"], node["status"]["allocatable"]
    ctx = _cluster_ctx("dgxa100-mixed", labels, alloc, replicas=1, mig="mixed")
    found = checks.allocatable(ctx, "dgxa100-mixed")
    assert found.ok, found.message  # nvidia.com/gpu is 0 on an all-MIG node: not a failure
    assert found.message.startswith("dgxa100-mixed judged in MIG mode (strategy mixed, profile all-7g.40gb): expected "
                                    "allocatable nvidia.com/mig-<profile> = the MIG devices x 1 time-slicing "
                                    "replicas (8x 7g.40gb)")
    alloc = {**alloc, "nvidia.com/mig-7g.40gb": "6"}
    broken = checks.allocatable(_cluster_ctx("dgxa100-mixed-2", labels, alloc, replicas=1, mig="mixed"),
                                "dgxa100-mixed-2")
    assert not broken.ok and "allocatable nvidia.com/mig-7g.40gb=6 (want 8 x 1 replicas = 8)" in broken.message


def test_the_containerd_runtimes_check_fails_a_runtime_without_type_with_its_own_fix(tmp_path: Path) -> None:
    dropin = f"{SNAP_ETC}/conf.d/99-nvidia.toml"
    text = _without_nvidia_runtime_type(fixture_text("real-world/containerd/99-nvidia-v3-toolkit-test-expected.toml"))
    host = _snap_host(tmp_path, {f"{SNAP_ETC}/config.toml": f'version = 3\nimports = ["{SNAP_ETC}/conf.d/*.toml"]\n',
                                 dropin: text})
    finding = checks.containerd_runtimes(SimpleNamespace(host=lambda node: host), "gpu-a")
    assert not finding.ok
    assert (f"found runtime 'nvidia' in {dropin} has no runtime_type: containerd's CRI plugin loads it, but every pod "
            "with runtimeClassName nvidia fails to start") in finding.message
    assert finding.message.split(" Fix: ")[1].startswith(
        f'Add runtime_type = "io.containerd.runc.v2" to [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.'
        f"nvidia] in {dropin}")


def test_mig_single_product_label_is_recognised() -> None:
    text = fixture_text("real-world/k8s/h100-mig-single-1g10gb-labels-success-fragment.txt")
    labels = json.loads("{" + text.strip().rstrip(",") + "}")
    labels |= {"nvidia.com/gpu.replicas": "1", "nvidia.com/gpu.sharing-strategy": "none"}
    found = checks.gfd_labels(_cluster_ctx("h100-mig-gfd", labels, {"nvidia.com/gpu": "7"}, replicas=1, mig="single"),
                              "h100-mig-gfd")
    # judged in MIG mode (its nvidia.com/mig.config label): gpu.count 7 MIG devices and the -MIG- product
    assert found.ok, found.message
    assert found.message.startswith("h100-mig-gfd judged in MIG mode (strategy single, profile all-1g.10gb): "
                                    "expected GFD labels for MIG strategy single")
    labels["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3"
    wrong = checks.gfd_labels(_cluster_ctx("h100-mig-gfd-2", labels, {"nvidia.com/gpu": "7"}, replicas=1,
                                           mig="single"), "h100-mig-gfd-2")
    assert not wrong.ok
    assert "GFD nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3, gpu.count=7 (want <model>-MIG-<profile>" in wrong.message
