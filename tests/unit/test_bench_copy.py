"""bench/run.py copy_host_view (--hosts-by-copy): a host view's files go to another node's view with the node's
name replaced, and each view's own parts (the twin's node record, the shims) stay as they were."""

from __future__ import annotations

import os
from pathlib import Path

from bench.run import copy_host_view, host_view_changes


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(mode)


def test_files_are_copied_with_the_name_replaced_and_own_parts_kept(tmp_path: Path) -> None:
    src, dst = tmp_path / "gpu-0000", tmp_path / "gpu-0001"
    _write(src, "snap/k8s/current/bin/containerd", "seeded binary", 0o755)
    _write(src, ".twin/seeded", "1\n")
    os.utime(src / "snap/k8s/current/bin/containerd", (1, 1))      # seeded before the marker: never copied
    _write(src, "etc/systemd/system/nvidia-host-driver-ready.service", "[Unit]\n")
    _write(src, "var/lib/gpu-node-conformance/record.json", '{"host": "gpu-0000"}', 0o600)
    _write(src, ".twin/node.json", '{"name": "gpu-0000"}')
    _write(src, "usr/bin/nvidia-smi", "#!/bin/sh\n# gpu-0000\n", 0o755)
    _write(dst, ".twin/node.json", '{"name": "gpu-0001"}')
    _write(dst, "usr/bin/nvidia-smi", "#!/bin/sh\n# gpu-0001\n", 0o755)
    _write(dst, "var/lib/gpu-node-conformance/record.json", "{}")

    assert copy_host_view(host_view_changes(src), "gpu-0000", dst, "gpu-0001") == 2
    assert not (dst / "snap").exists()
    assert (dst / "etc/systemd/system/nvidia-host-driver-ready.service").read_text() == "[Unit]\n"
    record = dst / "var/lib/gpu-node-conformance/record.json"
    assert record.read_text() == '{"host": "gpu-0001"}' and record.stat().st_mode & 0o777 == 0o600
    assert (dst / ".twin/node.json").read_text() == '{"name": "gpu-0001"}'
    assert (dst / "usr/bin/nvidia-smi").read_text().endswith("gpu-0001\n")
    assert not list(dst.rglob("*.bench-copy"))


def test_a_long_running_request_is_counted_once_not_once_per_audit_stage():
    """The lab's audit log has a pods/proxy request twice (ResponseStarted, ResponseComplete): one request."""
    import json

    from bench.run import suite_requests

    def event(audit_id: str, stage: str, user: str = "suite", sub: str = "proxy") -> bytes:
        return json.dumps({"auditID": audit_id, "stage": stage, "verb": "get", "user": {"username": user},
                           "requestReceivedTimestamp": "2026-12-01T10:00:00.5Z",
                           "objectRef": {"resource": "pods", "subresource": sub}}).encode()

    lines = [event("a", "ResponseStarted"), event("a", "ResponseComplete"), event("b", "ResponseComplete"),
             event("c", "ResponseComplete", user="someone-else")]
    start = 1796119200.0  # 2026-12-01T10:00:00Z
    assert suite_requests(lines, "suite", start, start + 1) == {"get pods/proxy": 2}
    assert suite_requests(lines, "suite", start + 1, start + 2) == {}
