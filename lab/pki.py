"""A throwaway certificate authority for the lab, made with the `cryptography` package.

Every lab component gets its own client identity so that the apiserver's audit log tells apart the
suite's requests from the lab's own (controllers, scheduler, kwok, the GPU twin, test helpers).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class Identity:
    """A client identity: file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


# Who is who in the lab. The suite's identity is deliberately not in system:masters: what it may do is
# decided by RBAC (lab/rbac.py binds it), so the audit log and RBAC both see it as an ordinary user.
ADMIN = Identity("admin", "lab-admin", ("system:masters",))
SUITE = Identity("suite", "gpu-conformance-suite")
CONTROLLER_MANAGER = Identity("controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("scheduler", "system:kube-scheduler")
KWOK = Identity("kwok", "lab:kwok", ("system:masters",))
TWIN = Identity("twin", "lab:gpu-twin", ("system:masters",))
HELPER = Identity("helper", "lab:test-helper", ("system:masters",))
KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
NOBODY = Identity("nobody", "lab:no-rights")
# The real GPU Operator, run out of the cluster by the twin's supervisor. It has no group: what it may do is
# what the chart grants the operator's ServiceAccount, mirrored onto this user (lab/twin/operator_process.py).
OPERATOR = Identity("gpu-operator", "lab:gpu-operator")

CLIENT_IDENTITIES = (ADMIN, SUITE, CONTROLLER_MANAGER, SCHEDULER, KWOK, TWIN, HELPER, KUBELET_CLIENT, NOBODY,
                     OPERATOR)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


class CertificateAuthority:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert_path = folder / "ca.crt"
        self.key_path = folder / "ca.key"

    def exists(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-conformance-lab-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write(self.key_path, _pem_key(key), private=True)
        _write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def _load(self):
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        return key, cert

    def issue(self, stem: str, common_name: str, organizations: tuple[str, ...] = (),
              server_names: tuple[str, ...] = (), client: bool = True) -> tuple[Path, Path]:
        """Issue a key pair and certificate; returns (cert_path, key_path)."""
        ca_key, ca_cert = self._load()
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            sans: list[x509.GeneralName] = []
            for n in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = self.folder / f"{stem}.crt"
        key_path = self.folder / f"{stem}.key"
        _write(key_path, _pem_key(key), private=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def service_account_keys(folder: Path) -> tuple[Path, Path]:
    """RSA key pair the apiserver signs service-account tokens with (and verifies them by)."""
    priv = folder / "sa.key"
    pub = folder / "sa.pub"
    if not priv.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(priv, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()), private=True)
        _write(pub, key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def create_all(folder: Path, server_names: tuple[str, ...]) -> None:
    """Create the CA and every certificate the lab needs (idempotent)."""
    ca = CertificateAuthority(folder)
    if ca.exists():
        return
    ca.create()
    ca.issue("apiserver", "kube-apiserver", server_names=server_names, client=False)
    ca.issue("kubelet-serving", "lab-kubelet", server_names=("127.0.0.1", "localhost"), client=False)
    for ident in CLIENT_IDENTITIES:
        ca.issue(ident.stem, ident.user, ident.groups)
    service_account_keys(folder)
