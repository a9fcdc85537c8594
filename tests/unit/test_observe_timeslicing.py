from __future__ import annotations

import pytest
import yaml

from provision.observe.timeslicing import (
    MAX_REPLICAS,
    InvalidReplicas,
    TimeSlicingConfig,
    TimeSlicingError,
    parse_config,
    render_config,
    validate_replicas,
)

# The shape of the GPU Operator docs' time-slicing example (gpu-sharing.rst, "time-slicing-config-all").
DOCS_ALL = """\
version: v1
flags:
  migStrategy: none
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
"""

# The original playbooks' "default" key: version v1 and no sharing.
NO_SHARING = "version: v1\n"

BASE_MESSAGE = "replicas must be an integer >= 2 (time-slicing shares each GPU between that many pods); got "


def test_docs_example() -> None:
    cfg = parse_config(DOCS_ALL)
    assert cfg == TimeSlicingConfig(
        version="v1",
        replicas=4,
        rename_by_default=False,
        fail_requests_greater_than_one=False,
        mig_strategy="none",
        resources={"nvidia.com/gpu": 4},
    )
    assert cfg.shares_gpus


def test_default_key_without_sharing() -> None:
    cfg = parse_config(NO_SHARING)
    assert cfg.replicas is None
    assert not cfg.shares_gpus
    assert cfg.resources == {}


def test_flags_and_mig_resources() -> None:
    text = """
version: v1
sharing:
  timeSlicing:
    renameByDefault: true
    failRequestsGreaterThanOne: true
    resources:
    - name: nvidia.com/mig-1g.5gb
      replicas: "3"
"""
    cfg = parse_config(text)
    assert cfg.rename_by_default is True
    assert cfg.fail_requests_greater_than_one is True
    assert cfg.replicas is None  # no nvidia.com/gpu entry
    assert cfg.resources == {"nvidia.com/mig-1g.5gb": 3}
    assert cfg.mig_strategy is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2), (4, 4), (MAX_REPLICAS, MAX_REPLICAS), ("4", 4), (" 16 ", 16), ("+8", 8)],
)
def test_validate_replicas_accepts(value: object, expected: int) -> None:
    assert validate_replicas(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("four", "'four'"),
        (0, "0"),
        (1, "1"),
        (-1, "-1"),
        ("1", "'1'"),
        ("-3", "'-3'"),
        (True, "True"),
        (False, "False"),
        (4.0, "4.0"),
        (2.5, "2.5"),
        (None, "None"),
        ("", "''"),
        ("4 pods", "'4 pods'"),
        ([4], "[4]"),
        ("\u0664", "'\u0664'"),  # ARABIC-INDIC DIGIT FOUR: int() takes it, YAML and the device plugin do not
    ],
)
def test_validate_replicas_rejects_with_a_message_that_says_what_to_fix(value: object, shown: str) -> None:
    with pytest.raises(InvalidReplicas) as info:
        validate_replicas(value)
    assert str(info.value) == BASE_MESSAGE + shown


@pytest.mark.parametrize("value", [MAX_REPLICAS + 1, 10**9, "100000"])
def test_validate_replicas_rejects_absurd_numbers(value: object) -> None:
    with pytest.raises(InvalidReplicas, match=rf"^replicas must be at most {MAX_REPLICAS} .*; got {value!r}$"):
        validate_replicas(value)


def test_invalid_replicas_is_a_value_error() -> None:
    assert issubclass(InvalidReplicas, TimeSlicingError)
    assert issubclass(InvalidReplicas, ValueError)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            DOCS_ALL.replace("replicas: 4", "replicas: 1"),
            InvalidReplicas,
            r"resources\[0\] \(nvidia.com/gpu\): " + r"replicas must be an integer >= 2 .*; got 1$",
        ),
        (DOCS_ALL.replace("replicas: 4", "replicas: four"), InvalidReplicas, r"got 'four'$"),
        (DOCS_ALL.replace("      replicas: 4\n", ""), InvalidReplicas, r"got None$"),
        (DOCS_ALL.replace("v1", "v2"), TimeSlicingError, r"version must be v1 .*got 'v2'"),
        (DOCS_ALL.replace("version: v1\n", ""), TimeSlicingError, r"version must be v1"),
        (DOCS_ALL.replace("migStrategy: none", "migStrategy: all"), TimeSlicingError, r"migStrategy must be one of"),
        (DOCS_ALL + "    - name: nvidia.com/gpu\n      replicas: 2\n", TimeSlicingError, r"listed twice"),
        ("version: v1\nsharing:\n  timeSlicing:\n    resources: []\n", TimeSlicingError, r"non-empty list"),
        (
            "version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: 'no'\n"
            "    resources: [{name: a, replicas: 2}]\n",
            TimeSlicingError,
            r"renameByDefault must be true or false, got 'no'",
        ),
        (
            "version: v1\nsharing:\n  timeSlicing:\n    resources: [{replicas: 2}]\n",
            TimeSlicingError,
            r"resources\[0\] must have a name",
        ),
        ("version: v1\nsharing: [1]\n", TimeSlicingError, r"sharing must be a mapping"),
        ("- version: v1\n", TimeSlicingError, r"expected a mapping"),
        ("version: [v1\n", TimeSlicingError, r"invalid YAML"),
    ],
)
def test_parse_config_errors(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_config(text, source="configmap gpu-operator/time-slicing-config key any")


def test_parse_errors_name_the_source() -> None:
    with pytest.raises(InvalidReplicas, match=r"^configmap gpu-operator/time-slicing-config key any: "):
        text = DOCS_ALL.replace("replicas: 4", "replicas: 0")
        parse_config(text, "configmap gpu-operator/time-slicing-config key any")


def test_render_config_shape() -> None:
    text = render_config(4)
    assert yaml.safe_load(text) == {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": False,
                "resources": [{"name": "nvidia.com/gpu", "replicas": 4}],
            }
        },
    }
    assert text.startswith("version: v1\nflags:\n  migStrategy: none\nsharing:\n")


@pytest.mark.parametrize(("replicas", "rename", "fail"), [(2, False, False), ("8", True, False), (1024, False, True)])
def test_render_then_parse_round_trip(replicas: int | str, rename: bool, fail: bool) -> None:
    cfg = parse_config(render_config(replicas, rename_by_default=rename, fail_requests_greater_than_one=fail))
    assert cfg.replicas == int(replicas)
    assert cfg.rename_by_default is rename
    assert cfg.fail_requests_greater_than_one is fail
    assert cfg.mig_strategy == "none"


def test_render_refuses_bad_values() -> None:
    with pytest.raises(InvalidReplicas, match=r"got 1$"):
        render_config(1)
    with pytest.raises(TimeSlicingError, match="rename_by_default must be True or False, got 'yes'"):
        render_config(4, rename_by_default="yes")  # type: ignore[arg-type]
