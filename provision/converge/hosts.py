"""Host convergers: Docker's nvidia runtime, host-driver readiness (and unsupported GPUs), the runc drop-in.

Each reads every GPU host, computes its changes, and applies them host by host. A host that cannot be
reached makes that node broken; the others go on.
"""

from __future__ import annotations

import posixpath

from provision import expect
from provision import labels as labels_mod
from provision.changes import (
    ChangedSincePlan,
    FileDelete,
    FileWrite,
    KeepBaseline,
    NodeLabels,
    UnitEnable,
    apply_node_labels,
    write_planned,
)
from provision.context import NoHostAccess, RunContext
from provision.engine import Change, ConvergeError, Result
from provision.hostfacts import DOCKER_DAEMON_JSON, containerd_facts, docker_config, has_docker, nvidia_smi_facts
from provision.hosts.results import HostUnreachable
from provision.observe import containerd as ctd
from provision.observe import docker_daemon
from provision.observe.docker_daemon import DaemonJsonError

DEPLOY_OPERANDS = ("driver", "container-toolkit", "device-plugin", "dcgm-exporter", "dcgm",
                   "gpu-feature-discovery", "operator-validator", "node-status-exporter", "mig-manager")
DEPLOY_PREFIX = labels_mod.DEPLOY_PREFIX
UNIT_NAME = "nvidia-host-driver-ready.service"
IS_ENABLED_ARGV = ("systemctl", "is-enabled", UNIT_NAME)   # also in the host gather (provision/hostfacts.py)
IS_ENABLED_TIMEOUT_S = 30.0
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
VALIDATIONS_DIR = "/run/nvidia/validations"
READY_FILE = f"{VALIDATIONS_DIR}/host-driver-ready"
UNIT_TEXT = f"""[Unit]
Description=Mark the host NVIDIA driver ready for the GPU Operator (driver.enabled=false)
Documentation=https://github.com/NVIDIA/gpu-operator
After=systemd-modules-load.service
ConditionPathExists=/dev/nvidiactl

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mkdir -p /run/nvidia/validations
ExecStart=/usr/bin/touch {READY_FILE}

[Install]
WantedBy=multi-user.target
"""
RUNC_DROPIN = "00-k8s-runc.toml"
# The original playbooks' runc drop-in, tried with the real programs (containerd 1.7.35, 2.1.9, 2.3.7; toolkit
# v1.19.0, v1.20.0; docs/containerd.md): it never kept runc that the toolkit's drop-in dropped (on 1.x the later
# 99-nvidia.toml replaces its CRI table; on 2.x and with RUNTIME_CONFIG_SOURCE=file runc is there without it),
# and loaded after the drop-in it drops nvidia. So the suite does not install it; a node's existing one is left.
RUNC_DROPIN_HELPS = False
RUNC_DROPIN_NOTE = (f"{RUNC_DROPIN} is not installed: with the real containerd it never kept runc that the "
                    "toolkit's drop-in dropped (docs/containerd.md); RUNTIME_CONFIG_SOURCE=file is the fix")
# The original playbooks' runc drop-in (original-playbooks.md, 9): in /etc/containerd/conf.d, which k8s-snap's
# containerd reads through the import the toolkit added for its own drop-in there, after the snap's conf.d: read
# after the suite's 99-nvidia.toml it replaces the CRI table (containerd 1.x) and drops nvidia.
PLAYBOOK_RUNC_DROPIN = f"/etc/containerd/conf.d/{RUNC_DROPIN}"


def _each_host(ctx: RunContext, result: Result):
    """(node, host) for every GPU node whose host answers; the others are recorded as broken."""
    for node in ctx.gpu_nodes:
        try:
            yield node, ctx.host(node)
        except NoHostAccess as exc:
            result.skip_host_off(node, exc)
        except HostUnreachable as exc:
            result.node_errors[node] = str(exc)


def _write(ctx: RunContext, node: str, w: FileWrite) -> str | None:
    """Apply one planned file write on the node (recorded for --rollback, backed up), then its `after` commands
    when the file changed; the node's error, or None."""
    host = ctx.host(node)
    rec = ctx.host_record(node)
    try:
        written = write_planned(host, w, record=lambda: rec.file_changed(w.path, w.before))
    except ChangedSincePlan as exc:
        return str(exc)
    rec.backup_made(written.backup_path)
    for argv in w.after if written.changed else ():
        res = host.run(list(argv), timeout=120, mutates=True)
        if not res.ok:
            return f"{' '.join(argv)} failed on {node}: {res.stderr.strip() or res.stdout.strip()}"
    return None


class DockerRuntime:
    """runtimes.nvidia merged into /etc/docker/daemon.json on hosts that run Docker, only where it is missing or
    broken (a working entry, absolute path or nvidia-ctk's ``args`` included, is left alone); Docker restarted
    only when the file changed. An unparsable daemon.json is an error naming the file, never overwritten."""

    name = "docker-runtime"
    depends: tuple[str, ...] = ("runc-dropin",)  # which keeps the hosts' baseline before any host change

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        changes = []
        for node, host in _each_host(ctx, result):
            if not has_docker(host):
                result.node_skips[node] = "Docker is not installed on this host (not applicable)"
                continue
            try:
                text, cfg = docker_config(host)
            except DaemonJsonError as exc:
                result.node_failures[node] = (f"{exc}; fix the JSON by hand (the suite never overwrites a file it "
                                              "cannot parse), then run again")
                continue
            before = cfg or {}
            after = docker_daemon.merge_nvidia_runtime(before)
            lines = docker_daemon.diff(before, after)
            if not lines and set(before) <= {"runtimes", "default-runtime"}:
                result.keep(f"{DOCKER_DAEMON_JSON} on {node}: has the nvidia runtime and nothing else (the "
                            "playbooks write it whole; Docker settings it replaced cannot be recovered from it): "
                            "left alone", node)
            if lines:
                write = FileWrite(DOCKER_DAEMON_JSON, docker_daemon.render(after, like=text), before=text,
                                  after=(("systemctl", "restart", "docker"),))
                changes.append(Change(self.name, node, f"{DOCKER_DAEMON_JSON} on {node}", "update",
                                      "; ".join(lines) + "; then restart docker", write))
        return changes

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        for ch in changes:
            assert ch.node and isinstance(ch.payload, FileWrite)
            err = _write(ctx, ch.node, ch.payload)
            if err:
                result.node_errors[ch.node] = err


class HostDriver:
    """Host drivers (driver.enabled=false): the boot-time unit that recreates host-driver-ready on tmpfs,
    enabled and run; GPUs below the minimum compute capability get every deploy label =false and are
    reported unsupported; stale =false labels are cleared on supported nodes."""

    name = "host-driver"
    depends: tuple[str, ...] = ("runc-dropin",)  # which keeps the hosts' baseline before any host change

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        changes = []
        nodes = ctx.kube.snapshot().nodes
        for node, host in _each_host(ctx, result):
            smi = nvidia_smi_facts(host)
            if not smi.usable:
                # The host answered and its GPUs/driver are not usable: a finding about the node (failed).
                why = (f"{smi.finding.message.rstrip('.')}. Fix: {smi.finding.remediation}" if smi.finding
                       else smi.parse_error)
                result.node_failures[node] = f"nvidia-smi on {node}: {why}"
                continue
            labels = (nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
            lowest = expect.unsupported_capability(ctx, smi)
            if lowest:
                result.node_skips[node] = (f"unsupported: compute capability {lowest} is below "
                                           f"{ctx.settings.min_compute_capability} (GPU Operator requirement)")
                want = {DEPLOY_PREFIX + o: "false" for o in DEPLOY_OPERANDS}
                patch = {k: v for k, v in want.items() if labels.get(k) != v}
                if patch:
                    changes.append(Change(self.name, node, f"node {node} labels", "label",
                                          ", ".join(f"{k}={v}" for k, v in sorted(patch.items())),
                                          NodeLabels(dict(sorted(patch.items())))))
                continue
            stale = sorted(k for k, v in labels.items() if k.startswith(DEPLOY_PREFIX) and v == "false")
            if stale:
                changes.append(Change(self.name, node, f"node {node} labels", "label",
                                      "clear stale " + ", ".join(stale), NodeLabels(dict.fromkeys(stale))))
            for other in sorted(set(host.glob("/etc/systemd/system/*.service")) - {UNIT_PATH}):
                if READY_FILE in (host.read_text(other) or ""):
                    result.keep(f"{other} on {node}: another installer's unit for {READY_FILE} (the playbooks'); "
                                f"left alone beside the suite's {UNIT_NAME}, --rollback keeps it", node)
            unit = host.read_text(UNIT_PATH)
            if unit != UNIT_TEXT:
                changes.append(Change(self.name, node, f"{UNIT_PATH} on {node}", "create" if unit is None else "update",
                                      "oneshot unit recreating " + READY_FILE,
                                      FileWrite(UNIT_PATH, UNIT_TEXT, before=unit, after=(("systemctl", "daemon-reload"),))))
            enabled = host.run(list(IS_ENABLED_ARGV), timeout=IS_ENABLED_TIMEOUT_S).stdout.strip() == "enabled"
            if not enabled or not host.exists(READY_FILE):
                changes.append(Change(self.name, node, f"{UNIT_NAME} on {node}", "restart",
                                      "systemctl enable --now (creates " + READY_FILE + ")", UnitEnable(UNIT_NAME)))
        return changes

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        for ch in changes:
            assert ch.node
            p = ch.payload
            if isinstance(p, NodeLabels):
                apply_node_labels(ctx, ch.node, p)
            elif isinstance(p, FileWrite):
                err = _write(ctx, ch.node, p)
                if err:
                    result.node_errors[ch.node] = err
            elif isinstance(p, UnitEnable):
                ctx.host_record(ch.node).unit_enabled(p.unit)
                res = ctx.host(ch.node).run(["systemctl", "enable", "--now", p.unit], timeout=120, mutates=True)
                if not res.ok:
                    result.node_errors[ch.node] = f"{p.unit} failed on {ch.node}: {res.stderr or res.stdout}"
            else:
                raise ConvergeError(f"{self.name}: no way to apply {ch.line()} ({type(p).__name__})")


class RuncDropIn:
    """The runc drop-in (k8s-snap workaround) in the directory the node's containerd really imports,
    before anything can restart containerd. Also keeps a baseline copy of containerd's files (once) so a
    failed containerd restart can be reverted exactly."""

    name = "runc-dropin"
    depends: tuple[str, ...] = ("distribution",)   # --provision stops there on a distribution it does not change

    def plan(self, ctx: RunContext, result: Result) -> list[Change]:
        changes = []
        if not RUNC_DROPIN_HELPS and RUNC_DROPIN_NOTE not in result.notes:
            result.notes.append(RUNC_DROPIN_NOTE)
        for node, host in _each_host(ctx, result):
            facts = containerd_facts(host)
            if facts.error:
                result.node_errors[node] = facts.error
                continue
            assert facts.effective is not None
            if RUNC_DROPIN_HELPS:
                path = posixpath.join(facts.conf_d, RUNC_DROPIN)
                want = ctd.render_runc_dropin(facts.effective.version)
                have = host.read_text(path)
                if have != want:
                    changes.append(Change(self.name, node, f"{path} on {node}", "create" if have is None else "update",
                                          "re-declare runc (default runtime) for containerd's CRI plugin",
                                          FileWrite(path, want, before=have)))
            if facts.conf_d != posixpath.dirname(PLAYBOOK_RUNC_DROPIN) and host.exists(PLAYBOOK_RUNC_DROPIN):
                changes.append(Change(self.name, node, f"{PLAYBOOK_RUNC_DROPIN} on {node}", "delete",
                                      "the playbooks' runc drop-in: read after the toolkit's drop-in it replaces the "
                                      "CRI table and drops nvidia (its content kept in the record: --rollback puts "
                                      "it back)", FileDelete(PLAYBOOK_RUNC_DROPIN)))
            if not ctx.host_record(node).state().get("containerd_baseline"):
                changes.append(Change(self.name, node, f"containerd baseline on {node}", "create",
                                      "keep a copy of containerd's config files for an exact revert", KeepBaseline()))
        return changes

    def apply(self, ctx: RunContext, changes: list[Change], result: Result) -> None:
        # The baseline is kept before anything on the host changes.
        for ch in sorted(changes, key=lambda c: not isinstance(c.payload, KeepBaseline)):
            assert ch.node
            host = ctx.host(ch.node)
            rec = ctx.host_record(ch.node)
            p = ch.payload
            if isinstance(p, KeepBaseline):
                facts = containerd_facts(host)
                if facts.effective is None:
                    raise ConvergeError(f"containerd config on {ch.node}: {facts.error}")
                rec.set_state("containerd_baseline", dict(facts.files.items()))
                rec.set_state("validations_baseline", host.glob(VALIDATIONS_DIR + "/*"))
            elif isinstance(p, FileDelete):
                rec.file_changed(p.path, host.read_text(p.path))
                rec.backup_made(host.remove(p.path).backup_path)
            elif isinstance(p, FileWrite):
                err = _write(ctx, ch.node, p)
                if err:
                    result.node_errors[ch.node] = err
            else:
                raise ConvergeError(f"{self.name}: no way to apply {ch.line()} ({type(p).__name__})")
