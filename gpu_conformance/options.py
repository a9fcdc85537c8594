"""The suite's command-line options, declared once: flag, ini key, setting, validator, help.

Each option's value reaches the run through one validated Settings (provision/settings.py): defaults <
[tool.gpu-conformance] in pyproject.toml (the option's ini key) < the command line. `parse` turns the
command-line text into the setting's raw value (validate() then checks it); a bad value is a usage error that
says what is wrong. Options owned by pytest-testinfra are listed too (owner): the suite reads them, testinfra
declares them, and reading one that is not declared is an error naming the missing plugin.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GROUP = "gpu-conformance"
TESTINFRA = "pytest-testinfra"
MODES = ("provision", "plan", "rollback")


def kv(text: str | None, what: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'}; anything else is a usage error naming the option."""
    out: dict[str, str] = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise pytest.UsageError(f"{what}: expected name=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _counts(text: str) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in kv(text, "--expected-gpus").items()}
    except ValueError as exc:
        raise pytest.UsageError(f"--expected-gpus: counts must be integers ({exc})") from exc


def _seconds(text: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in kv(text, "--timeouts").items()}
    except ValueError as exc:
        raise pytest.UsageError(f"--timeouts: values are seconds ({exc})") from exc


def _profiles(values: list[str]) -> dict[str, str]:
    return dict(p.rsplit("=", 1) for p in values if "=" in p)


def _sharing_profiles(values: list[str]) -> dict[str, dict]:
    """'PRODUCT=replicas[,rename][,mps]' -> {PRODUCT: {"replicas": "4", "rename": True, "mps": False}}."""
    out: dict[str, dict] = {}
    for p in values:
        if "=" not in p:
            raise pytest.UsageError(f"--sharing-profile {p!r}: expected 'GPU product=replicas[,rename][,mps]'")
        product, _, rest = p.rpartition("=")
        replicas, *flags = [x.strip() for x in rest.split(",")]
        bad = [f for f in flags if f not in ("rename", "mps")]
        if bad:
            raise pytest.UsageError(f"--sharing-profile {p!r}: unknown flags {bad} (known: rename, mps)")
        out[product] = {"replicas": replicas, "rename": "rename" in flags, "mps": "mps" in flags}
    return out


def _host_map(path: str) -> dict[str, str]:
    from provision.hosts.spec import load_host_map

    return load_host_map(path)


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    setting: str | None = None        # the Settings field it sets; None: read by the run wiring (modes, --lab)
    parse: Callable[[Any], Any] | None = None  # command-line value -> the setting's raw value
    kind: str = "value"               # value | switch | append
    dest: str | None = None           # pytest's dest, when not the flag's name
    ini: str | None = None            # key under [tool.gpu-conformance]; default: the setting's name
    owner: str = GROUP                # who declares it: this plugin, or pytest-testinfra

    @property
    def name(self) -> str:
        return self.dest or self.flag.removeprefix("--").replace("-", "_")

    @property
    def ini_key(self) -> str | None:
        return self.ini or self.setting


OPTIONS: tuple[Option, ...] = (
    Option("--provision", "install and configure, then verify", kind="switch"),
    Option("--plan", "print the exact changes --provision would make; change nothing", kind="switch"),
    Option("--rollback", "restore exactly what earlier --provision runs changed", kind="switch"),
    Option("--kubeconfig", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config)", "kubeconfig"),
    Option("--context", "kubeconfig context", "context", dest="kube_context"),
    Option("--operator-namespace", "namespace of the GPU Operator (default gpu-operator)", "namespace"),
    Option("--gpu-nodes", "comma-separated GPU node names (default: discovered by label)", "gpu_nodes", _names),
    Option("--expected-gpus", "node=count,... physical GPUs per node (default: nvidia-smi)", "expected_gpus", _counts),
    Option("--replicas", "time-slicing replicas per GPU, an integer >= 2 (default 4)", "replicas"),
    Option("--replica-profile", "'GPU product=replicas' profile chosen through nvidia.com/device-plugin.config "
           "(repeatable)", "replica_profiles", _profiles, kind="append"),
    Option("--mig-profile", "'node or GPU product=mig-parted config' desired MIG profile, applied by the node label "
           "nvidia.com/mig.config (repeatable)", "mig_profiles", _profiles, kind="append"),
    Option("--mig-strategy", "'node or GPU product=single|mixed' MIG strategy of a MIG node (repeatable; default "
           "single)", "mig_strategies", _profiles, kind="append"),
    Option("--sharing-profile", "'GPU product=replicas[,rename][,mps]' sharing profile chosen through "
           "nvidia.com/device-plugin.config: rename = renameByDefault (nvidia.com/gpu.shared), mps = MPS sharing "
           "(repeatable)", "sharing_profiles", _sharing_profiles, kind="append"),
    Option("--cdi-nri-plugin", "install with cdi.nriPluginEnabled=true (the toolkit's NRI plugin: no nvidia "
           "RuntimeClass, no containerd drop-in; needs containerd >= 1.7.30 or 2.1+ with NRI and CDI on)",
           "cdi_nri_plugin", lambda _: True, kind="switch"),
    Option("--chart-version", "GPU Operator chart version (default v26.3.0)", "chart_version"),
    Option("--stack", "GPU stack: clusterpolicy (device plugin, default) | dra (GPUCluster + DRA driver, "
           "v26.7.0+)", "stack"),
    Option("--switch-stack", "let --provision move an installed release to the other --stack", "switch_stack",
           kind="switch"),
    Option("--dra-sharing", "stack dra: GPU sharing through the claim's GpuConfig: none (default) | TimeSlicing | MPS",
           "dra_sharing"),
    Option("--chart-repo", "GPU Operator chart repository URL", "chart_repo"),
    Option("--min-driver", "minimum NVIDIA driver major version (default 470; the workload image's CUDA raises it "
           "when it needs more: 525 for the default CUDA 12.5 image)", "min_driver"),
    Option("--no-workload", "skip workload pods: a strictly read-only audit", "workload", lambda _: False,
           kind="switch"),
    Option("--host-backend", "none | lab | local | ssh | paramiko | ansible | pod", "host_backend"),
    Option("--node-mapping", "node -> host: name | internal-ip | map", "node_mapping"),
    Option("--host-concurrency", "how many hosts are gathered at once (default 8)", "host_concurrency", int),
    Option("--host-map", "YAML/TOML file mapping node names to host addresses", "hosts", _host_map),
    Option("--dcgm-access", "proxy (through the apiserver, default) | direct (pod IP:9400)", "dcgm_access"),
    Option("--host-only", "host-level checks only, no Kubernetes: run on a GPU machine with --host-backend local",
           "host_only", kind="switch"),
    Option("--lab", "target the local lab (started from --lab-spec if not running)", kind="switch", ini="lab"),
    Option("--lab-spec", "lab node spec YAML for --lab"),
    Option("--report-dir", "where runs are written (default reports/)", "report_dir"),
    Option("--timeouts", "name=seconds,... (helm, toolkit_ready, node_ready, advertise, workload, api)", "timeouts",
           _seconds),
    Option("--previous", "run folder to compare with (default: the latest run of this mode and cluster in "
           "--report-dir)", "previous_run", dest="previous_run"),
    Option("--fail-on", "any (default): every problem fails the run; new: only new failures and nodes gone",
           "fail_on"),
    Option("--metrics-file", "write the run's metrics as a node-exporter textfile (*.prom)", "metrics_file"),
    Option("--pushgateway", "push the run's metrics to this Pushgateway (job, cluster grouping keys)", "pushgateway"),
    Option("--pushgateway-job", "the Pushgateway's job grouping key (default gpu-conformance)", "pushgateway_job"),
    # Declared by pytest-testinfra (its --hosts/--connection are not used: the suite maps nodes to hosts itself).
    Option("--ansible-inventory", "Ansible inventory file", "ansible_inventory", owner=TESTINFRA),
    Option("--ssh-config", "SSH config file", "ssh_config", owner=TESTINFRA),
    Option("--ssh-identity-file", "SSH identity file", "ssh_identity_file", owner=TESTINFRA),
    Option("--sudo", "Use sudo", "sudo", kind="switch", owner=TESTINFRA),
)

_ACTIONS = {"value": "store", "switch": "store_true", "append": "append"}


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup(GROUP, "GPU node conformance (settable under [tool.gpu-conformance])")
    for opt in OPTIONS:
        if opt.owner != GROUP:
            continue
        extra: dict[str, Any] = {"default": []} if opt.kind == "append" else {}
        g.addoption(opt.flag, action=_ACTIONS[opt.kind], dest=opt.name, help=opt.help, **extra)


def value(config: pytest.Config, opt: Option) -> Any:
    try:
        return config.getoption(opt.name)
    except ValueError as exc:  # not declared: the plugin that owns it is not loaded
        raise pytest.UsageError(f"{opt.flag} is declared by {opt.owner}, which is not loaded in this run; "
                                f"install it (pip install {opt.owner}) and do not disable it with -p no:...") from exc


def raw_settings(config: pytest.Config) -> dict:
    """Defaults < pyproject < command line, as a flat dict for provision.settings.validate()."""
    from provision.settings import load_pyproject

    by_flag = {opt.flag: opt for opt in OPTIONS}
    raw: dict = load_pyproject(Path(config.invocation_params.dir))
    modes = [m for m in MODES if value(config, by_flag["--" + m])]
    if len(modes) > 1:
        raise pytest.UsageError(f"choose one of --provision, --plan, --rollback (got {', '.join(modes)})")
    raw["mode"] = modes[0] if modes else "audit"
    lab = bool(raw.pop("lab", False))
    cli: dict = {}
    for opt in OPTIONS:
        given = value(config, opt)
        if opt.setting is None or given in (None, False, []):
            continue
        cli[opt.setting] = opt.parse(given) if opt.parse else given
    # What one option implies for another, unless that one was given too.
    if cli.get("host_only"):
        cli.setdefault("host_backend", "local")
    if "hosts" in cli:
        cli.setdefault("node_mapping", "map")
    if "ansible_inventory" in cli:
        _from_inventory(cli)
    raw.update(cli)
    if "kubeconfig" not in cli and not raw.get("kubeconfig") and os.environ.get("KUBECONFIG"):
        raw["kubeconfig"] = os.environ["KUBECONFIG"]
    if isinstance(raw.get("gpu_nodes"), list):
        raw["gpu_nodes"] = tuple(raw["gpu_nodes"])
    if lab or value(config, by_flag["--lab"]):
        from gpu_conformance.run import lab_settings

        raw.update(lab_settings(value(config, by_flag["--lab-spec"]), raw))
        # Options given on the command line still win over the lab's defaults (e.g. a ServiceAccount
        # token's kubeconfig for a least-privilege run against the lab).
        raw.update({k: cli[k] for k in ("kubeconfig", "chart_repo", "dcgm_access") if k in cli})
    return raw


def _from_inventory(cli: dict) -> None:
    from provision.hosts.inventory import InventoryError, load_inventory

    cli.setdefault("host_backend", "ansible")
    try:
        inventory = load_inventory(cli["ansible_inventory"])
    except InventoryError as exc:
        raise pytest.UsageError(str(exc)) from exc
    # The original setup's host vars: gpu_count is the expected number of physical GPUs of that node.
    counts = {h.name: int(h.gpu_count) for h in inventory if h.gpu_count is not None}
    if counts and not cli.get("expected_gpus"):
        cli["expected_gpus"] = counts
