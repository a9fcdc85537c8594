"""provision/settings.py: pydantic checks the desired state; every refusal names the setting, the bad value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.settings import DEFAULT_HEALTH, DEFAULT_TIMEOUTS, HealthTable, Settings, SettingsError, TimeoutTable, validate


@pytest.mark.parametrize(("raw", "message"), [
    ({"mode": "apply"}, "invalid setting mode='apply': one of ('audit', 'provision', 'plan', 'rollback')"),
    ({"replicas": "four"}, "invalid setting replicas='four': replicas must be an integer >= 2"),
    ({"namespace": "GPU_Operator"}, "invalid setting namespace='GPU_Operator': a namespace is a DNS-1123 label"),
    ({"chart_version": "26.3.0"}, "invalid setting chart_version='26.3.0': GPU Operator chart versions look like v26.3.0"),
    ({"min_driver": True}, "invalid setting min_driver=True: the minimum driver is a major version number such as 470"),
    ({"min_driver": 99}, "invalid setting min_driver=99: the minimum driver is a major version"),
    ({"min_compute_capability": "seven"}, "invalid setting min_compute_capability='seven': a compute capability like 7.0"),
    ({"gpu_nodes": ["gpu-a", "gpu;reboot"]}, "invalid setting gpu_nodes='gpu;reboot': a node name must be a DNS-1123"),
    ({"expected_gpus": {"Gpu-A": 1}}, "invalid setting expected_gpus='Gpu-A': a node name must be a DNS-1123 subdomain"),
    ({"expected_gpus": {"gpu-a": -1}}, "invalid setting expected_gpus['gpu-a']=-1: an integer count of physical GPUs"),
    ({"host_backend": "telnet"}, "invalid setting host_backend='telnet': one of ('none', 'lab', 'local'"),
    ({"timeouts": {"helm": 0}}, "invalid setting timeouts.helm=0: a positive number of seconds"),
    ({"timeouts": {"hlem": 5}}, "invalid setting timeouts.hlem: unknown key; known timeouts: ['advertise', 'api'"),
    ({"health": {"xid_window_h": -1}}, "invalid setting health.xid_window_h=-1: a number (hours"),
    ({"health": {"persistence_mode": "on"}}, "invalid setting health.persistence_mode='On': \"Enabled\" or \"Disabled\""),
    ({"sharing_profiles": {"T4": {}}}, "invalid setting sharing_profiles['T4'].replicas: missing; time-slicing replicas"),
    ({"sharing_profiles": {"T4": {"replicas": 2, "mps": "yes"}}}, "invalid setting sharing_profiles['T4'].mps='yes': true"),
    ({"mig_strategies": {"gpu-b": "both"}}, "invalid setting mig_strategies['gpu-b']='both': a table of node name or GPU"),
    ({"host_pod_creates_per_s": 0}, "invalid setting host_pod_creates_per_s=0: access pods created per second"),
    ({"switch_stack": "yes"}, "invalid setting switch_stack='yes': true or false"),
    ({"pushgateway_job": "a/b"}, "invalid setting pushgateway_job='a/b': a job name without '/'"),
    ({"kubeconfig": "/no/such/kubeconfig"}, "invalid setting kubeconfig='/no/such/kubeconfig': no such file; pass --kubeconfig"),
    ({"host_backend": "ansible"}, "invalid setting host_backend='ansible': the ansible backend needs --ansible-inventory"),
    ({"host_only": True, "mode": "provision"}, "invalid setting mode='provision': --host-only checks a host without"),
])
def test_a_bad_setting_names_key_value_and_fix(raw: dict, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        validate(raw)
    assert message in str(err.value)


def test_every_problem_is_one_line() -> None:
    with pytest.raises(SettingsError) as err:
        validate({"mode": "apply", "replicas": 1, "dcgm_access": "ssh"})
    lines = str(err.value).splitlines()
    assert [line.split("=")[0] for line in lines] == ["invalid setting mode", "invalid setting replicas",
                                                     "invalid setting dcgm_access"]


def test_unknown_setting_lists_the_known_ones() -> None:
    with pytest.raises(SettingsError, match=r"unknown settings \['replica'\]; known settings: \[.*'replicas'"):
        validate({"replica": 4})


def test_values_are_normalised_and_tables_get_their_defaults() -> None:
    s = validate({"replicas": "3", "min_driver": "525", "gpu_nodes": ["b-1", "a-1"], "min_compute_capability": 7.5,
                  "timeouts": {"helm": 60}, "health": {"critical_xids": [79, 48, 79], "persistence_mode": "enabled"},
                  "sharing_profiles": {"NVIDIA GB10": "4"}, "context": None})
    assert isinstance(s, Settings)
    assert (s.replicas, s.min_driver, s.gpu_nodes, s.min_compute_capability) == (3, 525, ("b-1", "a-1"), "7.5")
    assert s.timeouts == {**DEFAULT_TIMEOUTS, "helm": 60.0}
    assert s.health == {**DEFAULT_HEALTH, "critical_xids": (48, 79), "persistence_mode": "Enabled"}
    assert s.sharing_profiles == {"NVIDIA GB10": {"replicas": 4, "rename": False, "mps": False}}
    assert s.context is None  # None is "not given"


def test_reporting_paths_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"invalid setting previous_run=.*holding summary\.json"):
        validate({"previous_run": str(tmp_path)})
    (tmp_path / "summary.json").write_text("{}")
    assert validate({"previous_run": str(tmp_path)}).previous_run == str(tmp_path)


def test_the_table_types_cover_every_default() -> None:
    assert set(TimeoutTable.__annotations__) == set(DEFAULT_TIMEOUTS)
    assert set(HealthTable.__annotations__) == set(DEFAULT_HEALTH)
