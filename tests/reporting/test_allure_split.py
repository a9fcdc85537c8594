from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.reporting import CLUSTER_KEY
from provision.reporting.allure_split import is_dns1123_subdomain, split_by_node

from .conftest import NODES


def _results(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*-result.json"))]


def _sources(item: Any) -> list[str]:
    out = [a["source"] for a in item.get("attachments", [])]
    for step in item.get("steps", []):
        out += _sources(step)
    return out


def test_split_real_run_one_folder_per_node(bdd_output: tuple[Path, Path], tmp_path: Path) -> None:
    raw, _junit = bdd_output
    folders = split_by_node(raw, tmp_path / "split")
    assert set(folders) == {CLUSTER_KEY, *NODES}
    total = 0
    for key, folder in folders.items():
        results = _results(folder)
        total += len(results)
        for result in results:
            nodes = [lab["value"] for lab in result["labels"] if lab["name"] == "node"]
            assert nodes == ([] if key == CLUSTER_KEY else [key])
            for source in _sources(result):
                assert (folder / source).is_file(), f"{key}: attachment {source} not copied"
    assert total == len(list(raw.glob("*-result.json")))
    assert len(_results(folders[CLUSTER_KEY])) == 1
    assert all(len(_results(folders[n])) == 3 for n in NODES)
    # The faulty node's nvidia-smi output went with it, and only with it.
    smi = [p for p in folders["gpu-node-b"].glob("*-attachment.txt") if "NVIDIA-SMI" in p.read_text()]
    assert len(smi) == 1 and "node gpu-node-b" in smi[0].read_text()
    assert not (folders["gpu-node-a"] / smi[0].name).exists()


def _write(folder: Path, name: str, data: Any) -> None:
    (folder / name).write_text(json.dumps(data), encoding="utf-8")


def _result(uuid: str, nodes: list[str], attachment: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"name": "Then it works", "status": "passed", "steps": []}
    if attachment:
        step["steps"].append({"name": "nested", "attachments": [{"name": "log", "source": attachment, "type": "text/plain"}]})
    return {
        "uuid": uuid,
        "name": f"scenario {uuid}",
        "status": "passed",
        "labels": [{"name": "feature", "value": "F"}] + [{"name": "node", "value": n} for n in nodes],
        "steps": [step],
    }


def test_containers_attachments_and_metadata_follow(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw, "r1-result.json", _result("r1", ["node-a"], "att1-attachment.txt"))
    _write(raw, "r2-result.json", _result("r2", ["node-b"]))
    _write(raw, "r3-result.json", _result("r3", []))
    _write(raw, "r4-result.json", _result("r4", ["node-a", "node-b"]))
    (raw / "att1-attachment.txt").write_text("deep attachment")
    (raw / "fx-attachment.txt").write_text("fixture log")
    (raw / "orphan-attachment.txt").write_text("nobody's")
    _write(
        raw,
        "c1-container.json",
        {
            "uuid": "c1",
            "children": ["r1", "r2"],
            "befores": [{"name": "lab", "attachments": [{"name": "f", "source": "fx-attachment.txt"}]}],
        },
    )
    (raw / "environment.properties").write_text("cluster=x\n")
    (raw / "executor.json").write_text("{}")

    folders = split_by_node(raw, tmp_path / "out")
    assert set(folders) == {"node-a", "node-b", CLUSTER_KEY}
    a, b, c = folders["node-a"], folders["node-b"], folders[CLUSTER_KEY]
    assert {p.name for p in a.glob("*-result.json")} == {"r1-result.json", "r4-result.json"}
    assert {p.name for p in b.glob("*-result.json")} == {"r2-result.json", "r4-result.json"}
    assert {p.name for p in c.glob("*-result.json")} == {"r3-result.json"}
    assert (a / "att1-attachment.txt").read_text() == "deep attachment"
    assert not (b / "att1-attachment.txt").exists()
    assert json.loads((a / "c1-container.json").read_text())["children"] == ["r1"]
    assert json.loads((b / "c1-container.json").read_text())["children"] == ["r2"]
    assert (a / "fx-attachment.txt").is_file() and (b / "fx-attachment.txt").is_file()
    assert not (c / "c1-container.json").exists()
    assert not any((f / "orphan-attachment.txt").exists() for f in folders.values())
    for f in folders.values():
        assert (f / "environment.properties").read_text() == "cluster=x\n"
        assert (f / "executor.json").is_file()
    # Metadata is copied, not linked: rewriting it per folder must leave the raw results alone.
    (a / "environment.properties").write_text("changed")
    assert (raw / "environment.properties").read_text() == "cluster=x\n"


# "a" * 64 is a node name the apiserver accepts (tests/lab/test_names_apiserver.py: a subdomain's parts are not
# limited to 63): provision/names.py, the one home of the rule, allows it; 254 characters is too long.
@pytest.mark.parametrize("bad", ["../etc", "Node-A", "node_a", "-node", "node-", "a" * 254, "", "a/b", "."])
def test_invalid_node_label_is_refused(tmp_path: Path, bad: str) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw, "r1-result.json", _result("r1", [bad]))
    with pytest.raises(ValueError, match="DNS-1123"):
        split_by_node(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dns1123_names() -> None:
    assert is_dns1123_subdomain("gpu-node-1")
    assert is_dns1123_subdomain("ip-10-0-3-7.ec2.internal")
    assert is_dns1123_subdomain("a" * 63 + "." + "b" * 63)
    assert not is_dns1123_subdomain("a" * 254)
    assert not is_dns1123_subdomain("_cluster")
    assert not is_dns1123_subdomain("a..b")


def test_out_root_must_be_fresh(bdd_output: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale").write_text("x")
    with pytest.raises(FileExistsError):
        split_by_node(bdd_output[0], tmp_path / "out")
