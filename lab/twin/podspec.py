"""Read a pod spec the way the pod's containers see it: their environment, which host path a path inside a
container is, which ConfigMap is mounted where. The twin decides what an operand does only from this (the
DaemonSet the real operator rendered), never from the ClusterPolicy or from the suite."""

from __future__ import annotations

import posixpath


def container(pod: dict, name: str | None = None, init: bool = False) -> dict:
    """The named container (or the first one) of the pod; {} when there is none."""
    spec = pod.get("spec") or {}
    ctrs = spec.get("initContainers" if init else "containers") or []
    if name is None:
        return ctrs[0] if ctrs else {}
    return next((c for c in ctrs if c.get("name") == name), {})


def env(pod: dict, ctr: dict) -> dict[str, str]:
    """The container's environment: literal values, and the pod fields a fieldRef names."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    fields = {"metadata.namespace": md.get("namespace", ""), "metadata.name": md.get("name", ""),
              "spec.nodeName": spec.get("nodeName", ""), "status.hostIP": "127.0.0.1"}
    out: dict[str, str] = {}
    for e in ctr.get("env") or []:
        ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if ref is not None:
            out[e["name"]] = fields.get(ref, "")
        elif "value" in e:
            out[e["name"]] = str(e["value"])
    return out


def host_mounts(pod: dict, ctr: dict) -> dict[str, str]:
    """The container's hostPath mounts: container path -> host path (subPath applied)."""
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    out: dict[str, str] = {}
    for m in ctr.get("volumeMounts") or []:
        hp = (volumes.get(m.get("name", ""), {}).get("hostPath") or {}).get("path")
        if hp is not None:
            out[m["mountPath"]] = posixpath.join(hp, m["subPath"]) if m.get("subPath") else hp
    return out


def configmap_at(pod: dict, ctr: dict, mount_path: str) -> str | None:
    """The name of the ConfigMap mounted at mount_path in the container, if any."""
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    for m in ctr.get("volumeMounts") or []:
        if m.get("mountPath", "").rstrip("/") == mount_path.rstrip("/"):
            cm = volumes.get(m.get("name", ""), {}).get("configMap")
            if cm:
                return cm.get("name")
    return None


def image_tag(ctr: dict) -> str:
    image = ctr.get("image", "")
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[-1] if ":" in last else ""
