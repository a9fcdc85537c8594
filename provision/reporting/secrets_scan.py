"""Check a run's report folder for secret material that must never be published (keys, tokens, certs).

:func:`scan` looks for byte strings ("needles") in every regular file under the run folder, binary-safe and
in chunks (a needle that straddles two chunks is still found). :func:`needles_from_kubeconfig` derives the
needles of a kubeconfig: each user's ``client-key-data``, ``client-certificate-data``, ``token`` and
``password``, the key / certificate files it points at, and the base64 body lines of the decoded PEMs (a
report that prints a key prints those lines, even where the PEM's framing was cut or re-wrapped).

A single-file Allure report (``index.html``) holds its data base64-encoded in an inline script, where a plain
byte search cannot see an attachment's content: the scan decodes that data and searches it too.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

MIN_NEEDLE_LEN = 16
"""Derived needles shorter than this (the short last line of a PEM body) are dropped: too likely by chance."""

_CHUNK = 1 << 20


class Needle(bytes):
    """Secret bytes with a name for the report (``Needle(b"...", "alice:client-key-data")``)."""

    name: str

    def __new__(cls, value: bytes, name: str) -> Needle:
        obj = super().__new__(cls, value)
        obj.name = name
        return obj

    def __repr__(self) -> str:  # never print the secret itself
        return f"Needle({self.name!r}, {len(self)} bytes)"


def _named(needles: Sequence[bytes]) -> list[tuple[bytes, str]]:
    out: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for i, n in enumerate(needles):
        value = bytes(n)
        if not value:
            raise ValueError(f"needle {i} is empty")
        if value in seen:
            continue
        seen.add(value)
        out.append((value, getattr(n, "name", None) or f"needle[{i}]"))
    return out


def _scan_file(path: Path, needles: list[tuple[bytes, str]], chunk_size: int) -> set[str]:
    found: set[str] = set()
    overlap = max(len(v) for v, _ in needles) - 1
    tail = b""
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            buf = tail + chunk
            for value, name in needles:
                if name not in found and value in buf:
                    found.add(name)
            if len(found) == len(needles):
                break
            tail = buf[-overlap:] if overlap else b""
    return found


def scan(run_dir: Path | str, needles: Sequence[bytes], *, chunk_size: int = _CHUNK) -> list[tuple[Path, str]]:
    """Every ``(file, needle name)`` such that the file holds that needle, sorted; symlinks are not followed.

    ``needles``: plain bytes (reported as ``needle[<index>]``) or :class:`Needle` (reported by name).
    """
    named = _named(needles)
    if not named:
        return []
    hits: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        dirs.sort()
        for fname in sorted(files):
            path = Path(root) / fname
            if path.is_symlink() or not path.is_file():
                continue
            found = _scan_file(path, named, chunk_size)
            if fname == "index.html":
                found |= _scan_inlined(path, named)
            for name in sorted(found):
                hits.append((path, name))
    return hits


def _scan_inlined(path: Path, needles: list[tuple[bytes, str]]) -> set[str]:
    """Needles in the base64-encoded data files of a single-file Allure report."""
    from provision.reporting.allure_html import inlined_data

    found: set[str] = set()
    for blob in inlined_data(path).values():
        found.update(name for value, name in needles if value in blob)
    return found


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)


def needles_from_pem(pem: bytes, name: str) -> list[Needle]:
    """The base64 body lines of every PEM block in ``pem`` (and the joined body), at least MIN_NEEDLE_LEN long."""
    out: list[Needle] = []
    for m in _PEM_BLOCK.finditer(pem):
        kind = m.group(1).decode("ascii", "replace").lower().replace(" ", "-")
        lines = [ln.strip() for ln in m.group(2).splitlines()]
        lines = [ln for ln in lines if ln and b":" not in ln]  # drop RFC 1421 headers (Proc-Type: ...)
        body = b"".join(lines)
        if len(body) >= MIN_NEEDLE_LEN:
            out.append(Needle(body, f"{name}:{kind}:body"))
        for i, line in enumerate(lines):
            if len(line) >= MIN_NEEDLE_LEN:
                out.append(Needle(line, f"{name}:{kind}:line{i + 1}"))
    return out


def _b64decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.strip(), validate=False)
    except (binascii.Error, ValueError):
        return None


def _add(out: list[Needle], value: bytes | str | None, name: str) -> None:
    if value is None:
        return
    raw = value.encode() if isinstance(value, str) else value
    raw = raw.strip()
    if len(raw) >= MIN_NEEDLE_LEN:
        out.append(Needle(raw, name))


def needles_from_kubeconfig(path: Path | str) -> list[Needle]:
    """The secret material of a kubeconfig file, as named needles for :func:`scan` (deduplicated)."""
    path = Path(path)
    config: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: list[Needle] = []
    for entry in config.get("users") or ():
        if not isinstance(entry, dict):
            continue
        who = str(entry.get("name") or "user")
        user = entry.get("user") or {}
        if not isinstance(user, dict):
            continue
        for field in ("client-key-data", "client-certificate-data"):
            data = user.get(field)
            if not isinstance(data, str):
                continue
            _add(out, data, f"{who}:{field}")
            decoded = _b64decode(data)
            if decoded:
                out.extend(needles_from_pem(decoded, f"{who}:{field}"))
        for field in ("client-key", "client-certificate"):
            ref = user.get(field)
            if isinstance(ref, str):
                file = (path.parent / ref) if not os.path.isabs(ref) else Path(ref)
                if file.is_file():
                    pem = file.read_bytes()
                    out.extend(needles_from_pem(pem, f"{who}:{field}"))
        token = user.get("token")
        if isinstance(token, str):
            _add(out, token, f"{who}:token")
            parts = token.strip().split(".")
            if len(parts) == 3:  # a JWT: its signature alone is secret enough to look for
                _add(out, parts[2], f"{who}:token:signature")
        _add(out, user.get("password") if isinstance(user.get("password"), str) else None, f"{who}:password")
    return _dedupe(out)


def _dedupe(needles: Iterable[Needle]) -> list[Needle]:
    seen: set[bytes] = set()
    out = []
    for n in needles:
        if bytes(n) not in seen:
            seen.add(bytes(n))
            out.append(n)
    return out
