"""Writing a run's own files atomically: a new file beside the target, renamed over it (readers never see half a
file; a target that is a hard link, e.g. into the raw Allure results, is replaced, not written through)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically. The temporary name is unique per process and thread,
    so xdist workers writing the same file at once do not clash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path
