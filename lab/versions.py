"""Pinned versions of everything the lab builds, and where builds are cached.

The Kubernetes version is a setting: ``LAB_K8S_VERSION`` overrides it (1.34.x is the lowest the suite
supports). Binaries are cached per version outside the repository and never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = "gpu-node-conformance"

K8S_VERSION = os.environ.get("LAB_K8S_VERSION", "v1.34.4")
HELM_VERSION = os.environ.get("LAB_HELM_VERSION", "v3.19.5")
KWOK_VERSION = os.environ.get("LAB_KWOK_VERSION", "v0.8.0")

# The k8s.io staging modules that k8s.io/kubernetes replaces with ./staging/src/... in its own go.mod;
# a wrapper module must replace each with its published v0.Y.Z.
STAGING_MODULES = (
    "api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
    "cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
    "controller-manager", "cri-api", "cri-client", "csi-translation-lib", "dynamic-resource-allocation",
    "endpointslice", "externaljwt", "kms", "kube-aggregator", "kube-controller-manager", "kube-proxy",
    "kube-scheduler", "kubectl", "kubelet", "metrics", "mount-utils", "pod-security-admission",
    "sample-apiserver", "sample-cli-plugin", "sample-controller",
)

CONTROL_PLANE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
ALL_BINARIES = (*CONTROL_PLANE_BINARIES, "helm", "kwok")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / PROJECT / "lab"


def bin_dir(k8s_version: str = K8S_VERSION) -> Path:
    """Folder holding the binaries for one Kubernetes version (helm and kwok pinned alongside)."""
    return cache_root() / f"{k8s_version}-helm{HELM_VERSION}-kwok{KWOK_VERSION}" / "bin"


def staging_version(k8s_version: str) -> str:
    """v1.34.4 -> v0.34.4 (the staging modules' published tag)."""
    major_minor_patch = k8s_version.lstrip("v").split(".")
    if len(major_minor_patch) != 3 or major_minor_patch[0] != "1":
        raise ValueError(f"LAB_K8S_VERSION must look like v1.34.4, got {k8s_version!r}")
    return "v0." + ".".join(major_minor_patch[1:])
