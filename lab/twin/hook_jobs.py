"""Pods of the chart's hook Jobs whose program the lab has for real: the pre-upgrade CRD job runs
`/usr/bin/manage-crds apply --filepath=/opt/gpu-operator/...` from the operator image, so the lab runs the
manage-crds binary built from the same version's source, with /opt/gpu-operator laid out as in that image,
and the pod's own ServiceAccount token (what kubelet would project into it). The v26.7.0 chart's pre-delete hook
`/usr/bin/cleanup-gpuclusters --gpucluster-name NAME` (the GPUCluster CR has helm.sh/resource-policy keep: helm
never deletes it) is played in Python with the pod's token, step for step as its source
(cmd/cleanup-gpuclusters/main.go: delete the CR, wait until it is gone, at most 5 minutes; the lab does not build
that binary): the real operator, still running during the hook, drains its claim-holding DaemonSets under its
finalizer. Other Job pods just complete."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from kubernetes import client

from lab import build_operator, pki
from lab.kubeconfig import write_kubeconfig
from lab.state import LabPaths
from lab.twin import podspec
from lab.twin.operator_process import launch_argv

MANAGE_CRDS = "/usr/bin/manage-crds"
CLEANUP_GPUCLUSTERS = "/usr/bin/cleanup-gpuclusters"


def real_program(pod: dict) -> str | None:
    ctr = podspec.container(pod)
    cmd = ctr.get("command") or []
    return cmd[0] if cmd[:1] in ([MANAGE_CRDS], [CLEANUP_GPUCLUSTERS]) else None


def run(paths: LabPaths, core: client.CoreV1Api, pod: dict) -> tuple[int, str]:
    """The job's program (real_program): (exit code, output)."""
    if real_program(pod) == CLEANUP_GPUCLUSTERS:
        return run_cleanup_gpuclusters(paths, core, pod)
    return run_manage_crds(paths, core, pod)


def run_cleanup_gpuclusters(paths: LabPaths, core: client.CoreV1Api, pod: dict, poll_s: float = 1.0,
                            timeout_s: float = 300.0) -> tuple[int, str]:
    """cleanup-gpuclusters as its main.go does it, as the pod's ServiceAccount (the lab polls every second, the
    program every 5)."""
    import time

    from kubernetes import config
    from kubernetes.client.rest import ApiException

    ctr = podspec.container(pod)
    args = [*(ctr.get("command") or [])[1:], *(ctr.get("args") or [])]
    name = args[args.index("--gpucluster-name") + 1] if "--gpucluster-name" in args else \
        podspec.env(pod, ctr).get("GPUCLUSTER_NAME", "")
    kubeconfig = service_account_kubeconfig(paths, core, pod)
    log: list[str] = []
    try:
        api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                cr = api.get_cluster_custom_object("nvidia.com", "v1alpha1", "gpuclusters", name)
            except ApiException as exc:
                if exc.status != 404:
                    return 1, "".join(log) + f'level=error msg="failed to get GPUCluster {name}: {exc.reason}"\n'
                log.append(f'level=info msg="GPUCluster {name} deleted"\n')
                return 0, "".join(log)
            if not cr["metadata"].get("deletionTimestamp"):
                log.append(f'level=info msg="Deleting GPUCluster {name}"\n')
                try:
                    api.delete_cluster_custom_object("nvidia.com", "v1alpha1", "gpuclusters", name)
                except ApiException as exc:
                    if exc.status != 404:
                        return 1, "".join(log) + f'level=error msg="failed to delete GPUCluster {name}: {exc.reason}"\n'
            log.append(f'level=info msg="Waiting for GPUCluster {name} to be deleted"\n')
            if time.monotonic() > deadline:
                return 1, "".join(log) + (f'level=error msg="timed out waiting for GPUCluster {name} to be deleted: '
                                          'context deadline exceeded"\n')
            time.sleep(poll_s)
    finally:
        kubeconfig.unlink(missing_ok=True)


def service_account_kubeconfig(paths: LabPaths, core: client.CoreV1Api, pod: dict) -> Path:
    md, spec = pod["metadata"], pod["spec"]
    sa = spec.get("serviceAccountName") or "default"
    token = core.create_namespaced_service_account_token(sa, md["namespace"], {
        "spec": {"audiences": [], "expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": md["name"], "uid": md["uid"]}}})
    twin_cfg = yaml.safe_load(paths.kubeconfig(pki.TWIN.stem).read_text())
    cluster = twin_cfg["clusters"][0]["cluster"]
    return write_kubeconfig(paths.run / f"sa-{md['uid']}.kubeconfig", cluster["server"],
                            Path(cluster["certificate-authority"]), token=token.status.token,
                            user=f"system:serviceaccount:{md['namespace']}:{sa}")


def run_manage_crds(paths: LabPaths, core: client.CoreV1Api, pod: dict) -> tuple[int, str]:
    """Run the job's command for real; (exit code, output)."""
    ctr = podspec.container(pod)
    version = podspec.image_tag(ctr)
    build = build_operator.cached(version)
    if build is None:
        return 1, f"lab: no manage-crds for {version!r} in the lab cache (python -m lab build)\n"
    kubeconfig = service_account_kubeconfig(paths, core, pod)
    try:
        res = subprocess.run(launch_argv(build.opt_dir, pod["metadata"]["namespace"],
                                         [str(build.manage_crds), *(ctr.get("args") or [])]),
                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KUBECONFIG": str(kubeconfig),
                                  **podspec.env(pod, ctr)},
                             capture_output=True, text=True, timeout=120)
    finally:
        kubeconfig.unlink(missing_ok=True)
    return res.returncode, res.stdout + res.stderr
