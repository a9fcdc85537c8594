"""Linters that make test runs on the project's CI templates, built from the Go module proxy once per version
into the user cache (next to the lab's binaries): ``python -m lab.linters`` prints the folder.

actionlint (github.com/rhysd/actionlint) checks GitHub Actions workflows, including the shell of their run: steps
through shellcheck when that is on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from lab import versions
from lab.build import BuildError, go_install

ACTIONLINT_VERSION = os.environ.get("LAB_ACTIONLINT_VERSION", "v1.7.12")


def linters_dir() -> Path:
    return versions.cache_root() / f"linters-actionlint{ACTIONLINT_VERSION}"


def actionlint_path() -> Path:
    return linters_dir() / "actionlint"


def ensure_linters() -> Path:
    """Build what is missing (a quick no-op when cached); returns the folder holding the linters."""
    out = linters_dir()
    if actionlint_path().exists():
        return out
    if shutil.which("go") is None:
        raise BuildError("actionlint is built with Go, and `go` is not on PATH: install Go 1.24 or newer")
    out.mkdir(parents=True, exist_ok=True)
    go_install("github.com/rhysd/actionlint/cmd/actionlint", ACTIONLINT_VERSION, out, "actionlint")
    return out


def main() -> int:
    try:
        print(ensure_linters())
    except BuildError as exc:
        print(f"linters: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
