"""The nightly audit as one command, the entry point of the in-cluster CronJob (deploy/chart/):

``python -m provision.reporting.nightly --reports DIR [--keep N] [-- PYTEST OPTIONS...]``

1. Inside a pod without a kubeconfig, writes one for the pod's ServiceAccount (``tokenFile``: the kubelet's
   rotating projected token is read, never copied; the CA of the service account mount; the API server from
   ``KUBERNETES_SERVICE_HOST``/``_PORT``), outside the reports folder.
2. Runs ``pytest features/ --report-dir DIR`` with the given options (they decide the mode, host backend,
   ``--fail-on``, ``--pushgateway``...). The previous run of the same mode and cluster is found in DIR, so the
   folder must survive between nights (the chart's PersistentVolumeClaim).
3. Builds the reports of the run (``python -m provision.reporting``), carrying the Allure history on.
4. Keeps the newest ``--keep`` run folders in DIR (default 30) and removes older ones.

Exits with the suite's exit code (0 / 10 / 11, pytest's 2-5); a report build failure is printed and does not
change it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KEEP = 30


def in_cluster_kubeconfig(out: Path, *, sa_dir: Path = SA_DIR, env: dict[str, str] | None = None) -> Path | None:
    """Write a kubeconfig for the pod's ServiceAccount into ``out``; None when not in a pod (no service host or
    no token mount)."""
    env = dict(os.environ if env is None else env)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    token, ca = sa_dir / "token", sa_dir / "ca.crt"
    if not host or not token.is_file() or not ca.is_file():
        return None
    server_host = f"[{host}]" if ":" in host else host
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
        "clusters": [{"name": "in-cluster", "cluster": {"server": f"https://{server_host}:{port}",
                                                        "certificate-authority": str(ca)}}],
        "users": [{"name": "service-account", "user": {"tokenFile": str(token)}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "service-account"}}],
    }
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    out.chmod(0o600)
    return out


def run_folders(reports: Path) -> list[Path]:
    """Run folders (holding summary.json) in ``reports``, oldest name first; the ``latest`` link is not one."""
    if not reports.is_dir():
        return []
    return sorted((p for p in reports.iterdir() if p.is_dir() and not p.is_symlink() and (p / "summary.json").is_file()),
                  key=lambda p: p.name)


def prune(reports: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` run folders (never the one ``latest`` points to); returns the removed."""
    if keep < 1:
        raise ValueError(f"--keep must be at least 1 (the previous run is needed tomorrow), not {keep}")
    latest = (reports / "latest").resolve() if (reports / "latest").exists() else None
    folders = run_folders(reports)
    removed = []
    for folder in folders[: max(0, len(folders) - keep)]:
        if latest is not None and folder.resolve() == latest:
            continue
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    ours, suite_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m provision.reporting.nightly")
    parser.add_argument("--reports", type=Path, required=True, help="the runs' folder, kept between nights")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help=f"run folders kept (default {DEFAULT_KEEP})")
    args = parser.parse_args(ours)
    if args.keep < 1:
        parser.error(f"--keep must be at least 1 (the previous run is needed tomorrow), not {args.keep}")
    reports = args.reports.resolve()
    reports.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="gpu-conformance-") as tmp:
        if not env.get("KUBECONFIG") and "--kubeconfig" not in suite_args:
            kubeconfig = in_cluster_kubeconfig(Path(tmp) / "kubeconfig")
            if kubeconfig is not None:
                env["KUBECONFIG"] = str(kubeconfig)
        cmd = [sys.executable, "-m", "pytest", "features/", "--report-dir", str(reports), "-p", "no:cacheprovider",
               *suite_args]
        print("nightly: " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
    latest = reports / "latest"
    if (latest / "summary.json").is_file():
        built = subprocess.run([sys.executable, "-m", "provision.reporting", str(latest.resolve())], cwd=REPO,
                               env=env, check=False)
        if built.returncode != 0:
            print(f"nightly: the HTML reports could not be built (exit {built.returncode}); summary.json, "
                  "junit.xml and allure-results/ are there", file=sys.stderr)
    for folder in prune(reports, args.keep):
        print(f"nightly: removed the old run {folder.name}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
