from __future__ import annotations

import pytest

from provision.observe.docker_daemon import (
    NVIDIA_RUNTIME,
    DaemonJsonError,
    diff,
    has_nvidia_runtime,
    merge_nvidia_runtime,
    parse,
    render,
)

# A daemon.json as found on a Docker host with settings of its own (log rotation, a mirror, another runtime).
EXISTING = """{
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"},
  "registry-mirrors": ["https://mirror.example.org"],
  "runtimes": {"crun": {"path": "/usr/bin/crun"}},
  "default-runtime": "runc",
  "features": {"buildkit": true}
}
"""


def test_nvidia_runtime_value() -> None:
    assert NVIDIA_RUNTIME == {"path": "nvidia-container-runtime", "runtimeArgs": []}


@pytest.mark.parametrize("text", ["", "   \n\t\n"])
def test_empty_file_is_an_empty_config(text: str) -> None:
    assert parse(text) == {}


def test_parse_keeps_key_order() -> None:
    cfg = parse(EXISTING)
    assert list(cfg) == ["log-driver", "log-opts", "registry-mirrors", "runtimes", "default-runtime", "features"]
    assert cfg["log-opts"] == {"max-size": "10m", "max-file": "3"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,}', r"^/etc/docker/daemon.json: invalid JSON at line 1 column 8: trailing comma"),
        ('{\n  "a": 1\n  "b": 2\n}', r"invalid JSON at line 3 column 3: Expecting ',' delimiter"),
        ("[1, 2]", r"the top level must be a JSON object, got list"),
        ("null", r"the top level must be a JSON object, got NoneType"),
        ('"runtimes"', r"got str"),
    ],
)
def test_parse_errors_name_the_file(text: str, message: str) -> None:
    with pytest.raises(DaemonJsonError, match=message):
        parse(text)


def test_parse_error_uses_the_given_path() -> None:
    with pytest.raises(DaemonJsonError, match=r"^/srv/docker/daemon.json: "):
        parse("{", "/srv/docker/daemon.json")


def test_merge_keeps_every_other_setting_and_other_runtimes() -> None:
    before = parse(EXISTING)
    after = merge_nvidia_runtime(before)
    assert after["runtimes"] == {"crun": {"path": "/usr/bin/crun"}, "nvidia": NVIDIA_RUNTIME}
    for key in ("log-driver", "log-opts", "registry-mirrors", "default-runtime", "features"):
        assert after[key] == before[key]
    assert list(after) == list(before)  # order kept
    assert "nvidia" not in before["runtimes"]  # input not modified
    assert has_nvidia_runtime(after) and not has_nvidia_runtime(before)


def test_merge_into_an_empty_config_and_replacing_a_wrong_nvidia_entry() -> None:
    assert merge_nvidia_runtime({}) == {"runtimes": {"nvidia": NVIDIA_RUNTIME}}
    wrong = {"runtimes": {"nvidia": {"path": "/opt/old/nvidia-runtime", "runtimeArgs": ["--debug"]}}}
    # a broken entry gets its path fixed; the keys its owner wrote stay (merge, never replace)
    assert merge_nvidia_runtime(wrong) == {"runtimes": {"nvidia": {"path": "nvidia-container-runtime",
                                                                   "runtimeArgs": ["--debug"]}}}
    merged = merge_nvidia_runtime({})
    merged["runtimes"]["nvidia"]["runtimeArgs"].append("x")
    assert NVIDIA_RUNTIME["runtimeArgs"] == []  # the constant is not shared


def test_merge_refuses_a_runtimes_value_that_is_not_an_object() -> None:
    with pytest.raises(DaemonJsonError, match="runtimes must be a JSON object, got list"):
        merge_nvidia_runtime({"runtimes": ["nvidia"]})


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}}, True),
        ({"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}}, True),
        ({"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}, True),  # as nvidia-ctk writes
        ({"runtimes": {"nvidia": {"path": "/usr/bin/runc"}}}, False),
        ({"runtimes": {"nvidia": "nvidia-container-runtime"}}, False),
        ({"runtimes": {"crun": {"path": "/usr/bin/crun"}}}, False),
        ({"runtimes": []}, False),
        ({"default-runtime": "nvidia"}, False),
        ({}, False),
    ],
)
def test_has_nvidia_runtime(cfg: dict[str, object], expected: bool) -> None:
    assert has_nvidia_runtime(cfg) is expected


def test_diff_of_the_merge() -> None:
    before = parse(EXISTING)
    assert diff(before, merge_nvidia_runtime(before)) == [
        'add runtimes.nvidia = {"path": "nvidia-container-runtime", "runtimeArgs": []}'
    ]
    assert diff({}, merge_nvidia_runtime({})) == [
        'add runtimes = {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}'
    ]
    merged = merge_nvidia_runtime(before)
    assert diff(merged, merge_nvidia_runtime(merged)) == []


def test_diff_change_remove_and_type_change() -> None:
    before = {"log-level": "info", "debug": True, "mtu": 1500, "x": {"y": 1}, "old": [1]}
    after = {"log-level": "debug", "debug": 1, "mtu": 1500, "x": {"y": 2}}
    assert diff(before, after) == [
        'change log-level: "info" -> "debug"',
        "change debug: true -> 1",
        "change x.y: 1 -> 2",
        "remove old (was [1])",
    ]


def test_render_format_and_round_trip() -> None:
    cfg = merge_nvidia_runtime(parse(EXISTING))
    text = render(cfg)
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert text.splitlines()[1] == '  "log-driver": "json-file",'
    assert '    "nvidia": {\n      "path": "nvidia-container-runtime",\n      "runtimeArgs": []\n    }' in text
    assert parse(text) == cfg
    assert list(parse(text)) == list(cfg)
    assert render({}) == "{}\n"
