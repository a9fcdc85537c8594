"""Property tests that complete tests/unit/test_parsers_properties.py (which covers: nvidia-smi CSV and -L
never crash and round-trip; containerd resolution never crashes on configs and arbitrary text; add_import is
idempotent; daemon.json parse never crashes, the nvidia merge never loses a key; DCGM text never crashes and
structured scrapes are read whole). Added here, for "never crash, never lose keys":

* containerd: add_import keeps every other key; resolution keeps every runtime of the root when the drop-ins
  do not replace the CRI section;
* the time-slicing config parser never crashes, and render/parse round-trips every valid replicas value;
* replicas validation (the setting and the parser) never crashes and accepts exactly the integers 2..1024;
* GFD label parsing never crashes;
* the suite's ConfigMap update keeps every key of another party that writes concurrently (409s retried).
"""

from __future__ import annotations

import json
import re
import string
import tomllib
from typing import Any

import tomlkit
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException

from provision.context import RunContext
from provision.converge.cluster import update_configmap_keys
from provision.hosts.guard import WRITE_GUARD
from provision.kube import Kube
from provision.observe import containerd, gfd, timeslicing
from provision.settings import SettingsError, validate

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = "/etc/containerd/config.toml"
CONF_D = "/etc/containerd/conf.d"
KEY = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=10)
SCALAR = st.integers(-10, 10) | st.booleans() | st.text(alphabet=string.printable, max_size=12)
TABLES = st.dictionaries(KEY, SCALAR | st.lists(SCALAR, max_size=3), max_size=4)


# ----------------------------------------------------------------------------------------------- containerd
@PROPERTY
@given(st.dictionaries(KEY.filter(lambda k: k != "imports"), SCALAR | TABLES, max_size=6),
       st.none() | st.lists(st.sampled_from([f"{CONF_D}/*.toml", "/opt/x/*.toml", "extra.toml"]), max_size=3,
                            unique=True),
       st.sampled_from([f"{CONF_D}/*.toml", "/var/lib/k8s-containerd/k8s-containerd/etc/containerd/conf.d/*.toml"]))
def test_add_import_never_loses_a_key(doc: dict[str, Any], imports: list[str] | None, glob: str) -> None:
    if imports is not None:
        doc = {**doc, "imports": imports}
    text = tomlkit.dumps(doc)
    out = tomllib.loads(containerd.add_import(text, glob))
    before = tomllib.loads(text)
    assert {k: v for k, v in out.items() if k != "imports"} == {k: v for k, v in before.items() if k != "imports"}
    assert out["imports"] == (before.get("imports") or []) + ([] if glob in (before.get("imports") or []) else [glob])


RUNTIME_NAMES = st.lists(st.sampled_from(["runc", "nvidia", "nvidia-cdi", "kata", "crun"]) | KEY, min_size=1,
                         max_size=5, unique=True)


@PROPERTY
@given(RUNTIME_NAMES, st.lists(TABLES, max_size=3), st.sampled_from([2, 3]))
def test_resolution_keeps_every_runtime_of_the_root_when_drop_ins_leave_cri_alone(
        names: list[str], dropins: list[dict[str, Any]], version: int) -> None:
    plugin = containerd.cri_plugin_id(version)
    root = {"version": version, "imports": [f"{CONF_D}/*.toml"],
            "plugins": {plugin: {"containerd": {"default_runtime_name": names[0], "runtimes": {
                n: {"runtime_type": "io.containerd.runc.v2"} for n in names}}}}}
    files = {ROOT: tomlkit.dumps(root)}
    for i, d in enumerate(dropins):  # drop-ins with other top-level tables only (grpc, debug, metrics, ...)
        files[f"{CONF_D}/{i:02d}-extra.toml"] = tomlkit.dumps({"version": version, "debug": d})
    cfg = containerd.resolve(ROOT, files)
    assert set(cfg.runtimes) == set(names)
    assert cfg.default_runtime_name == names[0]
    assert cfg.imports == sorted(p for p in files if p != ROOT)


# ----------------------------------------------------------------------------------------------- time-slicing
YAMLISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                       max_leaves=12)


@PROPERTY
@given(st.text(max_size=300) | YAMLISH.map(yaml.safe_dump)
       | st.fixed_dictionaries({"version": st.just("v1"), "sharing": YAMLISH}).map(yaml.safe_dump))
@example("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 1.5}]}}\n")
@example("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: '4'}]}}\n")
def test_time_slicing_parser_never_crashes(text: str) -> None:
    try:
        cfg = timeslicing.parse_config(text, "ConfigMap x key y")
    except timeslicing.TimeSlicingError as exc:
        assert str(exc).startswith("ConfigMap x key y: ") or "replicas must be" in str(exc)
    else:
        assert cfg.version == "v1"
        assert cfg.replicas is None or 2 <= cfg.replicas <= timeslicing.MAX_REPLICAS


@PROPERTY
@given(st.integers(2, timeslicing.MAX_REPLICAS), st.booleans(), st.booleans())
def test_time_slicing_render_parse_round_trip(replicas: int, rename: bool, fail_gt_one: bool) -> None:
    cfg = timeslicing.parse_config(timeslicing.render_config(replicas, rename, fail_gt_one))
    assert (cfg.replicas, cfg.rename_by_default, cfg.fail_requests_greater_than_one) == (replicas, rename, fail_gt_one)
    assert cfg.resources == {timeslicing.GPU_RESOURCE: replicas}


ANY_VALUE = (st.integers() | st.floats(allow_nan=True) | st.booleans() | st.none() | st.text(max_size=12)
             | st.integers(-5, 2000).map(str) | st.lists(st.integers(), max_size=2))


@PROPERTY
@given(ANY_VALUE)
@example("4")
@example(" 7 ")
@example("+3")
@example("\u0664")  # ARABIC-INDIC DIGIT FOUR: isdigit() but not [0-9]
@example(True)
@example(2.0)
@example("--3")
def test_replicas_are_exactly_the_integers_2_to_1024(value: object) -> None:
    as_int = None
    if isinstance(value, int) and not isinstance(value, bool):
        as_int = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        as_int = int(value.strip())
    valid = as_int is not None and 2 <= as_int <= timeslicing.MAX_REPLICAS
    try:
        got = timeslicing.validate_replicas(value)
    except timeslicing.InvalidReplicas:
        assert not valid, value
    else:
        assert valid and got == as_int, value
    if value is None:
        return  # a setting of None is "not given": the default applies
    try:  # the same through the settings: a SettingsError, never anything else
        s = validate({"replicas": value})
    except SettingsError as exc:
        assert not valid and str(exc).startswith("invalid setting replicas=")
    else:
        assert valid and s.replicas == as_int


# ----------------------------------------------------------------------------------------------- GFD
@PROPERTY
@given(st.dictionaries(st.sampled_from([f"nvidia.com/{k}" for k in (
    "gpu.count", "gpu.replicas", "gpu.memory", "gpu.product", "gpu.present", "cuda.driver-version.full",
    "cuda.driver-version.major", "gpu.sharing-strategy")]) | st.text(max_size=10), st.text(max_size=12)))
def test_gfd_label_parsing_never_crashes(labels: dict[str, str]) -> None:
    try:
        got = gfd.parse_labels(labels)
    except gfd.GfdLabelError:
        return
    assert got.count is None or isinstance(got.count, int)


# ----------------------------------------------------------------------------------------------- ConfigMaps
class _Store:
    """One ConfigMap in memory with optimistic concurrency (409 on a stale resourceVersion), and 'another
    party' that writes its own keys right after some of the suite's reads."""

    def __init__(self, data: dict[str, str], interference: list[dict[str, str]]) -> None:
        self.obj = {"metadata": {"name": "cm", "namespace": "ns", "resourceVersion": "1", "labels": {}}, "data": data}
        self.interference = list(interference)
        self.conflicts = 0

    def read_namespaced_config_map(self, name: str, namespace: str, **kw: Any) -> Any:
        snapshot = json.dumps(self.obj)
        if self.interference:  # someone else writes between our read and our write
            theirs = self.interference.pop(0)
            self.obj["data"] = {**self.obj["data"], **theirs}
            self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        return type("Resp", (), {"data": snapshot.encode()})()

    def replace_namespaced_config_map(self, name: str, namespace: str, body: dict, **kw: Any) -> None:
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise ApiException(status=409, reason="Conflict")
        self.obj = json.loads(json.dumps(body))
        self.obj["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)


class _NoRecord:
    def add(self, kind: str, target: str, before: Any) -> None:
        pass


SUITE_KEYS = st.dictionaries(st.sampled_from(["any", "service.yaml", "nvidia-h200"]), st.text(max_size=20), min_size=1)
OTHER_KEYS = st.dictionaries(KEY.map(lambda k: "team-" + k), st.text(max_size=20), max_size=4)


@settings(max_examples=100, deadline=None)
@given(OTHER_KEYS, SUITE_KEYS, st.lists(OTHER_KEYS, max_size=3))
def test_configmap_update_keeps_every_key_of_a_concurrent_writer(existing: dict[str, str], ours: dict[str, str],
                                                                   interference: list[dict[str, str]]) -> None:
    store = _Store(dict(existing), interference)
    kube = Kube(client.ApiClient(client.Configuration()), validate({"mode": "provision"}))
    kube.core = store  # type: ignore[assignment]
    ctx = RunContext(kube.settings, kube, run_dir=None, gpu_nodes=())  # type: ignore[arg-type]
    ctx.__dict__["record"] = _NoRecord()
    expected = dict(existing)
    for theirs in interference:
        expected.update(theirs)
    expected.update(ours)
    with WRITE_GUARD.allow("--provision"):
        update_configmap_keys(ctx, "ns", "cm", ours)
    assert store.obj["data"] == expected
