"""The reports of a run, from the command line.

``python -m provision.reporting RUN_DIR [--previous PREVIOUS_RUN_DIR] [--multi-file]`` builds the HTML reports.
For nightly audits: give the previous night's run folder as --previous and the Allure reports show trends
(when a node went red). Prints the fleet page and every report's path; exits 2 when the set-up is missing.
Reports are single files that open from disk (a CI artifact); ``--multi-file`` builds Allure's smaller
multi-file form instead, which needs an HTTP server:

``python -m provision.reporting serve RUN_DIR [--port N]`` serves the run folder on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provision.reporting.allure_html import AllureSetupError
from provision.reporting.build import build_reports


def _serve(argv: list[str]) -> int:
    from provision.reporting.serve import make_server, url_of

    parser = argparse.ArgumentParser(prog="python -m provision.reporting serve")
    parser.add_argument("run_dir", type=Path, help="reports/<run-id> (or reports/latest)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free one)")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.run_dir, args.port)
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port}: {exc}; pick another --port", file=sys.stderr)
        return 2
    print(f"serving {args.run_dir.resolve()} at {url_of(server)} (localhost only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m provision.reporting")
    parser.add_argument("run_dir", type=Path, help="reports/<run-id> (or reports/latest)")
    parser.add_argument("--previous", type=Path, help="the previous run's folder, for Allure history/trends")
    parser.add_argument("--multi-file", action="store_true",
                        help="Allure's multi-file reports (smaller; open them with `serve`, not from disk)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / "summary.json").is_file():
        print(f"{run_dir} has no summary.json: give a run folder written by `pytest features/`", file=sys.stderr)
        return 2
    try:
        paths = build_reports(run_dir, previous=args.previous.resolve() if args.previous else None,
                              single_file=not args.multi_file)
    except AllureSetupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for node, page in sorted(paths.node_html.items()):
        print(f"report {node:<16} {page}")
    print(f"report (whole run) {paths.all_html}")
    print(f"fleet page         {paths.fleet}")
    if args.multi_file:
        print(f"multi-file reports need a server: python -m provision.reporting serve {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
