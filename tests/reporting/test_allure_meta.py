from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from provision.reporting.allure_html import REPO_ROOT
from provision.reporting.allure_meta import (
    FAILURE_FAMILIES,
    allure2_categories,
    allure3_categories,
    classify,
    driver_versions_summary,
    environment_items,
    properties_text,
)

EXAMPLES = {
    "containerd-runtime-missing": [
        'containerd on gpu-node-3 has no nvidia runtime: runtime "nvidia" missing from config.toml',
        'failed to create pod sandbox: no runtime for "nvidia" is configured',
        "RuntimeClass nvidia: handler not found",
    ],
    "dropin-version-mismatch": ["containerd drop-in /etc/containerd/conf.d/99-nvidia.toml has version 2, main 3"],
    "time-slicing-not-applied": ["Time-slicing not applied: nvidia.com/gpu=8, expected 32 replicas"],
    "gpus-not-advertised": [
        "AssertionError: GPUs not advertised: node gpu-node-b reports nvidia.com/gpu=0 (expected 8)",
        "node gpu-1: nvidia.com/gpu missing from allocatable",
    ],
    "dcgm-unreachable": ["ConnectionError: DCGM exporter unreachable on gpu-node-c:9400: connection refused"],
    "driver-missing": [
        "NVIDIA driver not loaded (lsmod shows no nvidia module)",
        "nvidia-smi: command not found",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
    ],
}
UNRELATED = ["", "AssertionError: expected 3 nodes, got 2", "helm release gpu-operator not deployed"]


def test_every_family_has_examples() -> None:
    assert set(EXAMPLES) == {f.id for f in FAILURE_FAMILIES}


@pytest.mark.parametrize(("family", "message"), [(k, m) for k, ms in EXAMPLES.items() for m in ms])
def test_messages_classified(family: str, message: str) -> None:
    found = classify(message)
    assert found is not None and found.id == family
    # Allure 2 (Java matches()) needs the whole message to match: a full match must hold too.
    assert re.fullmatch(found.message_regex, message)


@pytest.mark.parametrize("message", UNRELATED)
def test_unrelated_messages_not_classified(message: str) -> None:
    assert classify(message) is None


def test_family_label_wins() -> None:
    family = classify("anything at all", {"failure_family": "dcgm-unreachable"})
    assert family is not None and family.id == "dcgm-unreachable"


def test_patterns_behave_the_same_in_javascript() -> None:
    """Allure 3 applies the patterns with JavaScript's RegExp: run them through node."""
    messages = [m for ms in EXAMPLES.values() for m in ms] + UNRELATED
    patterns = {f.id: f.message_regex for f in FAILURE_FAMILIES}
    script = (
        "const {patterns, messages} = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const out = messages.map(m => Object.keys(patterns).filter(k => new RegExp(patterns[k]).test(m)));"
        "process.stdout.write(JSON.stringify(out));"
    )
    proc = subprocess.run(
        ["node", "-e", script],
        input=json.dumps({"patterns": patterns, "messages": messages}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    js = json.loads(proc.stdout)
    py = [[f.id for f in FAILURE_FAMILIES if f.matches(m)] for m in messages]
    assert js == py


def test_categories_forms() -> None:
    a3 = allure3_categories()
    assert [c["id"] for c in a3[: len(FAILURE_FAMILIES)]] == [f.id for f in FAILURE_FAMILIES]
    assert all(c["matchers"] for c in a3)
    a2 = allure2_categories()
    assert {c["name"] for c in a2} >= {f.name for f in FAILURE_FAMILIES}
    assert all("matchedStatuses" in c for c in a2)


SUMMARY = {
    "run_id": "r1",
    "mode": "audit",
    "started": "2026-11-29T08:00:00+00:00",
    "finished": "2026-11-29T08:01:00+00:00",
    "environment": {
        "cluster": "lab = one: #1",
        "kubernetes_version": "v1.32.2",
        "operator_chart_version": None,
        "driver_versions": {"n1": "550.54.15", "n2": "550.54.15", "n3": "535.161.08"},
        "suite_version": " 0.1.0\nline2 \u00e9\U0001f680",
        "mode": "audit",
    },
    "results": [],
}


def test_environment_items() -> None:
    node = environment_items(SUMMARY, "n3")
    assert list(node)[:3] == ["node", "driver", "cluster"]
    assert node["driver"] == "535.161.08" and node["node"] == "n3"
    assert node["operator chart"] == "none"
    whole = environment_items(SUMMARY)
    assert "node" not in whole and list(whole)[:2] == ["cluster", "drivers"]
    assert whole["drivers"] == "550.54.15 (2 nodes), 535.161.08 (1 node)"
    assert driver_versions_summary({}) == "none"


def test_properties_parse_back_with_allures_own_parser(tmp_path: Path) -> None:
    """environment.properties as Allure 3's reader (node_modules/@allurereport/reader) parses it."""
    items = environment_items(SUMMARY, "n1") | {"key with space=:": "v"}
    (tmp_path / "environment.properties").write_text(properties_text(items), encoding="utf-8")
    reader = REPO_ROOT / "node_modules" / "@allurereport" / "reader" / "dist" / "properties.js"
    script = (
        f"import {{ parseProperties }} from {json.dumps(reader.as_uri())};"
        "import { readFileSync } from 'node:fs';"
        "process.stdout.write(JSON.stringify(parseProperties(readFileSync(process.argv[1], 'utf8'))));"
    )
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(tmp_path / "environment.properties")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(proc.stdout) == items
