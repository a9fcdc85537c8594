"""lab/twin/hostcmd.py (snap, systemctl, docker) and the shims run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from lab.spec import H200_CAPTURE, Fault
from lab.twin import containerd, toolkit
from lab.twin.hostcmd import DOCKER_NOT_RUNNING, docker_run, snap_run, systemctl_run

from .conftest import K8S_SNAP_ENV, SNAP_CONFIG, hp

HOST_DRIVER_UNIT = """[Unit]
Description=Mark the host NVIDIA driver ready for the GPU Operator validator (/run is tmpfs)
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mkdir -p /run/nvidia/validations
ExecStart=/usr/bin/touch /run/nvidia/validations/host-driver-ready

[Install]
WantedBy=multi-user.target
"""


def test_snap_restart_reports_success_even_when_containerd_fails(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    toolkit.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False, faults=(Fault.CONTAINERD_BREAKS,))
    assert snap_run(root, ["restart", "k8s.containerd"]) == (0, "Restarted.\n", "")
    st = containerd.state(root)
    # the toolkit's own restart signal (1), then snap restart (2)
    assert st["running"] is False and st["restarts"] == 2 and "default_runtime_name" in st["error"]
    rc, out, _ = snap_run(root, ["services", "k8s.containerd"])
    assert rc == 0
    assert out.splitlines() == ["Service         Startup  Current  Notes",
                                "k8s.containerd  enabled  active   -"]   # the daemon runs; its CRI does not
    assert systemctl_run(root, ["is-active", "snap.k8s.containerd"]) == (0, "active\n", "")


def test_snap_errors(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    assert snap_run(root, ["frobnicate"]) == (1, "", "error: unknown command \"frobnicate\", see 'snap help'.\n")
    assert snap_run(root, ["restart", "k8s.nope"]) == (1, "", 'error: snap "k8s" has no service "nope"\n')
    assert snap_run(root, ["restart", "docker"]) == (1, "", 'error: snap "docker" not found\n')
    assert snap_run(root, ["list", "k8s"])[1].splitlines()[1].startswith("k8s ")


def test_version_error_takes_the_daemon_down(make_host) -> None:
    root = make_host("new", k8s_snap_track="1.35")     # containerd 2.1 (config version 3; 2.3 accepts 4)
    toolkit.toolkit_install(root, K8S_SNAP_ENV, cdi_enabled=False, faults=(Fault.DROPIN_VERSION_TOO_HIGH,))
    assert snap_run(root, ["restart", "k8s.containerd"])[0] == 0
    assert "inactive" in snap_run(root, ["services", "k8s.containerd"])[1]
    rc, out, _ = systemctl_run(root, ["status", "snap.k8s.containerd"])
    # containerd 2.1's own text (ValidateVersion after the merge), not aicr#1688's "higher than root config version"
    assert rc == 3 and "expected containerd config version equal to or less than `3`, got `4`" in out


def test_systemd_oneshot_unit_recreates_host_driver_ready(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-a"]
    unit = "/etc/systemd/system/nvidia-host-driver-ready.service"
    hp(root, unit).write_text(HOST_DRIVER_UNIT)
    assert systemctl_run(root, ["daemon-reload"]) == (0, "", "")
    assert systemctl_run(root, ["is-enabled", "nvidia-host-driver-ready.service"])[:2] == (1, "disabled\n")
    rc, _, err = systemctl_run(root, ["enable", "--now", "nvidia-host-driver-ready.service"])
    assert rc == 0 and "Created symlink" in err
    assert hp(root, "/run/nvidia/validations/host-driver-ready").is_file()
    assert systemctl_run(root, ["is-enabled", "nvidia-host-driver-ready"]) == (0, "enabled\n", "")
    assert systemctl_run(root, ["is-active", "nvidia-host-driver-ready"]) == (0, "active\n", "")
    state = json.loads((root / ".twin/systemd.json").read_text())
    assert state["daemon_reloads"] == 1 and state["units"]["nvidia-host-driver-ready.service"]["starts"] == 1
    # after a reboot (/run emptied) a start brings it back
    hp(root, "/run/nvidia/validations/host-driver-ready").unlink()
    assert systemctl_run(root, ["start", "nvidia-host-driver-ready"]) == (0, "", "")
    assert hp(root, "/run/nvidia/validations/host-driver-ready").exists()


def test_systemd_sh_c_form_and_unsupported_commands(hosts: dict[str, Path]) -> None:
    root = hosts["gpu-b"]
    hp(root, "/etc/systemd/system/a.service").write_text(
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'mkdir -p /run/nvidia/validations && "
        "touch /run/nvidia/validations/host-driver-ready'\n")
    assert systemctl_run(root, ["start", "a"])[0] == 0
    assert hp(root, "/run/nvidia/validations/host-driver-ready").exists()
    assert systemctl_run(root, ["is-active", "a"]) == (3, "inactive\n", "")     # oneshot without RemainAfterExit
    hp(root, "/etc/systemd/system/b.service").write_text("[Service]\nExecStart=/usr/bin/nvidia-smi -pm 1\n")
    rc, _, err = systemctl_run(root, ["start", "b.service"])
    assert rc == 1 and err.startswith("Job for b.service failed because the control process exited with error code.")
    assert systemctl_run(root, ["is-active", "b"]) == (3, "failed\n", "")
    rc, out, _ = systemctl_run(root, ["status", "b"])
    assert rc == 3 and "runs only mkdir -p / touch" in out
    assert systemctl_run(root, ["start", "nope"]) == (5, "", "Failed to start nope.service: Unit nope.service not found.\n")
    assert systemctl_run(root, ["enable", "nope"])[0] == 1


def test_docker_loads_daemon_json_only_when_restarted(hosts: dict[str, Path]) -> None:
    root = hosts["spark-1"]
    fmt = ["info", "--format", "{{json .Runtimes}}"]
    rc, out, _ = docker_run(root, fmt)
    assert rc == 0 and json.loads(out) == {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}}
    assert docker_run(root, ["run", "--rm", "--runtime=nvidia", "--gpus", "all", "img", "nvidia-smi", "-L"]) == (
        125, "", "docker: Error response from daemon: unknown or invalid runtime name: nvidia.\n")
    daemon = json.loads(hp(root, "/etc/docker/daemon.json").read_text())
    daemon["runtimes"] = {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}
    hp(root, "/etc/docker/daemon.json").write_text(json.dumps(daemon))
    assert "nvidia" not in json.loads(docker_run(root, fmt)[1])                 # not before the restart
    assert systemctl_run(root, ["restart", "docker"]) == (0, "", "")
    runtimes = json.loads(docker_run(root, fmt)[1])
    assert runtimes["nvidia"] == {"path": "nvidia-container-runtime"} and "runc" in runtimes
    rc, out, _ = docker_run(root, ["run", "--rm", "--runtime=nvidia", "--gpus", "all", "img", "nvidia-smi", "-L"])
    assert rc == 0 and out.startswith("GPU 0: NVIDIA GB10 (UUID: GPU-")


def test_docker_with_bad_daemon_json(hosts: dict[str, Path]) -> None:
    root = hosts["spark-1"]
    hp(root, "/etc/docker/daemon.json").write_text('{"runtimes": {"nvidia": }')
    rc, _, err = systemctl_run(root, ["restart", "docker.service"])
    assert rc == 1 and err.startswith("Job for docker.service failed")
    assert docker_run(root, ["info", "--format", "{{json .Runtimes}}"]) == (1, "", DOCKER_NOT_RUNNING + "\n")
    assert systemctl_run(root, ["is-active", "docker"]) == (3, "failed\n", "")
    rc, out, _ = systemctl_run(root, ["status", "docker"])
    assert "unable to configure the Docker daemon with file /etc/docker/daemon.json" in out
    hp(root, "/etc/docker/daemon.json").write_text("{}")
    assert systemctl_run(root, ["restart", "docker"])[0] == 0
    assert json.loads((root / ".twin/docker.json").read_text())["restarts"] == 2
    assert docker_run(root, ["info", "--format", "{{json .Runtimes}}"])[0] == 0


def _sh(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """As the suite's host access runs commands: PATH with the host's bin dirs first, plain argv, no PYTHONPATH."""
    env = {"PATH": f"{root}/usr/local/sbin:{root}/usr/local/bin:{root}/usr/sbin:{root}/usr/bin:/usr/bin:/bin",
           "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60, cwd="/")


def test_the_shims_run_as_programs(hosts: dict[str, Path]) -> None:
    gpu, spark = hosts["gpu-a"], hosts["spark-1"]
    res = _sh(gpu, "nvidia-smi", "--query-gpu=index,name,uuid,driver_version,memory.total,mig.mode.current",
              "--format=csv,noheader,nounits")
    assert (res.returncode, res.stdout) == (0, (H200_CAPTURE / "smi-query-noheader.csv").read_text())
    res = _sh(gpu, "nvidia-smi", "--nope")
    assert res.returncode == 255 and "Option --nope is not recognized" in res.stdout
    res = _sh(gpu, "snap", "restart", "k8s.containerd")
    assert (res.returncode, res.stdout) == (0, "Restarted.\n")
    assert containerd.state(gpu)["restarts"] == 1
    hp(gpu, "/etc/systemd/system/hdr.service").write_text(HOST_DRIVER_UNIT)
    res = _sh(gpu, "systemctl", "enable", "--now", "hdr.service")
    assert res.returncode == 0, res.stderr
    assert hp(gpu, "/run/nvidia/validations/host-driver-ready").exists()
    res = _sh(spark, "docker", "info", "--format", "{{json .Runtimes}}")
    assert res.returncode == 0 and "runc" in json.loads(res.stdout)
    res = _sh(spark, "bash", "-c", "cat /dev/null; sh -c 'command -v nvidia-smi'")
    assert res.stdout.strip() == f"{spark}/usr/bin/nvidia-smi"
    assert hp(gpu, SNAP_CONFIG).exists()
