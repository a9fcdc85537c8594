"""Property tests for the observe/* parsers: on any input they either return a result or raise their own
documented error type, and the structured round trips hold."""

from __future__ import annotations

import copy
import json
import string
from typing import Any

import tomlkit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provision.observe import containerd, dcgm, docker_daemon, nvidia_smi

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- nvidia-smi -------------------------------------------------------------------------------------------------------

CSV_ALPHABET = string.ascii_letters + string.digits + " ,.-[]/\"'\t\n\r\x00:"


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.sampled_from(CSV_ALPHABET), max_size=300) | st.text(max_size=200))
@example("\u00b2, A, GPU-a, 1, 1, x, 1, b\n")  # "²".isdigit() is True but int("²") fails
@example("0, A, GPU-a, 1, \u00b2 MiB, x, 1, b\n")
def test_query_csv_never_crashes_with_anything_else(text: str) -> None:
    try:
        gpus = nvidia_smi.parse_query_csv(text)
    except nvidia_smi.NvidiaSmiParseError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(isinstance(gpu, nvidia_smi.Gpu) and gpu.index >= 0 and gpu.name and gpu.uuid for gpu in gpus)


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.sampled_from(CSV_ALPHABET + "GPUMIG()"), max_size=300))
def test_list_never_crashes_with_anything_else(text: str) -> None:
    try:
        gpus = nvidia_smi.parse_list(text)
    except nvidia_smi.NvidiaSmiParseError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(isinstance(gpu.index, int) for gpu in gpus)


NAME = (
    st.text(alphabet=string.ascii_letters + string.digits + " -.", min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda name: bool(name) and name.lower() not in {"n/a", "not supported", "unknown error"})
)
OPTIONAL_VERSION = st.none() | st.from_regex(r"[1-9][0-9]{2}\.[0-9]{1,3}(\.[0-9]{2})?", fullmatch=True)
OPTIONAL_MEMORY = st.none() | st.integers(min_value=0, max_value=2**40)
OPTIONAL_MIG = st.sampled_from([None, "Enabled", "Disabled"])
OPTIONAL_CC = st.none() | st.from_regex(r"[1-9]{1,2}\.[0-9]", fullmatch=True)
OPTIONAL_BUS = st.none() | st.from_regex(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]", fullmatch=True)


@st.composite
def gpu_lists(draw: st.DrawFn) -> list[nvidia_smi.Gpu]:
    count = draw(st.integers(min_value=0, max_value=8))
    return [
        nvidia_smi.Gpu(
            index=index,
            name=draw(NAME),
            uuid="GPU-" + draw(st.uuids()).hex,
            driver_version=draw(OPTIONAL_VERSION),
            memory_total_mib=draw(OPTIONAL_MEMORY),
            mig_mode=draw(OPTIONAL_MIG),
            compute_cap=draw(OPTIONAL_CC),
            pci_bus_id=draw(OPTIONAL_BUS),
        )
        for index in range(count)
    ]


def render_csv(gpus: list[nvidia_smi.Gpu], header: bool, units: bool, na: str) -> str:
    lines = []
    if header:
        lines.append(", ".join(f"{f} [MiB]" if f == "memory.total" and units else f for f in nvidia_smi.QUERY_FIELDS))
    for gpu in gpus:
        memory = None if gpu.memory_total_mib is None else f"{gpu.memory_total_mib}{' MiB' if units else ''}"
        cells = [str(gpu.index), gpu.name, gpu.uuid, gpu.driver_version, memory, gpu.mig_mode, gpu.compute_cap]
        cells.append(gpu.pci_bus_id)
        lines.append(", ".join(na if cell is None else cell for cell in cells))
    return "\n".join(lines) + "\n"


@PROPERTY_SETTINGS
@given(gpu_lists(), st.booleans(), st.booleans(), st.sampled_from(["[N/A]", "N/A", "[Not Supported]"]))
def test_query_csv_round_trip(gpus: list[nvidia_smi.Gpu], header: bool, units: bool, na: str) -> None:
    assert nvidia_smi.parse_query_csv(render_csv(gpus, header, units, na)) == gpus


# --- containerd TOML resolution ---------------------------------------------------------------------------------------

ROOT = "/etc/containerd/config.toml"
CONF_D = "/etc/containerd/conf.d"

KEYS = st.sampled_from(["containerd", "runtimes", "runc", "nvidia", "options", "runtime_type", "BinaryName"]) | st.text(
    alphabet=string.ascii_letters + "_-.", min_size=1, max_size=8
)
SCALARS = (
    st.integers(min_value=-5, max_value=5)
    | st.booleans()
    | st.text(alphabet=string.ascii_letters + "./-*", max_size=12)
    | st.sampled_from(["runc", "io.containerd.runc.v2", "/usr/bin/nvidia-container-runtime"])
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
PLUGIN_IDS = st.sampled_from(
    ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "cri", "io.containerd.cri.v1.images"]
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about 6 times in 7, else ``bad`` (st.one_of would weigh the branches equally)."""
    return st.sampled_from([True] * 6 + [False]).flatmap(lambda keep: good if keep else bad)


RUNTIME_TABLES = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "runtime_type": mostly(st.just("io.containerd.runc.v2"), SCALARS),
            "options": mostly(
                st.fixed_dictionaries(
                    {}, optional={"BinaryName": SCALARS, "SystemdCgroup": mostly(st.booleans(), SCALARS)}
                ),
                TREES,
            ),
        },
    ),
    TREES,
)
CONTAINERD_SECTIONS = mostly(
    st.fixed_dictionaries(
        {"runtimes": mostly(st.dictionaries(st.sampled_from(["runc", "nvidia", "nvidia-cdi"]), RUNTIME_TABLES), TREES)},
        optional={"default_runtime_name": mostly(st.sampled_from(["runc", "nvidia"]), SCALARS)},
    ),
    TREES,
)
CRI_SECTIONS = mostly(
    st.fixed_dictionaries({"containerd": CONTAINERD_SECTIONS}, optional={"sandbox_image": SCALARS}),
    TREES,
)


@st.composite
def containerd_configs(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-shaped configs (so that the resolution itself is exercised), sometimes mistyped ones."""
    config: dict[str, Any] = {}
    version = draw(mostly(st.sampled_from([2, 3]), st.sampled_from([None, 1, 4]) | SCALARS))
    if version is not None:
        config["version"] = version
    if draw(st.booleans()):
        entries = st.sampled_from([f"{CONF_D}/*.toml", "conf.d/*.toml", "extra.toml", ROOT, "*", "/etc/*/*.toml"])
        config["imports"] = draw(mostly(st.lists(entries, max_size=3), TREES))
    if draw(st.sampled_from([True] * 5 + [False])):
        cri_id = containerd.CRI_PLUGIN_IDS.get(version, "io.containerd.grpc.v1.cri") if version in (2, 3) else "cri"
        plugin_id = draw(mostly(st.just(cri_id), PLUGIN_IDS))
        plugins = {plugin_id: draw(CRI_SECTIONS), **draw(st.dictionaries(PLUGIN_IDS, TREES, max_size=1))}
        config["plugins"] = draw(mostly(st.just(plugins), SCALARS))
    if draw(st.booleans()):
        config["grpc"] = draw(TREES)
    return config


def dumps(config: dict[str, Any]) -> str:
    return tomlkit.dumps(config)


FILE_NAMES = st.sampled_from([f"{CONF_D}/00-a.toml", f"{CONF_D}/99-nvidia.toml", "/etc/containerd/extra.toml"])


@PROPERTY_SETTINGS
@given(containerd_configs(), st.dictionaries(FILE_NAMES, containerd_configs() | st.text(max_size=40), max_size=3))
def test_resolve_never_crashes_with_anything_else(root: dict[str, Any], dropins: dict[str, Any]) -> None:
    files = {ROOT: dumps(root)}
    files.update({path: dumps(value) if isinstance(value, dict) else value for path, value in dropins.items()})
    try:
        cfg = containerd.resolve(ROOT, files)
    except containerd.ContainerdConfigError as exc:
        assert str(exc).split(":")[0] in files
        return
    assert set(cfg.imports) <= set(files) - {ROOT}
    assert len(cfg.imports) == len(set(cfg.imports))
    assert set(cfg.drop_in_versions) == set(cfg.imports)
    if cfg.ok:
        assert cfg.version in (1, 2, 3, 4)
        assert cfg.builtin_runtimes or cfg.default_runtime_name in cfg.runtimes
        assert all(runtime.runtime_type for runtime in cfg.runtimes.values())
    for finding in cfg.errors:
        assert finding.kind in {
            "unsupported-version",
            "drop-in-version-higher",
            "runtime-type-missing",
            "missing-import",
            "default-runtime-missing",
            "invalid-plugin-config",
        }


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_resolve_on_arbitrary_text(text: str) -> None:
    try:
        containerd.resolve(ROOT, {ROOT: text})
    except containerd.ContainerdConfigError as exc:
        assert str(exc).startswith(f"{ROOT}: ")


@PROPERTY_SETTINGS
@given(containerd_configs(), st.sampled_from([f"{CONF_D}/*.toml", "/opt/x/*.toml"]))
def test_add_import_is_idempotent(root: dict[str, Any], glob: str) -> None:
    text = dumps(root)
    try:
        once = containerd.add_import(text, glob)
    except containerd.ContainerdConfigError:
        return
    assert containerd.add_import(once, glob) == once
    assert glob in tomlkit.parse(once)["imports"]


# --- daemon.json ------------------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=15,
)
RUNTIMES = st.dictionaries(
    st.sampled_from(["nvidia", "crun", "runc", "kata"]) | st.text(max_size=6), JSON_VALUES, max_size=3
)
DAEMON_CONFIGS = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6).flatmap(
    lambda cfg: st.one_of(st.just(cfg), RUNTIMES.map(lambda runtimes: {**cfg, "runtimes": runtimes}))
)


@PROPERTY_SETTINGS
@given(st.text(max_size=200) | JSON_VALUES.map(json.dumps))
def test_daemon_json_parse_never_crashes_with_anything_else(text: str) -> None:
    try:
        cfg = docker_daemon.parse(text, "/etc/docker/daemon.json")
    except docker_daemon.DaemonJsonError as exc:
        assert str(exc).startswith("/etc/docker/daemon.json: ")
    else:
        assert isinstance(cfg, dict)


@PROPERTY_SETTINGS
@given(DAEMON_CONFIGS)
def test_daemon_json_merge_never_loses_a_key(cfg: dict[str, Any]) -> None:
    before = copy.deepcopy(cfg)
    merged = docker_daemon.merge_nvidia_runtime(cfg)
    assert cfg == before  # input untouched
    for key, value in cfg.items():
        assert key in merged
        if key != "runtimes":
            assert merged[key] == value
    for name, runtime in cfg.get("runtimes", {}).items():
        if name != "nvidia":
            assert merged["runtimes"][name] == runtime
    old = cfg.get("runtimes", {}).get("nvidia")
    if docker_daemon.has_nvidia_runtime(cfg):
        assert merged == cfg  # a working entry is left alone
    elif isinstance(old, dict) and not old.get("runtimeType"):
        assert merged["runtimes"]["nvidia"] == {**old, "path": "nvidia-container-runtime"}  # merged, keys kept
    else:
        assert merged["runtimes"]["nvidia"] == docker_daemon.NVIDIA_RUNTIME
    assert set(merged) == set(cfg) | {"runtimes"}
    assert docker_daemon.has_nvidia_runtime(merged)
    assert docker_daemon.parse(docker_daemon.render(merged)) == merged
    changes = docker_daemon.diff(cfg, merged)
    assert all(
        change.startswith(("add runtimes", "change runtimes.nvidia", "remove runtimes.nvidia")) for change in changes
    )
    assert docker_daemon.merge_nvidia_runtime(merged) == merged  # idempotent
    assert docker_daemon.diff(merged, merged) == []


@PROPERTY_SETTINGS
@given(
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), JSON_VALUES.filter(lambda v: not isinstance(v, dict))
)
def test_daemon_json_merge_rejects_non_object_runtimes(cfg: dict[str, Any], runtimes: Any) -> None:
    cfg = {**cfg, "runtimes": runtimes}
    try:
        docker_daemon.merge_nvidia_runtime(cfg)
    except docker_daemon.DaemonJsonError as exc:
        assert "runtimes must be a JSON object" in str(exc)
    else:
        raise AssertionError("a non-object runtimes value was accepted")


# --- DCGM -------------------------------------------------------------------------------------------------------------

PROM_ALPHABET = string.ascii_letters + string.digits + '_{}=",# \n.+-\\'


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.sampled_from(PROM_ALPHABET), max_size=200) | st.text(max_size=100))
def test_dcgm_parse_never_crashes_with_anything_else(text: str) -> None:
    try:
        scrape = dcgm.parse_metrics(text)
    except dcgm.DcgmParseError:
        return
    assert scrape.sample_count >= len(scrape.gpus)


LABEL_VALUE = st.text(alphabet=string.ascii_letters + string.digits + " .-:", max_size=20)


@PROPERTY_SETTINGS
@given(
    st.lists(st.uuids().map(lambda u: f"GPU-{u}"), min_size=1, max_size=8, unique=True),
    st.lists(st.sampled_from(["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"]), min_size=1),
    LABEL_VALUE,
    st.sampled_from(["Hostname", "hostname"]),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_dcgm_structured_scrape(uuids: list[str], metrics: list[str], host: str, host_label: str, value: float) -> None:
    lines = []
    for metric in dict.fromkeys(metrics):
        lines.append(f"# TYPE {metric} gauge")
        for index, uuid in enumerate(uuids):
            lines.append(
                f'{metric}{{gpu="{index}",UUID="{uuid}",modelName="NVIDIA H200",{host_label}="{host}"}} {value!r}'
            )
    scrape = dcgm.parse_metrics("\n".join(lines) + "\n")
    assert scrape.uuids == uuids
    assert scrape.sample_count == len(uuids) * len(set(metrics))
    assert all(gpu.metrics == frozenset(metrics) for gpu in scrape.gpus.values())
    assert all(gpu.values[metrics[0]] == value for gpu in scrape.gpus.values())
    assert dcgm.missing_uuids(scrape, uuids) == []
    assert scrape.hosts == (frozenset({host}) if host else frozenset())
