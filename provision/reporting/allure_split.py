"""Split one run's raw Allure results into one results folder per node.

allure-pytest-bdd writes a flat folder: ``<uuid>-result.json`` (one per scenario), ``<uuid>-container.json``
(fixtures, pointing at results through ``children``), ``<uuid>-attachment.<ext>`` files referenced from the
results' (nested) steps, plus a few metadata files (environment.properties, categories.json, executor.json,
``*-globals.json``). A result that concerns a node carries the label ``{"name": "node", "value": <node>}``.

:func:`split_by_node` copies every result into ``out_root/<node>/`` (or ``out_root/_cluster/`` when it has no
node label) together with the attachments it references and the containers that reference it (their
``children`` cut down to the results of that folder). Metadata files go to every folder. Attachments are
hard-linked when the file system allows it (they are never modified afterwards), copied otherwise;
metadata files are always copied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from provision.names import is_dns1123_subdomain as is_dns1123_subdomain  # re-exported; home: provision/names.py
from provision.reporting import CLUSTER_KEY, NODE_LABEL

log = logging.getLogger(__name__)

METADATA_FILES = frozenset(
    {
        "environment.properties",
        "environment.xml",
        "categories.json",
        "executor.json",
        # Allure 2 history files that may sit in a results folder.
        "history.json",
        "history-trend.json",
        "duration-trend.json",
        "retry-trend.json",
        "categories-trend.json",
    }
)


def validate_node_name(name: str) -> str:
    """Return ``name`` when it is a DNS-1123 subdomain (so safe as one path component), else raise ValueError."""
    if not is_dns1123_subdomain(name):
        raise ValueError(
            f"node label {name!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending alphanumeric, at most 253 characters); refusing to use it as a folder name"
        )
    return name


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable Allure file %s: %s", path, exc)
        return None


def _attachment_sources(item: Any) -> Iterator[str]:
    """Every ``attachments[].source`` of a result / fixture / step, steps nested at any depth."""
    stack = [item]
    while stack:
        cur = stack.pop()
        if not isinstance(cur, dict):
            continue
        for att in cur.get("attachments") or ():
            if isinstance(att, dict) and isinstance(att.get("source"), str):
                yield att["source"]
        stack.extend(s for s in (cur.get("steps") or ()) if isinstance(s, dict))


def _container_sources(container: dict[str, Any]) -> Iterator[str]:
    for key in ("befores", "afters"):
        for fixture in container.get(key) or ():
            yield from _attachment_sources(fixture)


def _node_labels(result: dict[str, Any]) -> list[str]:
    values: list[str] = []
    for label in result.get("labels") or ():
        if isinstance(label, dict) and label.get("name") == NODE_LABEL:
            value = label.get("value")
            if isinstance(value, str) and value not in values:
                values.append(value)
    return values


def _safe_source(results_dir: Path, source: str) -> Path | None:
    """The attachment file for ``source`` when it is a plain file name inside ``results_dir``."""
    if not source or source in (".", "..") or "/" in source or "\\" in source or "\x00" in source:
        log.warning("ignoring attachment source %r: not a plain file name", source)
        return None
    path = results_dir / source
    if not path.is_file():
        log.warning("attachment %s referenced but missing", path)
        return None
    return path


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _ensure_empty_root(out_root: Path) -> None:
    if out_root.exists():
        if not out_root.is_dir():
            raise NotADirectoryError(out_root)
        if any(out_root.iterdir()):
            raise FileExistsError(f"{out_root} is not empty; split_by_node writes into a fresh folder")
    out_root.mkdir(parents=True, exist_ok=True)


def split_by_node(results_dir: Path | str, out_root: Path | str) -> dict[str, Path]:
    """Split ``results_dir`` into ``out_root/<node>/`` per node label and ``out_root/_cluster/``.

    Returns ``{node or "_cluster": folder}`` for every folder that received at least one result.
    A result with several different node labels is copied to each of those nodes. Raises ValueError for a
    node label that is not a DNS-1123 subdomain, FileExistsError when ``out_root`` exists and is not empty.
    """
    results_dir = Path(results_dir)
    out_root = Path(out_root)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"Allure results folder {results_dir} does not exist")

    files = sorted(p for p in results_dir.iterdir() if p.is_file())
    # Per result only what the split needs (its file, attachment names, node folders): at 1000 nodes the
    # 11 000 parsed results would be the largest thing the run ever holds.
    results: dict[str, tuple[Path, list[str], list[str]]] = {}
    containers: list[tuple[Path, dict[str, Any]]] = []
    globals_files: list[tuple[Path, dict[str, Any]]] = []
    metadata: list[Path] = []
    for path in files:
        name = path.name
        if name.endswith("-result.json"):
            data = _load_json(path)
            if not isinstance(data, dict):
                continue
            uuid = data.get("uuid") if isinstance(data.get("uuid"), str) else name[: -len("-result.json")]
            nodes = [validate_node_name(n) for n in _node_labels(data)]
            results[uuid] = (path, list(_attachment_sources(data)), nodes or [CLUSTER_KEY])
        elif name.endswith("-container.json"):
            data = _load_json(path)
            if isinstance(data, dict):
                containers.append((path, data))
        elif name.endswith("-globals.json"):
            data = _load_json(path)
            if isinstance(data, dict):
                globals_files.append((path, data))
        elif name in METADATA_FILES:
            metadata.append(path)

    _ensure_empty_root(out_root)
    folders: dict[str, Path] = {}

    def folder(key: str) -> Path:
        if key not in folders:
            folders[key] = out_root / key
            folders[key].mkdir()
        return folders[key]

    def copy_sources(dest: Path, sources: Iterable[str]) -> None:
        for source in sources:
            src = _safe_source(results_dir, source)
            if src is not None:
                _link_or_copy(src, dest / src.name)

    members: dict[str, set[str]] = {}
    for uuid, (path, sources, keys) in results.items():
        for key in keys:
            dest = folder(key)
            _link_or_copy(path, dest / path.name)
            copy_sources(dest, sources)
            members.setdefault(key, set()).add(uuid)

    for path, data in containers:
        children = [c for c in (data.get("children") or ()) if isinstance(c, str)]
        for key, uuids in members.items():
            mine = [c for c in children if c in uuids]
            if not mine:
                continue
            dest = folders[key]
            _write_json(dest / path.name, {**data, "children": mine})
            copy_sources(dest, _container_sources(data))

    for dest in folders.values():
        for path in metadata:
            # Copied, not linked: allure_meta rewrites some of these per folder.
            shutil.copy2(path, dest / path.name)
        for path, data in globals_files:
            _link_or_copy(path, dest / path.name)
            copy_sources(
                dest,
                (a["source"] for a in data.get("attachments") or () if isinstance(a, dict) and "source" in a),
            )
    return dict(sorted(folders.items()))
