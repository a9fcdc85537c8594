"""Serve a run folder on localhost: ``python -m provision.reporting serve RUN [--port N]``.

For reports built in Allure's multi-file form (``--multi-file``), which load their data with fetch() and so
show only a spinner when opened from disk. Binds 127.0.0.1 only: a run folder is not published to the network.
"""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_server(run_dir: Path | str, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``run_dir`` on 127.0.0.1:``port`` (0: any free port), not yet serving.

    Raises FileNotFoundError when ``run_dir`` is not a folder, OSError when the port is taken.
    """
    folder = Path(run_dir).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give a run folder (reports/<run-id> or reports/latest)")
    return ThreadingHTTPServer((LOOPBACK, port), functools.partial(_Handler, directory=str(folder)))


def url_of(server: ThreadingHTTPServer, page: str = "fleet.html") -> str:
    return f"http://{LOOPBACK}:{server.server_address[1]}/{page}"
