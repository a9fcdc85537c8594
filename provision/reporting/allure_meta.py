"""Environment and failure categories for the Allure reports, in the forms Allure 3 reads.

Found by reading and running the Allure 3 command-line tool (npm ``allure`` 3.18, default "awesome" report):

* Environment: Allure 3 still reads ``environment.properties`` (and ``environment.xml``) from a results folder
  and shows it as the report's "Metadata" block; the config's ``environment`` key is something else (the name
  of an execution environment for multi-environment reports), so it is not used here.
  :func:`write_environment` writes ``environment.properties`` into a results folder.
* Categories: the awesome report ignores ``categories.json`` in the results folder (only the Allure 2 "classic"
  report reads it); Allure 3 takes categories from the config file (``allurerc.json`` key ``categories``),
  with ``matchers`` (statuses, message / trace regex, labels). :func:`allure_config` puts them there, and
  :func:`write_categories_json` still writes the Allure 2 file for anyone opening the results with Allure 2.

The message patterns are written so that the same string works as an Allure 3 (JavaScript ``RegExp.test``),
Allure 2 (Java ``Pattern.matches``, whole message) and Python (``re.search``) pattern: anchored lookaheads,
case folded by character classes, no inline flags.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.atomic import write_atomic
from provision.reporting import NODE_LABEL

FAMILY_LABEL = "failure_family"
"""Allure label a step may set (``allure.dynamic.label("failure_family", "<id>")``) to pick a family exactly."""

CLUSTER_WIDE_NODE_VALUE = "(cluster-wide)"
"""``node`` label given by default to cluster-wide results in the whole-run report (not a valid node name)."""

PROBLEM_STATUSES = ("failed", "broken")

_MISSING = ("missing", "not found", "not configured", "not registered", "not installed", "absent", "no such")


@dataclass(frozen=True)
class FailureFamily:
    """A known way for a GPU node to fail conformance.

    ``clauses``: the message matches when, for any one clause, every group of the clause has one of its
    literal alternatives somewhere in the message (case-insensitive, any order).
    """

    id: str
    name: str
    description: str
    clauses: tuple[tuple[tuple[str, ...], ...], ...]

    @property
    def message_regex(self) -> str:
        return _clauses_regex(self.clauses)

    def matches(self, message: str) -> bool:
        return re.search(self.message_regex, message or "") is not None


def _literal(text: str) -> str:
    out = []
    for ch in text:
        if ch.isascii() and ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        elif ch.isascii() and (ch.isdigit() or ch == " "):
            out.append(ch)
        elif ch.isascii():
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _clauses_regex(clauses: tuple[tuple[tuple[str, ...], ...], ...]) -> str:
    alternatives = []
    for clause in clauses:
        alternatives.append("".join("(?=[\\s\\S]*?(?:" + "|".join(_literal(a) for a in group) + "))" for group in clause))
    return "^(?:" + "|".join(alternatives) + ")[\\s\\S]*$"


FAILURE_FAMILIES: tuple[FailureFamily, ...] = (
    FailureFamily(
        id="containerd-runtime-missing",
        name="containerd runtime missing",
        description="containerd has no nvidia runtime handler (RuntimeClass nvidia cannot start pods)",
        clauses=(
            (("containerd",), ("runtime", "handler"), _MISSING),
            (("no runtime for",),),
            (("runtimeclass", "runtime class", "runtime handler"), (*_MISSING, "unknown")),
        ),
    ),
    FailureFamily(
        id="dropin-version-mismatch",
        name="drop-in version mismatch",
        description="a containerd config drop-in has a config version other than the main config's",
        clauses=((("drop-in", "dropin", "drop in"), ("version", "mismatch")),),
    ),
    FailureFamily(
        id="time-slicing-not-applied",
        name="time-slicing not applied",
        description="the device plugin's time-slicing config is not in effect (replicas not advertised)",
        clauses=(
            (("time-slicing", "time slicing", "timeslicing", "time-sliced", "timesliced"),),
            (("sharing",), ("not applied", "replicas")),
        ),
    ),
    FailureFamily(
        id="gpus-not-advertised",
        name="GPUs not advertised",
        description="the node does not advertise nvidia.com/gpu (capacity / allocatable missing or 0)",
        clauses=(
            (("gpus not advertised", "gpu not advertised", "not advertising"),),
            (("nvidia.com/gpu",), ("not advertised", "=0", "= 0", " 0 ", "is 0", "allocatable", "capacity", *_MISSING)),
        ),
    ),
    FailureFamily(
        id="dcgm-unreachable",
        name="DCGM unreachable",
        description="the DCGM exporter cannot be reached or returns no metrics",
        clauses=(
            (
                ("dcgm",),
                (
                    "unreachable",
                    "not reachable",
                    "connection",
                    "refused",
                    "timed out",
                    "timeout",
                    "no route",
                    "no metrics",
                    "unavailable",
                ),
            ),
        ),
    ),
    FailureFamily(
        id="driver-missing",
        name="driver missing",
        description="the NVIDIA driver is not installed or not loaded on the node",
        clauses=(
            (("driver",), ("not loaded", "not present", *_MISSING)),
            (
                ("nvidia-smi",),
                ("not found", "no such file", "has failed", "couldn't communicate", "could not communicate"),
            ),
        ),
    ),
)

OTHER_FAILED = ("other-non-conformance", "other non-conformance", "failed checks not in a known family")
OTHER_BROKEN = ("could-not-check", "could not check", "broken checks (provisioning / reachability errors)")


def classify(message: str | None, labels: Mapping[str, str] | None = None) -> FailureFamily | None:
    """The known family of a failure message (or of a ``failure_family`` label), as the reports classify it."""
    by_id = {f.id: f for f in FAILURE_FAMILIES}
    if labels and labels.get(FAMILY_LABEL) in by_id:
        return by_id[labels[FAMILY_LABEL]]
    for family in FAILURE_FAMILIES:
        if family.matches(message or ""):
            return family
    return None


def allure3_categories(*, group_by_node: bool = False) -> list[dict[str, Any]]:
    """Categories for the Allure 3 config (``categories`` key); first match wins, as in Allure 3."""
    group_by: list[Any] = [{"label": NODE_LABEL}] if group_by_node else []
    statuses = list(PROBLEM_STATUSES)
    rules: list[dict[str, Any]] = []
    for family in FAILURE_FAMILIES:
        rules.append(
            {
                "id": family.id,
                "name": family.name,
                "matchers": [
                    {"statuses": statuses, "labels": {FAMILY_LABEL: f"^{re.escape(family.id)}$"}},
                    {"statuses": statuses, "message": family.message_regex},
                ],
                "groupBy": group_by,
            }
        )
    for (cid, name, _), status in ((OTHER_FAILED, "failed"), (OTHER_BROKEN, "broken")):
        rules.append({"id": cid, "name": name, "matchers": {"statuses": [status]}, "groupBy": group_by})
    return rules


def allure2_categories() -> list[dict[str, Any]]:
    """The same families as an Allure 2 ``categories.json`` (whole-message regex, as Java's matches())."""
    cats: list[dict[str, Any]] = [
        {
            "name": f.name,
            "description": f.description,
            "matchedStatuses": list(PROBLEM_STATUSES),
            "messageRegex": f.message_regex,
        }
        for f in FAILURE_FAMILIES
    ]
    cats.append({"name": OTHER_FAILED[1], "description": OTHER_FAILED[2], "matchedStatuses": ["failed"]})
    cats.append({"name": OTHER_BROKEN[1], "description": OTHER_BROKEN[2], "matchedStatuses": ["broken"]})
    return cats




def write_categories_json(results_dir: Path | str) -> Path:
    return write_atomic(Path(results_dir) / "categories.json", json.dumps(allure2_categories(), indent=1) + "\n")


def _str(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value)


def driver_versions_summary(driver_versions: Mapping[str, str]) -> str:
    """``"550.54.15 (998 nodes), 535.161.08 (2 nodes)"``: readable for any number of nodes."""
    if not driver_versions:
        return "none"
    counts = Counter(_str(v) for v in driver_versions.values())
    parts = [f"{v} ({n} node{'s' if n != 1 else ''})" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ", ".join(parts)


def environment_items(summary: Mapping[str, Any], node: str | None = None) -> dict[str, str]:
    """What the Allure "Metadata" block shows: the summary's environment, narrowed to ``node`` when given.

    Allure 3 shows the first 8 entries (the rest behind "Show more") and cuts names after ~14 characters:
    the node's own facts come first and the names are short.
    """
    env = summary.get("environment") or {}
    drivers = env.get("driver_versions") or {}
    items: dict[str, str] = {}
    if node is not None:
        items["node"] = node
        items["driver"] = _str(drivers.get(node, "unknown"))
    items["cluster"] = _str(env.get("cluster"))
    if node is None:
        items["drivers"] = driver_versions_summary(drivers)
    items |= {
        "run": _str(summary.get("run_id")),
        "mode": _str(summary.get("mode") or env.get("mode")),
        "kubernetes": _str(env.get("kubernetes_version")),
        "operator chart": _str(env.get("operator_chart_version")),
        "suite": _str(env.get("suite_version")),
        "started": _str(summary.get("started")),
        "finished": _str(summary.get("finished")),
    }
    return items


def _prop_escape(text: str, *, key: bool) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\f":
            out.append("\\f")
        elif ch in "=:#!" or (ch == " " and (key or i == 0)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            out.extend(f"\\u{unit:04x}" for unit in _utf16_units(ch))
        else:
            out.append(ch)
    return "".join(out)


def _utf16_units(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def properties_text(items: Mapping[str, str]) -> str:
    """Java .properties text (ASCII, escaped) as both Allure 2 and Allure 3 parse it."""
    return "".join(f"{_prop_escape(k, key=True)}={_prop_escape(v, key=False)}\n" for k, v in items.items())


def write_environment(results_dir: Path | str, summary: Mapping[str, Any], node: str | None = None) -> Path:
    """Write ``environment.properties`` for one results folder (``node`` None: cluster / whole run)."""
    return write_atomic(Path(results_dir) / "environment.properties", properties_text(environment_items(summary, node)))


def allure_config(
    *,
    name: str,
    history_path: Path | str | None = None,
    history_limit: int | None = None,
    whole_run: bool = False,
    single_file: bool = False,
) -> dict[str, Any]:
    """An Allure 3 config (the content of an ``allurerc.json``) for one report.

    ``whole_run``: group the tree and the categories by node, and give cluster-wide results the node
    ``(cluster-wide)`` so they form their own group. ``single_file``: the awesome report's ``singleFile``
    option: one ``index.html`` with the app and the data inlined, which opens from disk (``file://``).
    """
    # Tree by feature (per node first in the whole-run report) rather than by the feature file's folder.
    group_by = [NODE_LABEL, "feature"] if whole_run else ["feature"]
    options: dict[str, Any] = {"reportName": name, "reportLanguage": "en", "groupBy": group_by}
    if single_file:
        options["singleFile"] = True
    config: dict[str, Any] = {
        "name": name,
        "hideLabels": ["thread"],
        "plugins": {"awesome": {"options": options}},
        "categories": allure3_categories(group_by_node=whole_run),
    }
    if whole_run:
        config["defaultLabels"] = {NODE_LABEL: CLUSTER_WIDE_NODE_VALUE}
    if history_path is not None:
        config["historyPath"] = str(history_path)
        if history_limit is not None:
            config["historyLimit"] = history_limit
    return config


def write_allure_config(path: Path | str, config: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(config, indent=1) + "\n")
