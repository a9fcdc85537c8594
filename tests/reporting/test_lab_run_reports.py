"""The reports of a real lab run with one faulty node, as a person sees them (headless Chromium), and
without a trace of the lab's credentials. Opened from disk (file://), as a CI artifact is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from kubernetes import config

from lab.spec import Fault, NodeSpec
from provision.reporting.build import build_reports
from provision.reporting.secrets_scan import needles_from_pem, scan
from tests.suite.runner import run_suite

from .conftest import Chromium, parse_rows

pytestmark = [pytest.mark.lab, pytest.mark.slow]
LAB_DRIVER = NodeSpec.driver  # the lab's default driver version (lab/spec.py)


@pytest.fixture(scope="module")
def lab_run(module_lab_factory, tmp_path_factory):
    lab = module_lab_factory({"nodes": [
        {"name": "cp-1", "control_plane": True}, {"name": "gpu-a", "gpus": 1},
        {"name": "gpu-b", "gpus": 1, "faults": [Fault.DCGM_DOWN]},
    ]}, "reports")
    reports = tmp_path_factory.mktemp("runs")
    provision = run_suite(lab, reports, "--provision")
    audit = run_suite(lab, reports)
    assert audit.rc == 10, audit.output[-2000:]
    paths = build_reports(audit.run_dir)
    return lab, provision, audit, paths


def test_fleet_page_of_a_lab_run_in_chromium_from_disk(lab_run, chromium: Chromium):
    _, _, audit, paths = lab_run
    fleet_url = paths.fleet.as_uri()
    rows = parse_rows(chromium.dump_dom(fleet_url))
    assert sorted(rows) == ["cluster-wide", "gpu-a", "gpu-b"]
    assert all(c[0] in ("p", "s", "na") for c in rows["gpu-a"]["cells"]), rows["gpu-a"]
    assert any(c[0] == "p" for c in rows["gpu-a"]["cells"])
    red = [c for c in rows["gpu-b"]["cells"] if c[0] == "f"]
    assert len(red) == 1, rows["gpu-b"]
    _cls, href, title = red[0]
    assert "DCGM exporter on gpu-b" in title
    page = chromium.dump_dom(urljoin(fleet_url, href), wait_for="DCGM exporter on gpu-b")
    assert "DCGM exporter on gpu-b" in page and "gpu-b" in page
    shot = chromium.screenshot(fleet_url, audit.run_dir / "fleet.png")
    assert shot.stat().st_size > 10_000
    assert paths.fleet == audit.run_dir / "fleet.html"


def test_node_report_names_the_nodes_driver_from_disk(lab_run, chromium: Chromium):
    _, provision, audit, paths = lab_run
    for run in (provision, audit):  # --provision: read after GFD labelled the nodes, not at discovery
        summary = json.loads((run.run_dir / "summary.json").read_text(encoding="utf-8"))
        assert summary["environment"]["driver_versions"] == {"gpu-a": LAB_DRIVER, "gpu-b": LAB_DRIVER}
    props = (audit.run_dir / "allure-results-by-node" / "gpu-b" / "environment.properties").read_text()
    assert f"driver={LAB_DRIVER}" in props and "unknown" not in props
    dom = chromium.dump_dom(paths.node_html["gpu-b"].as_uri(), wait_for=LAB_DRIVER)
    assert "Metadata" in dom and LAB_DRIVER in dom


def test_reports_hold_no_credentials(lab_run):
    lab, provision, audit, _ = lab_run
    needles = []
    for pem in sorted((lab.paths.root / "pki").glob("*")):
        if pem.suffix in (".key", ".crt") and pem.name != "ca.crt":
            needles += needles_from_pem(pem.read_bytes(), pem.name)
    assert len(needles) > 10  # the scan has something to look for
    for run in (provision, audit):
        hits = scan(run.run_dir, needles)
        assert hits == [], hits
    # The scan does find material where it is: a planted copy is caught.
    planted = audit.run_dir / "planted.txt"
    planted.write_bytes((lab.paths.root / "pki" / "suite.key").read_bytes())
    try:
        assert scan(audit.run_dir, needles)
    finally:
        planted.unlink()


@pytest.fixture(scope="module")
def nights(lab_run, tmp_path_factory):
    """Four read-only audits of the lab in one reports folder, as nightly runs: gpu-b appears (with its DCGM
    fault), gpu-a disappears, then a night with nothing new compared with an explicit --previous."""
    lab = lab_run[0]
    reports = tmp_path_factory.mktemp("nights")
    quick = ("--no-workload",)
    first = run_suite(lab, reports, *quick, "--gpu-nodes", "gpu-a")
    second = run_suite(lab, reports, *quick, "--fail-on", "new", "--metrics-file", str(reports / "gpu.prom"))
    third = run_suite(lab, reports, *quick, "--fail-on", "new", "--gpu-nodes", "gpu-b")
    fourth = run_suite(lab, reports, *quick, "--fail-on", "new", "--previous", str(second.run_dir))
    return first, second, third, fourth, reports


def test_each_night_is_compared_with_the_one_before(nights):
    first, second, third, fourth, reports = nights
    assert first.rc == 0, first.output[-3000:]
    assert first.summary["changes_since_previous"]["previous"] is None

    changes = second.summary["changes_since_previous"]
    assert changes["previous"]["run_id"] == first.summary["run_id"]
    assert changes["new_nodes"] == ["gpu-b"] and changes["nodes_gone"] == []
    assert {(e["node"], e["outcome"]) for e in changes["new_failures"]} == {("gpu-b", "failed")}
    assert second.rc == 10, second.output[-3000:]  # --fail-on new: a new failure pages
    assert "changes since run " + first.summary["run_id"] in second.output
    assert "new node   gpu-b" in second.output and "NEW        gpu-b:" in second.output
    prom = (reports / "gpu.prom").read_text()
    assert 'gpu_conformance_check_outcome{feature=' in prom and 'node="gpu-b"' in prom
    assert f"metrics: {reports / 'gpu.prom'}" in second.output

    changes = third.summary["changes_since_previous"]
    assert changes["previous"]["run_id"] == second.summary["run_id"]
    assert changes["nodes_gone"] == ["gpu-a"]  # a node gone is a finding, not silence
    assert changes["new_failures"] == [] and {e["node"] for e in changes["still_failing"]} == {"gpu-b"}
    assert third.rc == 10, third.output[-3000:]
    assert "NODE GONE  gpu-a" in third.output

    changes = fourth.summary["changes_since_previous"]
    assert changes["previous"]["dir"] == str(second.run_dir)
    assert changes["counts"]["new_failures"] == changes["counts"]["nodes_gone"] == 0
    assert changes["counts"]["still_failing"] >= 1
    assert fourth.rc == 0, fourth.output[-3000:]  # still failing, recorded, but no regression: the job stays green


def test_reports_of_a_night_carry_the_allure_history_and_the_changes(nights, chromium: Chromium):
    _, second, third, _, _ = nights
    build_reports(second.run_dir)
    paths = build_reports(third.run_dir)  # its previous run (second) from summary.json: Allure trends continue
    history = (third.run_dir / "html" / "gpu-b" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2
    dom = chromium.dump_dom(paths.fleet.as_uri())
    assert dom.index('id="changes"') < dom.index('id="fleet"')
    assert "Nodes gone" in dom and "gpu-a" in dom[dom.index('id="nodes_gone"'):]


CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart"
SUITE_NS = "gpu-conformance"


@pytest.fixture(scope="module")
def chart_release(lab_run, tmp_path_factory):
    """deploy/chart installed into the lab; the CronJob's pod spec and its ServiceAccount's token laid out as the
    kubelet mounts it, with a kubeconfig made from it by the entry point's in-cluster code."""
    from kubernetes import client

    from provision.reporting.nightly import in_cluster_kubeconfig
    from tests.reliability.support import sa_token

    lab = lab_run[0]
    lab.helm("install", "nightly", str(CHART), "-n", SUITE_NS, "--create-namespace",
             "--set", "image.repository=registry.example/gpu-node-conformance")
    api = lab.api()
    cron = client.BatchV1Api(api).read_namespaced_cron_job("nightly-nightly", SUITE_NS)
    pod = cron.spec.job_template.spec.template.spec
    assert client.CoreV1Api(api).read_namespaced_persistent_volume_claim(
        pod.volumes[0].persistent_volume_claim.claim_name, SUITE_NS)
    folder = tmp_path_factory.mktemp("cronjob")
    sa_dir = folder / "serviceaccount"  # what the kubelet mounts into the CronJob's pod
    sa_dir.mkdir()
    (sa_dir / "token").write_text(sa_token(api, pod.service_account_name))
    (sa_dir / "ca.crt").write_bytes((lab.paths.pki / "ca.crt").read_bytes())
    server = urlsplit(lab.status["server"])
    service_env = {"KUBERNETES_SERVICE_HOST": server.hostname, "KUBERNETES_SERVICE_PORT": str(server.port)}
    kubeconfig = in_cluster_kubeconfig(folder / "kubeconfig", sa_dir=sa_dir, env=service_env)
    assert kubeconfig is not None
    return ChartRelease(pod, sa_dir, service_env, kubeconfig, f"system:serviceaccount:{SUITE_NS}:{pod.service_account_name}")


@dataclass
class ChartRelease:
    pod: object
    sa_dir: Path
    service_env: dict
    kubeconfig: Path
    user: str


def test_chart_in_the_lab_its_cronjob_identity_audits_and_may_write_nothing(lab_run, chart_release, tmp_path):
    """helm install deploy/chart into the lab; the installed CronJob's own ServiceAccount (a TokenRequest token,
    mounted as a pod would have it) runs the CronJob's own command and arguments: the audit passes (gpu-a, the
    healthy node), the reports are built, no write request is made, and every write it tries is refused."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from tests.reliability.support import audit_events, writes

    lab = lab_run[0]
    pod, kubeconfig = chart_release.pod, chart_release.kubeconfig
    (c,) = pod.containers
    reports = tmp_path / "reports"
    args = [str(reports) if a == "/reports" else a for a in c.args]
    lab_args = ["--lab", "--kubeconfig", str(kubeconfig), "--gpu-nodes", "gpu-a", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG", "PYTEST_"))}
    env["LAB_STATE_DIR"] = str(lab.paths.root)
    started = time.time()
    proc = subprocess.run([sys.executable, *c.command[1:], *args, *lab_args], cwd=CHART.parents[1], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    finished = time.time()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    assert summary["mode"] == "audit" and {r["node"] for r in summary["results"]} == {None, "gpu-a"}
    assert (reports / "latest" / "fleet.html").is_file() and (reports / "latest" / "html" / "gpu-a").is_dir()

    events = audit_events(lab, chart_release.user, started, finished + 1)
    assert events, "no request of the CronJob's identity in the audit log"
    assert writes(events) == []

    sa_api = config.new_client_from_config(config_file=str(kubeconfig))
    core, apps = client.CoreV1Api(sa_api), client.AppsV1Api(sa_api)
    dry = {"dry_run": "All"}
    probe_pod = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    attempts = {
        "create a pod in its namespace": lambda: core.create_namespaced_pod(SUITE_NS, probe_pod, **dry),
        "create a ConfigMap in gpu-operator": lambda: core.create_namespaced_config_map(
            "gpu-operator", {"metadata": {"name": "probe"}}, **dry),
        "label a node": lambda: core.patch_node("gpu-a", {"metadata": {"labels": {"probe": "x"}}}, **dry),
        "delete a DaemonSet": lambda: apps.delete_namespaced_daemon_set(
            "nvidia-device-plugin-daemonset", "gpu-operator", **dry),
        "write to its reports volume's claim": lambda: core.patch_namespaced_persistent_volume_claim(
            pod.volumes[0].persistent_volume_claim.claim_name, SUITE_NS, {"metadata": {"labels": {"p": "x"}}}, **dry),
        "create a Secret": lambda: core.create_namespaced_secret(SUITE_NS, {"metadata": {"name": "probe"}}, **dry),
        "delete its CronJob": lambda: client.BatchV1Api(sa_api).delete_namespaced_cron_job(
            "nightly-nightly", SUITE_NS, **dry),
    }
    got = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            got[what] = 200
        except ApiException as exc:
            got[what] = exc.status
    assert got == dict.fromkeys(attempts, 403), got


def test_image_entry_point_runs_the_cronjob_against_the_lab(lab_run, chart_release, tmp_path):
    """The image of deploy/image/build.sh, run with runc as the CronJob runs it (its command and arguments, user
    65532, read-only root, the ServiceAccount mount, the service's address in the environment; host network):
    the audit passes and its reports are built by the image's own Allure and Node.js."""
    from tests.deploy import image
    from tests.reliability.support import audit_events, writes

    if os.geteuid() != 0 or image.missing_tools():
        pytest.skip(f"building and running the image needs root and {image.missing_tools()} (Makefile APT_PACKAGES)")
    lab = lab_run[0]
    pod = chart_release.pod
    (c,) = pod.containers
    ref = image.image_ref()
    bundle = tmp_path / "bundle"
    config = image.unpack(ref, bundle)
    assert config["process"]["user"]["uid"] == 65532
    reports = tmp_path / "reports"
    reports.mkdir()
    os.chown(reports, 65532, 65532)
    sa_dir = tmp_path / "sa"
    shutil.copytree(chart_release.sa_dir, sa_dir)
    for f in sa_dir.iterdir():
        os.chown(f, 65532, 65532)
    args = [*c.command, *c.args, "--gpu-nodes", "gpu-a", "--dcgm-access", "direct"]  # the lab's DCGM: pod IPs
    started = time.time()
    proc = image.run_bundle(bundle, config, args=args, env=chart_release.service_env, name="gnc-nightly", binds={
        "/reports": (reports, True), "/var/run/secrets/kubernetes.io/serviceaccount": (sa_dir, False)})
    finished = time.time()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    assert {r["node"] for r in summary["results"]} == {None, "gpu-a"}
    assert summary["environment"]["driver_versions"] == {"gpu-a": LAB_DRIVER}
    report = reports / "latest" / "html" / "gpu-a" / "index.html"
    assert report.is_file() and "data:text/javascript;base64," in report.read_text()
    events = audit_events(lab, chart_release.user, started, finished + 1)
    assert events and writes(events) == []


def test_hosts_identity_runs_the_pod_host_backend_and_is_refused_nothing(lab_run, chart_release, tmp_path):
    """deploy/rbac/25-audit-hosts.yaml grants exactly what --host-backend pod uses: with its token the audit's
    host checks run through the access pods, nothing is refused, and the only writes are those pods and their
    exec sessions in gpu-conformance."""
    from tests.reliability.support import apply, audit_events, rbac_documents, refused, sa_kubeconfig

    lab = lab_run[0]
    apply(lab.api(), rbac_documents("25-audit-hosts.yaml"))
    kubeconfig, user = sa_kubeconfig(lab, "gpu-conformance-audit-hosts", tmp_path / "kubeconfig")
    run = run_suite(lab, tmp_path / "runs", "--no-workload", "--host-backend", "pod", "--gpu-nodes", "gpu-a",
                    "--kubeconfig", str(kubeconfig))
    assert run.rc == 0, run.output[-4000:]
    host = [r for r in run.results("gpu-a") if "NVIDIA driver works" in r["scenario"]]
    assert host and all(r["outcome"] == "passed" for r in host), host
    events = audit_events(lab, user, run.started, run.finished + 1)
    assert events and refused(events) == []
    refs = [(e["verb"], e.get("objectRef") or {}) for e in events]
    written = {(verb, ref.get("resource"), ref.get("subresource"), ref.get("namespace")) for verb, ref in refs
               if verb in ("create", "update", "patch", "delete", "deletecollection")}
    assert {("create", "pods", None, SUITE_NS), ("delete", "pods", None, SUITE_NS)} <= written
    assert written <= {("create", "pods", None, SUITE_NS), ("delete", "pods", None, SUITE_NS),
                       ("create", "pods", "exec", SUITE_NS)}, written
    execs = [ref for _verb, ref in refs if ref.get("subresource") == "exec"]
    assert execs, "no exec into the access pods: the host checks did not go through them"
