"""Build the HTML reports of a run: python -m provision.reporting RUN_DIR [--previous PREVIOUS_RUN_DIR].

For nightly audits: give the previous night's run folder as --previous and the Allure reports show trends
(when a node went red). Prints the fleet page and every report's path; exits 2 when the set-up is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provision.reporting.allure_html import AllureSetupError
from provision.reporting.build import build_reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provision.reporting")
    parser.add_argument("run_dir", type=Path, help="reports/<run-id> (or reports/latest)")
    parser.add_argument("--previous", type=Path, help="the previous run's folder, for Allure history/trends")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / "summary.json").is_file():
        print(f"{run_dir} has no summary.json: give a run folder written by `pytest features/`", file=sys.stderr)
        return 2
    try:
        paths = build_reports(run_dir, previous=args.previous.resolve() if args.previous else None)
    except AllureSetupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for node, page in sorted(paths.node_html.items()):
        print(f"report {node:<16} {page}")
    print(f"report (whole run) {paths.all_html}")
    print(f"fleet page         {paths.fleet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
