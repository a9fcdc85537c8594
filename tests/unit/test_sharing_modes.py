"""Issue 16: renamed / MPS sharing, per-node config keys, runtime modes (CDI, NRI): the pure parts, and the checks
over the real describe-node fixtures of ../shared/fixtures/real-world/k8s."""

from __future__ import annotations

import json
import tomllib
from types import SimpleNamespace

import pytest

from provision import checks, expect
from provision.observe import runtime_mode as rm
from provision.observe.timeslicing import TimeSlicingError, parse_config, render_config
from provision.reporting.fleet import _mode_badge
from provision.reporting.node_modes import node_modes
from provision.settings import Settings, SettingsError, validate
from tests.unit.observe_fixtures import fixture_text
from tests.unit.test_real_world_inputs import _cluster_ctx, _describe_node_fragment, _uncached

UUIDS = ["GPU-11111111-2222-3333-4444-555555555555", "GPU-66666666-7777-8888-9999-000000000000"]


# ------------------------------------------------------------------------------------------------ sharing configs
def test_mps_config_renders_and_parses_as_mps() -> None:
    text = render_config(3, rename_by_default=True, mps=True)
    cfg = parse_config(text)
    assert (cfg.mps, cfg.strategy, cfg.replicas, cfg.advertised_name("nvidia.com/gpu")) == (
        True, "mps", 3, "nvidia.com/gpu.shared")
    assert "failRequestsGreaterThanOne" not in text and "timeSlicing" not in text
    assert parse_config(render_config(4)).strategy == "time-slicing"


def test_a_config_with_both_time_slicing_and_mps_is_refused() -> None:
    both = ("version: v1\nsharing:\n  timeSlicing:\n    resources: [{name: nvidia.com/gpu, replicas: 2}]\n"
            "  mps:\n    resources: [{name: nvidia.com/gpu, replicas: 2}]\n")
    with pytest.raises(TimeSlicingError, match="cannot both be set"):
        parse_config(both)


def test_sharing_profiles_are_validated() -> None:
    s = validate({"sharing_profiles": {"NVIDIA GB10": {"replicas": "4", "rename": True}, "Tesla T4": 2}})
    assert s.sharing_profiles == {"NVIDIA GB10": {"replicas": 4, "rename": True, "mps": False},
                                  "Tesla T4": {"replicas": 2, "rename": False, "mps": False}}
    assert s.replicas_for("NVIDIA GB10") == 4 and s.replicas_for("NVIDIA H200") == 4
    with pytest.raises(SettingsError, match="known keys"):
        validate({"sharing_profiles": {"X": {"replicas": 2, "renamed": True}}})
    with pytest.raises(SettingsError, match=r"sharing_profiles\['X'\].replicas"):
        validate({"sharing_profiles": {"X": {"replicas": 1}}})
    with pytest.raises(SettingsError, match=r"sharing_profiles\['X'\].config"):
        validate({"sharing_profiles": {"X": {"replicas": 2, "config": "Not A Key"}}})


# ------------------------------------------------------------------- the playbooks' per-node keys, real fixtures
def _foreign_ctx(node: str, labels: dict, alloc: dict, data: dict[str, str], settings: Settings) -> SimpleNamespace:
    snap = SimpleNamespace(
        nodes={node: {"metadata": {"name": node, "labels": labels}, "status": {"allocatable": alloc}}},
        cluster_policy={"spec": {"devicePlugin": {"config": {"name": "time-slicing-config", "default": "default"}}}},
        configmaps={"time-slicing-config": {"data": data}}, daemonsets={})

    def no_host(name: str) -> None:
        from provision.context import NoHostAccess
        raise NoHostAccess("no host in this test")
    return SimpleNamespace(kube=SimpleNamespace(snapshot=lambda: snap), host=no_host, host_fact=_uncached,
                           settings=settings)


PLAYBOOK_KEYS = {"default": "version: v1\n", "dgx-spark": render_config(4), "consumer": render_config(2)}
# the playbooks' profiles as a desired state: product -> the playbooks' own key names
PLAYBOOK_PROFILES = {"NVIDIA GB10": {"replicas": 4, "config": "dgx-spark"}, "Tesla T4": {"replicas": 2,
                                                                                        "config": "consumer"}}


def test_a_node_on_a_desired_key_is_judged_by_the_key_it_really_uses() -> None:
    labels, alloc = _describe_node_fragment(fixture_text("real-world/k8s/t4-time-slicing-describe-node-fragment.txt"))
    assert alloc == {"nvidia.com/gpu": "16"} and labels["nvidia.com/gpu.replicas"] == "4"
    labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
    settings = validate({"sharing_profiles": PLAYBOOK_PROFILES})
    labels["nvidia.com/device-plugin.config"] = "consumer"      # the T4's own profile: 2 replicas, 16 is wrong
    ctx = _foreign_ctx("t4", labels, alloc, PLAYBOOK_KEYS, settings)
    assert expect.node_replicas(ctx, "t4") == 2
    found = checks.allocatable(ctx, "t4")
    assert not found.ok and "4 physical x 2 replicas = 8; found 16" in found.message, found.message
    labels["nvidia.com/device-plugin.config"] = "dgx-spark"     # on the GB10's key: judged by it (4 x 4 = 16)
    assert expect.node_replicas(ctx, "t4") == 4
    assert checks.allocatable(ctx, "t4").ok and checks.gfd_labels(ctx, "t4").ok


def test_a_key_the_desired_state_does_not_write_is_judged_by_the_product() -> None:
    labels, _ = _describe_node_fragment(fixture_text("real-world/k8s/t4-time-slicing-describe-node-fragment.txt"))
    labels["nvidia.com/device-plugin.config"] = "default"       # the playbooks' unshared default key
    ctx = _foreign_ctx("t4", labels, {"nvidia.com/gpu": "4"}, PLAYBOOK_KEYS,
                       validate({"sharing_profiles": PLAYBOOK_PROFILES}))
    assert expect.node_replicas(ctx, "t4") == 2                 # the desired state for a Tesla T4
    found = checks.allocatable(ctx, "t4")
    assert not found.ok and "4 physical x 2 replicas = 8; found 4" in found.message, found.message
    gfd = checks.gfd_labels(ctx, "t4")   # the config the node really uses shares nothing: strategy none wanted
    assert not gfd.ok and "gpu.replicas=4 (want 2)" in gfd.message and "(want none)" in gfd.message, gfd.message


def test_the_renamed_fixture_fails_when_its_count_is_wrong_naming_the_sharing_mode() -> None:
    labels, alloc = _describe_node_fragment(
        fixture_text("real-world/k8s/t4-time-slicing-renamebydefault-describe-node-fragment.txt"))
    alloc = {**alloc, "nvidia.com/gpu.shared": "15"}
    ctx = _cluster_ctx("t4-renamed", labels, alloc, render_config(4, rename_by_default=True))
    found = checks.allocatable(ctx, "t4-renamed")
    assert not found.ok and "found 15" in found.message and "sharing mode renamed time-slicing" in found.message


def test_mps_gfd_labels_want_the_mps_strategy() -> None:
    labels, alloc = _describe_node_fragment(fixture_text("real-world/k8s/t4-time-slicing-describe-node-fragment.txt"))
    ctx = _cluster_ctx("t4-mps", {**labels, "nvidia.com/gpu.sharing-strategy": "time-slicing"}, alloc,
                       render_config(4, mps=True))
    found = checks.gfd_labels(ctx, "t4-mps")
    assert not found.ok and "gpu.sharing-strategy=time-slicing (want mps)" in found.message
    ctx = _cluster_ctx("t4-mps", {**labels, "nvidia.com/gpu.sharing-strategy": "mps"}, alloc, render_config(4, mps=True))
    assert checks.gfd_labels(ctx, "t4-mps").ok and checks.allocatable(ctx, "t4-mps").ok


# ------------------------------------------------------------------------------------------------- runtime modes
@pytest.mark.parametrize(("cdi", "mode"), [(None, "cdi"), ({}, "cdi"), ({"enabled": False}, "runtimeclass"),
                                           ({"enabled": "false"}, "runtimeclass"),
                                           ({"enabled": True, "nriPluginEnabled": True}, "nri")])
def test_mode_from_cluster_policy_follows_the_crd_defaults(cdi, mode) -> None:
    cp = {"spec": {} if cdi is None else {"cdi": cdi}}
    assert rm.mode_from_policy(cp) == mode
    assert rm.mode_of(None, cp)[0] == mode


def test_the_rendered_toolkit_env_decides_the_mode() -> None:
    def ds(env: dict) -> dict:
        return {"spec": {"template": {"spec": {"containers": [
            {"name": "nvidia-container-toolkit-ctr", "env": [{"name": k, "value": v} for k, v in env.items()]}]}}}}
    assert rm.mode_of(ds({"CDI_ENABLED": "true", "ENABLE_NRI_PLUGIN": "true"}), None)[0] == "nri"
    assert rm.mode_of(ds({"CDI_ENABLED": "true"}), {"spec": {"cdi": {"enabled": False}}}) == (
        "cdi", "DaemonSet nvidia-container-toolkit-daemonset env CDI_ENABLED=true, ENABLE_NRI_PLUGIN=unset")
    assert rm.mode_of(ds({}), None)[0] == "runtimeclass"


def _plugin_spec(uuids: list[str]) -> str:
    return json.dumps({"cdiVersion": "0.5.0", "kind": "k8s.device-plugin.nvidia.com/gpu",
                       "devices": [{"name": u} for u in uuids]})


MANAGEMENT = "cdiVersion: 0.5.0\nkind: management.nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits: {}\n"


def test_cdi_specs_must_name_every_gpu_uuid() -> None:
    ok = rm.parse_cdi_specs({"/var/run/cdi/management.nvidia.com-gpu.yaml": MANAGEMENT,
                             "/var/run/cdi/k8s.device-plugin.nvidia.com-gpu.json": _plugin_spec(UUIDS)})
    assert rm.spec_uuid_problems(ok, UUIDS) == [] and ok.errors == ()
    short = rm.parse_cdi_specs({"/var/run/cdi/k8s.device-plugin.nvidia.com-gpu.json": _plugin_spec(UUIDS[:1])})
    assert rm.spec_uuid_problems(short, UUIDS) == [f"GPU {UUIDS[1]} of nvidia-smi is in no CDI spec"]
    only_mgmt = rm.parse_cdi_specs({"/var/run/cdi/management.nvidia.com-gpu.yaml": MANAGEMENT})
    assert "only the device 'all'" in rm.spec_uuid_problems(only_mgmt, UUIDS)[0]
    assert rm.spec_uuid_problems(rm.parse_cdi_specs({}), UUIDS) == ["no CDI spec file in /etc/cdi or /var/run/cdi"]
    nvidia_yaml = "kind: nvidia.com/gpu\ndevices:\n" + "".join(f"- name: {u}\n" for u in UUIDS) + "- name: all\n"
    assert rm.spec_uuid_problems(rm.parse_cdi_specs({"/etc/cdi/nvidia.yaml": nvidia_yaml}), UUIDS) == []
    broken = rm.parse_cdi_specs({"/etc/cdi/x.yaml": "kind: [", "/etc/cdi/y.yaml": "a: 1"})
    assert len(broken.errors) == 2 and "not valid YAML" in broken.errors[0] and "not a CDI spec" in broken.errors[1]


# containerd's own `config dump` of an empty root config (lab binaries, 2026-12-01): the tables that matter
DUMP_17 = '''version = 2
[plugins."io.containerd.grpc.v1.cri"]
  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
  enable_cdi = false
[plugins."io.containerd.nri.v1.nri"]
  disable = true
  socket_path = "/var/run/nri/nri.sock"
'''
DUMP_21 = '''version = 3
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = '/var/run/nri/nri.sock'
'''


def test_containerd_cdi_and_nri_from_its_config_dump() -> None:
    d17, d21 = tomllib.loads(DUMP_17), tomllib.loads(DUMP_21)
    assert rm.containerd_cdi(d17) == (False, ("/etc/cdi", "/var/run/cdi"), 'plugins."io.containerd.grpc.v1.cri"')
    assert rm.containerd_cdi(d21)[0] is True
    assert rm.containerd_nri(d17) == (False, "/var/run/nri/nri.sock")
    assert rm.containerd_nri(d21) == (True, "/var/run/nri/nri.sock")
    assert rm.containerd_nri({"version": 2}) == (False, rm.NRI_SOCKET)


@pytest.mark.parametrize(("version", "ok"), [("containerd://1.7.30", True), ("containerd://1.7.35", True),
                                             ("containerd://1.7.29", False), ("containerd://2.0.5", False),
                                             ("containerd://2.1.9", True), ("v2.3.7", True), ("1.6.20", False)])
def test_nri_needs_containerd_1_7_30_or_2_1(version, ok) -> None:
    assert (rm.nri_version_problem(version) is None) is ok
    assert rm.nri_version_problem("") and "not a version" in rm.nri_version_problem("containerd://banana")


def test_nri_mode_skips_the_runtimeclass_and_dropin_checks() -> None:
    snap = SimpleNamespace(daemonsets={}, runtimeclasses={},
                           cluster_policy={"spec": {"cdi": {"enabled": True, "nriPluginEnabled": True}}})
    ctx = SimpleNamespace(kube=SimpleNamespace(snapshot=lambda: snap))
    with pytest.raises(checks.NotApplicable, match="runtime mode nri"):
        checks.runtime_class(ctx, "nvidia", "nvidia")
    with pytest.raises(checks.NotApplicable, match="drop-in does not apply"):
        checks.containerd_dropins(ctx, "n1")
    snap.cluster_policy = {"spec": {"cdi": {"enabled": True}}}
    assert not checks.runtime_class(ctx, "nvidia", "nvidia").ok     # CDI mode: the RuntimeClass is still needed


def test_summary_node_modes_and_the_fleet_badge() -> None:
    nodes = {"a": {"metadata": {"labels": {"nvidia.com/device-plugin.config": "shared"}}}, "b": {"metadata": {}}}
    cp = {"spec": {"devicePlugin": {"config": {"name": "time-slicing-config", "default": "any"}}}}
    cms = {"time-slicing-config": {"data": {"any": render_config(4), "shared": render_config(2, rename_by_default=True)}}}
    out = node_modes(nodes, ["a", "b"], cp, None, cms)
    assert out["a"]["runtime_mode"] == "cdi" and out["a"]["sharing"]["resource"] == "nvidia.com/gpu.shared"
    assert out["b"]["sharing"] == {"config": None, "source": "ConfigMap time-slicing-config key any",
                                   "strategy": "time-slicing", "replicas": 4, "resource": "nvidia.com/gpu",
                                   "renamed": False}
    badge = _mode_badge(out["a"])
    assert badge == {"text": "cdi \u00b7 time-slicing x2 \u00b7 nvidia.com/gpu.shared",
                     "title": "ClusterPolicy spec.cdi (unset: CRD defaults)"}
    assert _mode_badge(None) is None
    from provision.reporting.fleet import render_fleet

    page = render_fleet({"results": [{"node": "a", "feature": "f", "scenario": "s", "outcome": "passed"}],
                         "nodes": {"a": out["a"]}}, {})
    assert '<small class="mode" title="ClusterPolicy spec.cdi (unset: CRD defaults)">cdi \u00b7 time-slicing x2' in page
    mig = _mode_badge({"runtime_mode": "cdi", "mig": {"strategy": "single", "profile": "all-1g.10gb", "state": "success"}})
    assert mig and mig["text"] == "cdi \u00b7 MIG single all-1g.10gb (success)", mig


def test_desired_configmap_and_labels_follow_the_sharing_profiles() -> None:
    from provision.converge.cluster import desired_resource, desired_timeslicing

    settings = validate({"sharing_profiles": {"NVIDIA GB10": {"replicas": 4, "rename": True, "config": "dgx-spark"},
                                              "Tesla T4": {"replicas": 2, "mps": True}}})
    nodes = {"spark": "NVIDIA-GB10", "t4": "Tesla-T4-SHARED", "h200": "NVIDIA-H200"}
    snap = SimpleNamespace(nodes={n: {"metadata": {"labels": {"nvidia.com/gpu.product": p}}} for n, p in nodes.items()})

    def no_host(name: str) -> None:
        from provision.context import NoHostAccess
        raise NoHostAccess("no host in this test")
    ctx = SimpleNamespace(kube=SimpleNamespace(snapshot=lambda: snap), host=no_host, host_fact=_uncached,
                          settings=settings)
    data, default, labels = desired_timeslicing(ctx, sorted(nodes))
    assert default == "any" and labels == {"spark": "dgx-spark", "t4": "tesla-t4"}
    spark, t4 = parse_config(data["dgx-spark"]), parse_config(data["tesla-t4"])
    assert (spark.replicas, spark.strategy, spark.advertised_name("nvidia.com/gpu")) == (
        4, "time-slicing", "nvidia.com/gpu.shared")
    assert (t4.replicas, t4.strategy, t4.renamed("nvidia.com/gpu")) == (2, "mps", False)
    assert parse_config(data["any"]).replicas == 4
    assert [desired_resource(ctx, n) for n in ("spark", "t4", "h200")] == [
        "nvidia.com/gpu.shared", "nvidia.com/gpu", "nvidia.com/gpu"]


def test_the_sharing_profile_option_parses_flags() -> None:
    from gpu_conformance.options import _sharing_profiles

    assert _sharing_profiles(["NVIDIA GB10=4,rename", "Tesla T4=2,mps"]) == {
        "NVIDIA GB10": {"replicas": "4", "rename": True, "mps": False},
        "Tesla T4": {"replicas": "2", "rename": False, "mps": True}}
    with pytest.raises(pytest.UsageError, match="unknown flags"):
        _sharing_profiles(["X=2,shared"])


def test_a_fleets_shared_config_is_parsed_once_and_a_bad_one_fails_every_time() -> None:
    """expect.sharing_from parses the time-slicing ConfigMap once per text (every node names the same one); an
    unreadable config is reported for every node, not only the first."""
    good = {"data": {"any": "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n"
                             "      replicas: 4\n"}}
    bad = {"data": {"any": "version: v2\n"}}
    expect._parsed_config.cache_clear()
    for _ in range(3):
        shared = expect.sharing_from({}, None, {"cm": good}, "cm")
        assert shared.config is not None and shared.config.replicas == 4
    info = expect._parsed_config.cache_info()
    assert (info.misses, info.hits) == (1, 2), info
    for _ in range(2):
        broken = expect.sharing_from({}, None, {"cm": bad}, "cm")
        assert broken.config is None and "unreadable" in broken.source and "version must be v1" in broken.source
