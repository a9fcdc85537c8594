"""Pods of the chart's hook Jobs whose program the lab has for real: the pre-upgrade CRD job runs
`/usr/bin/manage-crds apply --filepath=/opt/gpu-operator/...` from the operator image, so the lab runs the
manage-crds binary built from the same version's source, with /opt/gpu-operator laid out as in that image,
and the pod's own ServiceAccount token (what kubelet would project into it). Other Job pods just complete."""

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


def real_program(pod: dict) -> str | None:
    ctr = podspec.container(pod)
    cmd = ctr.get("command") or []
    return MANAGE_CRDS if cmd[:1] == [MANAGE_CRDS] else None


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
