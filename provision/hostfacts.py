"""Observations of one GPU host, read through the host layer and handed to the pure parsers in observe/.

The node's containerd is worked out from the node itself: the snap's base dir from
/var/snap/k8s/common/lock/.containerd-base-dir, the root config under it, and the directories its
`imports` actually glob over; never from a fixed path.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from provision.hosts.access import HostAccess
from provision.observe import containerd as ctd
from provision.observe import containerd_dump as containerd_dump_mod
from provision.observe import distribution as dist
from provision.observe import docker_daemon, nvidia_smi

BASE_DIR_FILE = "/var/snap/k8s/common/lock/.containerd-base-dir"
DEFAULT_BASE_DIR = "/var/lib/k8s-containerd"
SNAP_LAYOUT = "k8s-containerd"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"


@dataclass(frozen=True)
class SmiFacts:
    rc: int
    stdout: str
    stderr: str
    gpus: tuple[nvidia_smi.Gpu, ...] = ()
    finding: nvidia_smi.SmiFinding | None = None
    parse_error: str | None = None

    @property
    def usable(self) -> bool:
        return self.parse_error is None and (self.finding is None or self.finding.output_usable)


def nvidia_smi_facts(host: HostAccess) -> SmiFacts:
    res = host.run(nvidia_smi.query_argv(), timeout=60)
    finding = nvidia_smi.classify_failure(res.rc, res.stdout, res.stderr)
    if finding is not None and not finding.output_usable:
        return SmiFacts(res.rc, res.stdout, res.stderr, (), finding)
    try:
        gpus = tuple(nvidia_smi.parse_query_csv(res.stdout))
    except nvidia_smi.NvidiaSmiParseError as exc:
        return SmiFacts(res.rc, res.stdout, res.stderr, (), finding, str(exc))
    return SmiFacts(res.rc, res.stdout, res.stderr, gpus, finding)


@dataclass(frozen=True)
class ContainerdFacts:
    base_dir: str
    root_path: str
    socket: str
    files: dict[str, str] = field(default_factory=dict)    # every config file read: path -> text
    import_dirs: tuple[str, ...] = ()
    effective: ctd.EffectiveConfig | None = None
    error: str | None = None                              # a file that did not parse, or no root config
    distribution: str = dist.K8S_SNAP                     # whose layout the files were read with
    binary: str = ""                                      # that distribution's containerd binary

    @property
    def conf_d(self) -> str:
        """The drop-in directory containerd imports (the distribution's own conf.d first)."""
        if self.distribution == dist.K8S_SNAP:
            own = posixpath.join(self.base_dir, SNAP_LAYOUT, "etc/containerd/conf.d")
        else:
            own = dist.layout(self.distribution).conf_d
        if own in self.import_dirs or not self.import_dirs:
            return own
        return self.import_dirs[0]

    def dropins(self) -> list[str]:
        return sorted(p for p in self.files if p != self.root_path)


def containerd_facts(host: HostAccess, layout: dist.Layout | None = None) -> ContainerdFacts:
    """containerd's config files as the node's distribution lays them out (``layout``: provision/distribution.py
    from the node object; None: k8s-snap's when the host has it, else the distribution the host's files show)."""
    if layout is None:
        found = dist.detect_host(host.exists)
        if found.name not in (None, dist.K8S_SNAP):
            layout = dist.layout(found.name)
    if layout is None or layout.distribution == dist.K8S_SNAP:
        base = (host.read_text(BASE_DIR_FILE) or "").strip() or DEFAULT_BASE_DIR
        root = posixpath.join(base, SNAP_LAYOUT, "etc/containerd/config.toml")
        socket = posixpath.join(base, SNAP_LAYOUT, "run/containerd/containerd.sock")
        where = f"(base dir {base} from {BASE_DIR_FILE})"
        name, binary = dist.K8S_SNAP, SNAP_CONTAINERD
    else:
        base, root, socket, name, binary = "", layout.root_config, layout.socket, layout.distribution, layout.binary
        where = f"({name}'s containerd config)"
    root_text = host.read_text(root)
    if root_text is None:
        return ContainerdFacts(base, root, socket, error=f"containerd's config {root} does not exist on the host "
                               f"{where}", distribution=name, binary=binary)
    files = {root: root_text}
    try:
        dirs = tuple(ctd.import_dirs(root_text, root))
    except ctd.ContainerdConfigError as exc:
        return ContainerdFacts(base, root, socket, files, error=str(exc), distribution=name, binary=binary)
    for d in dirs:
        for path in host.glob(posixpath.join(d, "*.toml")):
            text = host.read_text(path)
            if text is not None:
                files[path] = text
    try:
        eff = ctd.resolve(root, files)
    except ctd.ContainerdConfigError as exc:
        return ContainerdFacts(base, root, socket, files, dirs, error=str(exc), distribution=name, binary=binary)
    return ContainerdFacts(base, root, socket, files, dirs, eff, distribution=name, binary=binary)


def has_docker(host: HostAccess) -> bool:
    """Docker runs beside Kubernetes on this host (DGX Spark style): its daemon or its config is there."""
    return host.exists(DOCKER_DAEMON_JSON) or host.exists("/usr/bin/dockerd")


def docker_config(host: HostAccess) -> tuple[str | None, dict | None]:
    """(text, parsed) of daemon.json; parsed None when absent. Raises DaemonJsonError when unparsable."""
    text = host.read_text(DOCKER_DAEMON_JSON)
    if text is None:
        return None, None
    return text, docker_daemon.parse(text, DOCKER_DAEMON_JSON)


# ------------------------------------------------------------------------------------------------ GPU health
# One host round trip per node for every health check: nvidia-smi -q -x, the NVIDIA devices on the PCI bus, the
# host's clock, the kernel log's NVRM lines of the window, and whether nvidia-persistenced runs. Each part ends
# with a marker line carrying its exit status, so one part failing (no lspci, dmesg refused) never hides the others.
MARK = "@@gpu-conformance:"
_HEALTH_SCRIPT = r"""
m() { printf '\n@@gpu-conformance:%s rc=%s\n' "$1" "$2"; }
nvidia-smi -q -x 2>&1; m smi $?
if command -v lspci >/dev/null 2>&1; then lspci -n -D -d 10de: 2>&1; m lspci $?
else for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] &&
    printf '%s %s: 10de:%s\n' "${d##*/}" "$(cut -c3-6 "$d/class")" "$(cut -c3- "$d/device")"
done; m sysfs 0; fi
now=$(date -u +%s); echo "$now"; m now $?
cat /proc/uptime 2>&1; m uptime $?
kl() { grep -E 'NVRM: (Xid|The NVIDIA GPU|.*fallen off the bus)'; }
if [ -n "$(journalctl -k -b -n 1 -q --no-pager 2>/dev/null)" ]; then
  journalctl -k -q --no-pager -o short-iso --since "@$((now - $1))" 2>/dev/null | kl; m journalctl 0
elif dmesg --time-format iso >/dev/null 2>&1; then dmesg --time-format iso | kl; m dmesg-iso 0
elif dmesg >/dev/null 2>&1; then dmesg | kl; m dmesg 0
else dmesg 2>&1 | head -n 3; m kernel-log 1; fi
# the kernel keeps 15 characters of a process name: pgrep -x nvidia-persistenced never matches (seen on an H200)
if pgrep -x nvidia-persiste >/dev/null 2>&1 || [ -S /var/run/nvidia-persistenced/socket ]; then echo running
else echo "not running"; fi; m persistenced 0
"""


@dataclass(frozen=True)
class HealthRead:
    """The parts of the health script's output: name -> (exit status, text)."""

    parts: dict[str, tuple[int, str]]
    raw: str

    def part(self, *names: str) -> tuple[str, int, str] | None:
        for name in names:
            if name in self.parts:
                rc, text = self.parts[name]
                return name, rc, text
        return None


def split_health_output(text: str) -> HealthRead:
    parts: dict[str, tuple[int, str]] = {}
    buf: list[str] = []
    for line in text.splitlines():
        if line.startswith(MARK):
            name, _, rc = line[len(MARK):].partition(" rc=")
            parts[name.strip()] = (int(rc) if rc.strip().lstrip("-").isdigit() else 1, "\n".join(buf).strip("\n"))
            buf = []
        else:
            buf.append(line)
    return HealthRead(parts, text)


def health_read(host: HostAccess, window_s: float) -> HealthRead:
    res = host.run(["sh", "-c", _HEALTH_SCRIPT, "sh", str(int(window_s))], timeout=120)
    read = split_health_output(res.stdout)
    if "smi" not in read.parts:  # the script did not get as far as its first marker
        read.parts["smi"] = (res.rc or 1, (res.stdout + res.stderr).strip())
    return read

SNAP_CONTAINERD = "/snap/k8s/current/bin/containerd"
VANILLA_CONTAINERD = "/usr/bin/containerd"
DUMP_TIMEOUT_S = 30


def containerd_dump(host: HostAccess, facts: ContainerdFacts) -> containerd_dump_mod.Dump:
    """Ask the node's own containerd for its effective config: ``<bin> --config <root config> config dump``.

    The k8s snap's binary when the host has it (the root config from the lock file, as containerd_facts found
    it), else a vanilla ``/usr/bin/containerd`` with its ``/etc/containerd/config.toml`` - but never Docker's
    containerd for the snap's config. A host folder (exec mode ``path``, the lab) runs the binary inside a
    chroot of the folder, as the host itself would (needs root). Read-only: ``config dump`` changes nothing.
    """
    key = (host.name, str(host.spec.root), tuple(sorted(facts.files.items())))
    cached = _DUMPS.get(key)
    if cached is not None:
        return cached
    dump = _containerd_dump(host, facts)
    if len(_DUMPS) > 4096:
        _DUMPS.clear()
    _DUMPS[key] = dump
    return dump


# containerd's dump depends only on its files (and binary): one run per host and set of files per process
_DUMPS: dict[tuple, containerd_dump_mod.Dump] = {}


def _containerd_dump(host: HostAccess, facts: ContainerdFacts) -> containerd_dump_mod.Dump:
    if facts.distribution != dist.K8S_SNAP:
        # the distribution's own containerd with its own root config (k3s/RKE2/MicroK8s bundle theirs)
        if not host.exists(facts.binary):
            return containerd_dump_mod.Dump(ran=False, why=f"no containerd binary at {facts.binary} ({facts.distribution})")
        binary, config = facts.binary, facts.root_path
    elif host.exists(SNAP_CONTAINERD):
        binary, config = SNAP_CONTAINERD, facts.root_path
    elif not host.exists(BASE_DIR_FILE) and host.exists(VANILLA_CONTAINERD):
        binary, config = VANILLA_CONTAINERD, "/etc/containerd/config.toml"
    else:
        return containerd_dump_mod.Dump(ran=False, why=f"no containerd binary at {SNAP_CONTAINERD}")
    return _run_dump(host, binary, config)


def _run_dump(host: HostAccess, binary: str, config: str) -> containerd_dump_mod.Dump:
    argv = [binary, "--config", config, "config", "dump"]
    if host.spec.exec_mode == "path" and host.spec.root not in (None, "/"):
        argv = ["chroot", str(host.spec.root), *argv]
    res = host.run(argv, timeout=DUMP_TIMEOUT_S)
    if res.timed_out:
        return containerd_dump_mod.Dump(ran=False, argv=tuple(argv), why=f"timed out after {DUMP_TIMEOUT_S}s")
    if res.rc in (125, 126, 127) or (res.rc != 0 and "chroot:" in res.stderr):
        why = (res.stderr.strip().splitlines() or [f"exit {res.rc}"])[-1]
        return containerd_dump_mod.Dump(ran=False, argv=tuple(argv), rc=res.rc, stderr=res.stderr, why=why)
    return containerd_dump_mod.Dump(ran=True, argv=tuple(argv), rc=res.rc, stdout=res.stdout, stderr=res.stderr)


# ------------------------------------------------------------------------------------------ one round trip
def gather_plan(spec, health_window_s: float):
    """What one gather reads on a node (provision/hosts/gather.py): everything the read-only host checks and
    the health checks above ask the host, so that an audit costs one round trip per node. What the plan does not
    cover (an `imports` glob outside the folders listed here, say) is still read from the host, one call each."""
    from provision.converge.hosts import IS_ENABLED_ARGV, IS_ENABLED_TIMEOUT_S
    from provision.hosts.gather import ContainerdSpec, DirSpec, GatherPlan
    from provision.observe.runtime_mode import CDI_SPEC_DIRS
    from provision.record import HOST_RECORD, HOST_STATE

    chroot = str(spec.root) if spec.exec_mode == "path" and spec.root not in (None, "/") else ""
    return GatherPlan(
        files=(BASE_DIR_FILE, DOCKER_DAEMON_JSON, HOST_RECORD, HOST_STATE),
        probes=(SNAP_CONTAINERD, VANILLA_CONTAINERD, "/usr/bin/dockerd"),
        dirs=(DirSpec("/etc/containerd", 2, "*.toml"), DirSpec("/etc/systemd/system", 1, "*.service"),
              DirSpec("/run/nvidia/validations", 1, "-"),
              # CDI spec files (runtime modes cdi / nri, provision/checks.py runtime_mode_needs)
              *(DirSpec(d, 1, "*") for d in CDI_SPEC_DIRS)),
        commands=((tuple(nvidia_smi.query_argv()), 60.0),
                  (("sh", "-c", _HEALTH_SCRIPT, "sh", str(int(health_window_s))), 120.0),
                  (IS_ENABLED_ARGV, IS_ENABLED_TIMEOUT_S)),
        containerd=ContainerdSpec(BASE_DIR_FILE, DEFAULT_BASE_DIR, SNAP_LAYOUT, SNAP_CONTAINERD, VANILLA_CONTAINERD,
                                  chroot=chroot, timeout=DUMP_TIMEOUT_S, depth=2, read="*.toml"),
    )


def cdi_spec_files(host: HostAccess, dirs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The CDI spec files (*.yaml, *.json) in the given directories of the host: path -> text (issue 16)."""
    out: dict[str, str] = {}
    for folder in dict.fromkeys(dirs):
        for pattern in ("*.yaml", "*.json"):
            for path in host.glob(posixpath.join(folder, pattern)):
                text = host.read_text(path)
                if text is not None:
                    out[path] = text
    return out
