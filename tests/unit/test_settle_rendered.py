"""After a helm upgrade the operand DaemonSets are the previous operator's until the new one has reconciled,
and the pods of a previous template run the previous configuration: neither counts as settled."""

from __future__ import annotations

from provision.converge.settle import not_rendered, pending_pods

CP = {"spec": {"toolkit": {"repository": "nvcr.io/nvidia/k8s", "image": "container-toolkit", "version": "v1.20.0"}}}
APP = "nvidia-container-toolkit-daemonset"


def _ds(image: str, generation: int = 2, observed: int = 2) -> dict:
    return {"metadata": {"name": APP, "generation": generation},
            "spec": {"template": {"spec": {"containers": [{"name": "nvidia-container-toolkit-ctr", "image": image}]}}},
            "status": {"observedGeneration": observed}}


def _pod(generation: str, ready: bool = True) -> dict:
    return {"metadata": {"name": "tk-1", "labels": {"app": APP, "pod-template-generation": generation}},
            "spec": {"nodeName": "gpu-a"},
            "status": {"startTime": "2026-12-01T00:00:00Z", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_a_daemonset_with_the_previous_image_is_not_rendered_yet():
    missing = not_rendered(CP, {APP: _ds("nvcr.io/nvidia/k8s/container-toolkit:v1.19.0")}, [APP])
    assert missing and "asks for .../container-toolkit:v1.20.0" in missing[0]
    assert not_rendered(CP, {APP: _ds("nvcr.io/nvidia/k8s/container-toolkit:v1.20.0")}, [APP]) == []


def test_a_generation_the_daemonset_controller_has_not_seen_is_not_settled():
    missing = not_rendered(CP, {APP: _ds("nvcr.io/nvidia/k8s/container-toolkit:v1.20.0", 3, 2)}, [APP])
    assert missing == [f"{APP}: generation 3 not yet seen by the DaemonSet controller"]


def test_a_missing_daemonset_is_not_rendered():
    assert not_rendered(CP, {}, [APP]) == [f"{APP}: DaemonSet not created yet"]


def test_a_ready_pod_of_the_previous_template_does_not_count():
    old = _pod("1")
    assert pending_pods([old], [APP], ["gpu-a"], 0.0, 30.0) == []            # without generations: counts
    assert pending_pods([old], [APP], ["gpu-a"], 0.0, 30.0, {APP: "2"}) == [f"{APP} on gpu-a: not started"]
    assert pending_pods([old, _pod("2")], [APP], ["gpu-a"], 0.0, 30.0, {APP: "2"}) == []


def _plugin_ds(volumes: list[dict], default: str | None, generation: int = 3, observed: int = 3) -> dict:
    env = [] if default is None else [{"name": "DEFAULT_CONFIG", "value": default}]
    return {"metadata": {"name": "nvidia-device-plugin-daemonset", "generation": generation},
            "spec": {"template": {"spec": {"volumes": volumes, "initContainers": [
                {"name": "config-manager-init", "env": env}], "containers": [{"name": "nvidia-device-plugin"}]}}},
            "status": {"observedGeneration": observed}}


def test_the_plugin_daemonset_is_rendered_only_with_the_configmap_mounted_and_the_default_set():
    from provision.converge.cluster import plugin_not_rendered

    cm = [{"name": "time-slicing-config", "configMap": {"name": "time-slicing-config"}}]
    assert "not mounted yet" in plugin_not_rendered(_plugin_ds([], None), "time-slicing-config", "any")
    assert "DEFAULT_CONFIG" in plugin_not_rendered(_plugin_ds(cm, "other"), "time-slicing-config", "any")
    assert "not yet seen" in plugin_not_rendered(_plugin_ds(cm, "any", 4, 3), "time-slicing-config", "any")
    assert plugin_not_rendered(_plugin_ds(cm, "any"), "time-slicing-config", "any") is None
    assert "not created" in plugin_not_rendered(None, "time-slicing-config", "any")
