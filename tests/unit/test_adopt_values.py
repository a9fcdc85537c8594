"""Adopting a release someone else installed: values merged with the release's own (provision/converge/adopt.py),
and the audit's verdict: observation first, drift second (steps/support.py observed_verdict)."""

from __future__ import annotations

from provision.checks import Finding
from provision.converge.adopt import merge_values
from steps.support import observed_verdict

SNAP = "/var/lib/k8s-containerd/k8s-containerd"
PLAYBOOKS = {"driver": {"enabled": False}, "toolkit": {"env": [
    {"name": "CONTAINERD_CONFIG", "value": f"{SNAP}/etc/containerd/config.toml"},
    {"name": "CONTAINERD_SET_AS_DEFAULT", "value": "true"},
    {"name": "RUNTIME_DROP_IN_CONFIG_HOST_PATH", "value": f"{SNAP}/etc/containerd/conf.d"}]},
    "operator": {"defaultRuntime": "containerd"}}
SUITE = {"driver": {"enabled": False}, "toolkit": {"env": [
    {"name": "CONTAINERD_CONFIG", "value": f"{SNAP}/etc/containerd/config.toml"},
    {"name": "RUNTIME_DROP_IN_CONFIG", "value": f"{SNAP}/etc/containerd/conf.d/99-nvidia.toml"},
    {"name": "RUNTIME_CONFIG_SOURCE", "value": "file"}]}, "cdi": {"enabled": True}}


def _env(values: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in values["toolkit"]["env"]}


def test_playbook_values_are_merged_not_replaced():
    effective = {**PLAYBOOKS, "cdi": {"enabled": True}}  # the chart's default for cdi.enabled
    merged, changes, kept = merge_values(PLAYBOOKS, SUITE, effective)
    assert _env(merged) == {"CONTAINERD_CONFIG": f"{SNAP}/etc/containerd/config.toml", "CONTAINERD_SET_AS_DEFAULT": "true",
                            "RUNTIME_DROP_IN_CONFIG_HOST_PATH": f"{SNAP}/etc/containerd/conf.d",
                            "RUNTIME_DROP_IN_CONFIG": f"{SNAP}/etc/containerd/conf.d/99-nvidia.toml",
                            "RUNTIME_CONFIG_SOURCE": "file"}
    assert merged["operator"] == {"defaultRuntime": "containerd"}
    assert changes == [f"toolkit.env RUNTIME_DROP_IN_CONFIG: unset -> '{SNAP}/etc/containerd/conf.d/99-nvidia.toml'",
                       "toolkit.env RUNTIME_CONFIG_SOURCE: unset -> 'file'"]
    assert any(k.startswith("toolkit.env CONTAINERD_SET_AS_DEFAULT='true' (no effect while cdi.enabled=true") for k in kept)
    assert any(k.startswith("toolkit.env RUNTIME_DROP_IN_CONFIG_HOST_PATH=") and "no effect" in k for k in kept)
    assert "operator.defaultRuntime='containerd'" in kept


def test_set_as_default_is_dropped_when_cdi_is_off():
    suite = {**SUITE, "cdi": {"enabled": False}}
    merged, changes, kept = merge_values(PLAYBOOKS, suite, PLAYBOOKS)
    assert "CONTAINERD_SET_AS_DEFAULT" not in _env(merged)
    assert any(c.startswith("toolkit.env CONTAINERD_SET_AS_DEFAULT: 'true' -> unset") for c in changes), changes
    assert "cdi.enabled: unset -> False" in changes
    assert not any("SET_AS_DEFAULT" in k for k in kept)


def test_chart_defaults_install_only_gets_the_suites_keys():
    merged, changes, kept = merge_values({"driver": {"enabled": False}}, SUITE, {"driver": {"enabled": False},
                                                                                 "cdi": {"enabled": True}})
    assert _env(merged) == _env(SUITE) and kept == []
    assert len(changes) == 3 and not any(c.startswith(("driver.", "cdi.")) for c in changes)


def test_a_suite_install_has_nothing_to_change():
    merged, changes, kept = merge_values(SUITE, SUITE)
    assert merged == SUITE and changes == [] and kept == []


def test_verdict_leads_with_the_observation_then_the_drift():
    ok = Finding(True, "expected Ready=True; found Ready=True KubeletReady. Fix: x", observed="node a is Ready (x)")
    assert observed_verdict(ok, []) is None
    observation, message = observed_verdict(ok, ["[a] create /etc/u.service on a"])
    assert observation == "ok"
    assert message.startswith("Observed (as desired): node a is Ready (x). Drift only from the desired state (1 ")
    assert message.endswith("[a] create /etc/u.service on a. Fix: run `pytest features/ --provision` (see --plan "
                            "for the exact changes)")
    bad = Finding(False, "expected Ready=True; found Ready=False: containerd down. Fix: look")
    observation, message = observed_verdict(bad, ["[a] restart containerd on a"])
    assert observation == "failed"
    assert message.startswith("Observed: expected Ready=True; found Ready=False: containerd down. Fix: look. Drift from")
    assert observed_verdict(bad, []) == ("failed", bad.message)


def test_a_failed_observation_with_its_own_words_leads_with_them():
    bad = Finding(False, "expected runc and nvidia; found no nvidia runtime. Fix: x",
                  observed="containerd's effective runtimes on a: runc (default runc)")
    _, message = observed_verdict(bad, ["[a] restart containerd on a"])
    assert message.startswith("Observed: containerd's effective runtimes on a: runc (default runc). Expected runc")


def test_toolkit_dropin_is_read_from_the_rendered_daemonset():
    from provision.converge.operator import toolkit_dropin

    ds = {"spec": {"template": {"spec": {"containers": [{"name": "nvidia-container-toolkit-ctr", "env": [
        {"name": "RUNTIME_DROP_IN_CONFIG", "value": "/runtime/config-dir.d/99-nvidia.toml"},
        {"name": "RUNTIME_DROP_IN_CONFIG_HOST_PATH", "value": f"{SNAP}/etc/containerd/conf.d/99-nvidia.toml"}]}]}}}}
    assert toolkit_dropin(ds) == f"{SNAP}/etc/containerd/conf.d/99-nvidia.toml"
    assert toolkit_dropin({"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}) is None


def test_template_env_names_the_variables_set_to_a_value():
    from provision.converge.cluster import template_env

    ds = {"spec": {"template": {"spec": {
        "initContainers": [{"name": "config-manager-init", "env": [{"name": "DEFAULT_CONFIG", "value": "any"}]}],
        "containers": [{"name": "nvidia-device-plugin", "env": [{"name": "CONFIG_FILE", "value": "/config/config.yaml"}]}]}}}}
    assert template_env(ds, "any") == {"DEFAULT_CONFIG"}
    assert template_env(ds, "default") == set()
