"""`make demo`: the suite's main job against the local lab, then its reports.

1. `pytest features/ --lab --provision`: install and configure the GPU Operator stack on the lab's nodes;
2. `pytest features/ --lab`: the read-only conformance audit;
3. HTML reports (Allure 3, per node and for the run) and the fleet page of the audit, whose paths are
   printed last. The exit status is the audit's (0 conformant, 10 non-conformant, 11 could not check).
"""

from __future__ import annotations

import subprocess
import sys

from lab.state import REPO_ROOT


def _pytest(*args: str) -> int:
    cmd = [sys.executable, "-m", "pytest", "features/", "--lab", "-q", "-p", "no:cacheprovider", *args]
    print(f"\n$ {' '.join(['pytest', *cmd[3:]])}", flush=True)
    return subprocess.run(cmd, cwd=REPO_ROOT).returncode


def main() -> int:
    provision_rc = _pytest("--provision")
    provision_run = (REPO_ROOT / "reports" / "latest").resolve()
    audit_rc = _pytest()
    audit_run = (REPO_ROOT / "reports" / "latest").resolve()
    from provision.reporting.allure_html import AllureSetupError
    from provision.reporting.build import build_reports
    from provision.reporting.exit_codes import describe

    print(f"\nprovisioning: exit {provision_rc} ({describe(provision_rc)}); "
          f"audit: exit {audit_rc} ({describe(audit_rc)})")
    try:
        paths = build_reports(audit_run)
    except AllureSetupError as exc:
        print(f"HTML reports not built: {exc}", file=sys.stderr)
        print(f"run folder: {audit_run}")
        return audit_rc
    print(f"provisioning run: {provision_run}")
    print(f"audit run:        {audit_run}")
    for node, page in sorted(paths.node_html.items()):
        print(f"report {node:<14} {page}")
    print(f"report (whole run) {paths.all_html}")
    print(f"fleet page:        {paths.fleet}")
    return audit_rc


if __name__ == "__main__":
    sys.exit(main())
