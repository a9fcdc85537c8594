"""kwok runs the lab's simulated nodes: their status, heartbeats (leases) and kubelet API (logs, exec).

kwok gets node stages only: pods on lab nodes are played by the GPU twin (lab/twin), which decides what
each pod does on its node. One extra stage turns a node NotReady while the twin reports its container
runtime down (the annotation below), with the runtime's own error as the condition message.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lab import pki, processes
from lab.state import LabPaths

MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
RUNTIME_DOWN_ANNOTATION = "lab.gpu-conformance.io/runtime-down"

_CONDITIONS_OK = """
      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
"""

_INIT_TEMPLATE = _CONDITIONS_OK + """
      {{ $hasInternalIP := false }}
      {{ range .status.addresses }}{{ if eq .type "InternalIP" }}{{ $hasInternalIP = true }}{{ end }}{{ end }}
      {{ if not $hasInternalIP }}
      addresses:
      - address: {{ NodeIP | Quote }}
        type: InternalIP
      - address: {{ .metadata.name | Quote }}
        type: Hostname
      {{ end }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ NodePort }}
      phase: Running
"""

_DOWN_TEMPLATE = f"""
      {{{{ $now := Now }}}}
      conditions:
      - lastHeartbeatTime: {{{{ $now | Quote }}}}
        lastTransitionTime: {{{{ $now | Quote }}}}
        message: {{{{ index .metadata.annotations "{RUNTIME_DOWN_ANNOTATION}" | Quote }}}}
        reason: "KubeletNotReady"
        status: "False"
        type: "Ready"
"""

_READY_KEY = '.status.conditions.[] | select( .type == "Ready" ) | .status'
_DOWN_KEY = f'.metadata.annotations["{RUNTIME_DOWN_ANNOTATION}"]'


def _stage(name: str, selector: list[dict], template: str, delay_ms: int = 0) -> dict:
    spec: dict = {
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "selector": {"matchExpressions": selector},
        "next": {"statusTemplate": template},
    }
    if delay_ms:
        spec["delay"] = {"durationMilliseconds": delay_ms, "jitterDurationMilliseconds": delay_ms + 1000}
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def config_documents() -> list[dict]:
    return [
        _stage("node-initialize", [
            {"key": _READY_KEY, "operator": "NotIn", "values": ["True"]},
            {"key": _DOWN_KEY, "operator": "DoesNotExist"},
        ], _INIT_TEMPLATE),
        _stage("node-heartbeat", [
            {"key": ".status.phase", "operator": "In", "values": ["Running"]},
            {"key": _READY_KEY, "operator": "In", "values": ["True"]},
            {"key": _DOWN_KEY, "operator": "DoesNotExist"},
        # A kubelet reports an unchanged status every 5 minutes (nodeStatusReportFrequency); its lease, renewed
        # by kwok every 10 s, is what keeps the node Ready. A 20 s status heartbeat made 1000 lab nodes cost
        # the apiserver a third of a core doing nothing.
        ], _CONDITIONS_OK, delay_ms=300_000),
        _stage("node-runtime-down", [
            {"key": _DOWN_KEY, "operator": "Exists"},
            {"key": _READY_KEY, "operator": "In", "values": ["True"]},
        ], _DOWN_TEMPLATE),
        {
            # kubelet exec on lab pods runs on this machine (the host-access pod backend relies on it; the
            # commands it sends carry the node's host-view prefix themselves).
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterExec", "metadata": {"name": "lab-exec"},
            "spec": {"execs": [{"local": {"workDir": "/"}}]},
        },
    ]


def write_config(paths: LabPaths) -> Path:
    cfg = paths.root / "kwok.yaml"
    cfg.write_text(yaml.safe_dump_all(config_documents(), sort_keys=False))
    return cfg


def argv(bin_dir: Path, paths: LabPaths, ports: dict[str, int]) -> list[str]:
    return [
        str(bin_dir / "kwok"),
        f"--kubeconfig={paths.kubeconfig(pki.KWOK.stem)}",
        f"--config={write_config(paths)}",
        f"--manage-nodes-with-annotation-selector={MANAGED_ANNOTATION}=fake",
        "--node-ip=127.0.0.1", f"--node-port={ports['kubelet']}",
        f"--server-address=127.0.0.1:{ports['kubelet']}",
        f"--tls-cert-file={paths.pki / 'kubelet-serving.crt'}",
        f"--tls-private-key-file={paths.pki / 'kubelet-serving.key'}",
        "--node-lease-duration-seconds=40",
        "--enable-crds=Logs",
    ]


def start(bin_dir: Path, paths: LabPaths, ports: dict[str, int]) -> None:
    processes.start(paths, "kwok", argv(bin_dir, paths, ports))
