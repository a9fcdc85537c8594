from __future__ import annotations

import base64
import datetime
import shutil
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provision.reporting.build import build_reports
from provision.reporting.secrets_scan import Needle, needles_from_kubeconfig, needles_from_pem, scan

from .conftest import SampleRun

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp0ZXN0In0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"


def _key_and_cert() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conformance-admin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    key_pem, cert_pem = _key_and_cert()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-key-data": base64.b64encode(key_pem).decode(),
                    "client-certificate-data": base64.b64encode(cert_pem).decode(),
                },
            },
            {"name": "robot", "user": {"token": TOKEN}},
        ],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "admin"}}],
        "current-context": "lab",
    }
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, key_pem


def test_needles_from_kubeconfig(kubeconfig: tuple[Path, bytes]) -> None:
    path, key_pem = kubeconfig
    needles = needles_from_kubeconfig(path)
    names = {n.name for n in needles}
    assert {"admin:client-key-data", "admin:client-certificate-data", "robot:token", "robot:token:signature"} <= names
    assert any(n.startswith("admin:client-key-data:private-key:line") for n in names)
    assert any(n.startswith("admin:client-certificate-data:certificate:line") for n in names)
    body_lines = [ln for ln in key_pem.splitlines() if ln and not ln.startswith(b"-----")]
    assert body_lines[0] in needles
    assert all(len(n) >= 16 for n in needles)
    assert "MII" not in repr(needles[0])  # a needle's repr never shows the secret


def test_clean_run_has_no_secrets(sample_run: SampleRun, kubeconfig: tuple[Path, bytes]) -> None:
    assert scan(sample_run.run_dir, needles_from_kubeconfig(kubeconfig[0])) == []


def test_planted_key_is_found(multi_file_run: Path, kubeconfig: tuple[Path, bytes], tmp_path: Path) -> None:
    path, key_pem = kubeconfig
    run = tmp_path / "run"
    shutil.copytree(multi_file_run, run)
    victim = sorted((run / "html" / "gpu-node-b" / "data" / "attachments").iterdir())[0]
    body_line = [ln for ln in key_pem.splitlines() if ln and not ln.startswith(b"-----")][1]
    victim.write_bytes(victim.read_bytes() + b"\x00\xff debug dump: " + body_line + b"\x00")

    hits = scan(run, needles_from_kubeconfig(path))
    assert {p for p, _ in hits} == {victim}
    assert [name for _, name in hits] == ["admin:client-key-data:private-key:line2"]


def test_binary_safe_across_chunks_and_plain_bytes(tmp_path: Path) -> None:
    secret = b"\x00TOKEN-abcdef0123456789\xff"
    (tmp_path / "a.bin").write_bytes(b"\x01" * 1000 + secret + b"\x02" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"nothing here")
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    for chunk in (7, 64, 1 << 20):
        assert scan(tmp_path, [secret], chunk_size=chunk) == [(tmp_path / "a.bin", "needle[0]")]
    named = Needle(b"abcdef0123456789", "planted")
    assert scan(tmp_path, [named, b"absent-absent-absent"]) == [(tmp_path / "a.bin", "planted")]


def test_pem_needles_skip_short_lines() -> None:
    pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAB==\n-----END PRIVATE KEY-----\n"
    values = {bytes(n) for n in needles_from_pem(pem, "k")}
    assert values == {b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCAB=="}


def test_key_in_an_attachment_of_a_single_file_report_is_found(
    sample_run: SampleRun, kubeconfig: tuple[Path, bytes], tmp_path: Path
) -> None:
    """A single-file report holds attachments base64-encoded: a plain byte search would miss the key."""
    path, key_pem = kubeconfig
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(sample_run.run_dir / "allure-results", run / "allure-results")
    shutil.copyfile(sample_run.run_dir / "summary.json", run / "summary.json")
    body_line = [ln for ln in key_pem.splitlines() if ln and not ln.startswith(b"-----")][1]
    attachment = next(p for p in sorted((run / "allure-results").glob("*-attachment.txt"))
                      if b"NVIDIA-SMI 550.54.15  node gpu-node-b" in p.read_bytes())
    attachment.write_bytes(attachment.read_bytes() + b"\ndebug dump: " + body_line + b"\n")
    build_reports(run)
    hits = scan(run / "html", needles_from_kubeconfig(path))
    node_report = run / "html" / "gpu-node-b" / "index.html"
    assert body_line not in node_report.read_bytes()  # not there in plain bytes
    assert (node_report, "admin:client-key-data:private-key:line2") in hits
