"""A Helm chart repository on loopback, served from the real NVIDIA GPU Operator charts.

The charts come from ../shared/charts/ (or LAB_CHART_DIR); they are linked into the lab's state folder,
indexed with `helm repo index`, and served over HTTP on 127.0.0.1 by `python -m lab.chartrepo serve`,
so that `helm repo add` and `helm upgrade --install ... --version v26.3.0` work as against NVIDIA's.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
from pathlib import Path

from lab.spec import SHARED
from lab.state import LabPaths


def chart_source() -> Path:
    return Path(os.environ.get("LAB_CHART_DIR") or SHARED / "charts").resolve()


def prepare(paths: LabPaths, helm: Path, port: int) -> Path:
    src = chart_source()
    charts = sorted(src.glob("*.tgz"))
    if not charts:
        raise FileNotFoundError(
            f"no chart packages (*.tgz) in {src}: set LAB_CHART_DIR to a folder holding gpu-operator-*.tgz")
    for c in charts:
        link = paths.charts / c.name
        if not link.exists():
            link.symlink_to(c)
    url = f"http://127.0.0.1:{port}"
    index = paths.charts / "index.yaml"
    if not index.exists() or url not in index.read_text():
        subprocess.run([str(helm), "repo", "index", str(paths.charts), "--url", url], check=True,
                       capture_output=True, text=True)
    return paths.charts


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {format % args}\n")


def serve(folder: Path, port: int) -> None:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "serve":
        raise SystemExit("usage: python -m lab.chartrepo serve FOLDER PORT")
    serve(Path(sys.argv[2]), int(sys.argv[3]))
