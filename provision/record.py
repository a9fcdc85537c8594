"""The change record: what the suite changed and how to undo it, kept where the change was made.

Cluster changes go into the ConfigMap `gpu-node-conformance-record` in the suite's namespace (written with
optimistic concurrency); host changes into /var/lib/gpu-node-conformance/record.json on each host
(written atomically through the host layer). An entry is written BEFORE its change is made, with the
state from before: an interrupted run (Ctrl-C) leaves a record that rollback can still replay, because
restoring a "before" that was never changed is a no-op. `--rollback` replays entries newest first and
removes nothing the suite did not create.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from provision.kube import MANAGED_BY, SUITE, Kube

RECORD_CONFIGMAP = "gpu-node-conformance-record"
HOST_RECORD = "/var/lib/gpu-node-conformance/record.json"
HOST_STATE = "/var/lib/gpu-node-conformance/state.json"
BACKUP_DIR = "/var/lib/gpu-node-conformance/backup"


@dataclass(frozen=True)
class Entry:
    kind: str              # helm-release | configmap | clusterpolicy-field | node-label | namespace | crd
    target: str            # what it names (e.g. "gpu-operator/time-slicing-config")
    before: Any            # state before the change (None = did not exist)
    at: float

    def to_json(self) -> dict:
        return {"kind": self.kind, "target": self.target, "before": self.before, "at": self.at}


class ClusterRecord:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.ns = kube.settings.suite_namespace

    def _ensure_namespace(self) -> bool:
        """The suite's namespace (it holds the record); True when this call created it."""
        try:
            self.kube.core.read_namespace(self.ns, _request_timeout=self.kube.timeout)
            return False
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.kube.guarded(f"create Namespace {self.ns}", self.kube.core.create_namespace,
                          {"metadata": {"name": self.ns, "labels": {MANAGED_BY: SUITE}}})
        return True

    def _read(self) -> dict:
        try:
            return self.kube.core.read_namespaced_config_map(RECORD_CONFIGMAP, self.ns,
                                                            _request_timeout=self.kube.timeout).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise

    def entries(self) -> list[dict]:
        cm = self._read()
        return json.loads(((cm.get("data") or {}).get("entries")) or "[]")

    def add(self, kind: str, target: str, before: Any) -> None:
        """Record a change about to be made (first record wins: 'before' is the oldest known state)."""
        created_ns = self._ensure_namespace()
        entry = Entry(kind, target, before, time.time()).to_json()
        cm = self._read()
        if not cm:
            first = [Entry("namespace", self.ns, None, entry["at"] - 0.001).to_json()] if created_ns else []
            body = {"metadata": {"name": RECORD_CONFIGMAP, "labels": {MANAGED_BY: SUITE}},
                    "data": {"entries": json.dumps([*first, entry])}}
            try:
                self.kube.guarded(f"create ConfigMap {self.ns}/{RECORD_CONFIGMAP}",
                                  self.kube.core.create_namespaced_config_map, self.ns, body)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise

        def mutate(obj: dict) -> dict | None:
            entries = json.loads((obj.get("data") or {}).get("entries") or "[]")
            if any(e["kind"] == kind and e["target"] == target for e in entries):
                return None
            entries.append(entry)
            obj.setdefault("data", {})["entries"] = json.dumps(entries)
            return obj

        self.kube.update_with_retry(
            f"update ConfigMap {self.ns}/{RECORD_CONFIGMAP}",
            lambda: json.loads(self.kube.core.read_namespaced_config_map(
                RECORD_CONFIGMAP, self.ns, _preload_content=False).data),
            mutate,
            lambda body: self.kube.core.replace_namespaced_config_map(RECORD_CONFIGMAP, self.ns, body))

    def clear(self) -> None:
        try:
            self.kube.guarded(f"delete ConfigMap {self.ns}/{RECORD_CONFIGMAP}",
                              self.kube.core.delete_namespaced_config_map, RECORD_CONFIGMAP, self.ns)
        except ApiException as exc:
            if exc.status != 404:
                raise


class HostRecord:
    """Per-host record of file changes: {"files": {path: {"backup": path|None, "created": bool}},
    "units": [names enabled by the suite]}."""

    def __init__(self, host) -> None:  # host: provision.hosts.access.HostAccess
        self.host = host

    def read(self) -> dict:
        text = self.host.read_text(HOST_RECORD)
        return json.loads(text) if text else {"files": {}, "units": []}

    def _write(self, data: dict) -> None:
        self.host.write_text(HOST_RECORD, json.dumps(data, indent=2, sort_keys=True) + "\n", backup=False)

    def file_changed(self, path: str, before: str | None) -> None:
        """Before changing `path`: keep its previous content (once) so rollback can restore it exactly."""
        data = self.read()
        if path in data["files"]:
            return
        entry: dict[str, Any] = {"created": before is None, "backup": None}
        if before is not None:
            backup = f"{BACKUP_DIR}{path}.orig"
            self.host.write_text(backup, before, backup=False)
            entry["backup"] = backup
        data["files"][path] = entry
        self._write(data)

    def backup_made(self, backup_path: str | None) -> None:
        """A `.bak.<time>` copy the host layer made when the suite rewrote a file (removed by rollback,
        which restores the original from the record's own copy)."""
        if not backup_path:
            return
        data = self.read()
        data.setdefault("backups", [])
        if backup_path not in data["backups"]:
            data["backups"].append(backup_path)
            self._write(data)

    def unit_enabled(self, unit: str) -> None:
        data = self.read()
        if unit not in data["units"]:
            data["units"].append(unit)
            self._write(data)

    def state(self) -> dict:
        text = self.host.read_text(HOST_STATE)
        return json.loads(text) if text else {}

    def set_state(self, key: str, value: Any) -> None:
        data = self.state()
        if data.get(key) == value:
            return
        data[key] = value
        self.host.write_text(HOST_STATE, json.dumps(data, indent=2, sort_keys=True) + "\n", backup=False)
