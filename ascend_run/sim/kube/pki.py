"""The simulated cluster's certificates and tokens, made fresh for each cluster (nothing shared between two).

- One CA signs the API server's serving certificate (its address on the cluster bridge, the first service
  address, and the usual in-cluster names), each kubelet's serving certificate and the API server's client
  certificate for the kubelets (logs, exec, port-forward are proxied through the kubelet, which trusts only
  this CA).
- Components and the admin authenticate to the API server with bearer tokens from a token file: the admin
  is in system:masters, the controller manager and the scheduler have their bootstrap RBAC identities, each
  kubelet is system:node:<name> in system:nodes (so the Node authorizer applies), CoreDNS is its own user.
- The service-account key pair signs the pods' tokens.
All files are 0600 in DIR/kubernetes/pki; the private keys never leave this machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=30)  # a simulated cluster lives for a test run or a demo


@dataclass(frozen=True)
class Token:
    user: str
    uid: str
    groups: tuple[str, ...]
    value: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.chmod(0o600)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _name(common_name: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


class PKI:
    """The cluster's CA and everything it signs, under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    def path(self, name: str) -> Path:
        return self.folder / name

    def create_ca(self) -> None:
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        ca = _name("ascend-run-sim-ca")
        cert = (x509.CertificateBuilder().subject_name(ca).issuer_name(ca)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        write_private(self.path("ca.key"), _pem_key(key))
        write_private(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))

    def _ca(self):
        key = serialization.load_pem_private_key(self.path("ca.key").read_bytes(), None)
        return key, x509.load_pem_x509_certificate(self.ca_cert.read_bytes())

    def issue(self, name: str, common_name: str, *, server: bool, org: str | None = None,
              ips: list[str] = (), dns: list[str] = ()) -> tuple[Path, Path]:
        """A key and a certificate signed by the CA: for serving (`server`, with the SANs) or a client."""
        ca_key, ca_cert = self._ca()
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(_name(common_name, org)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        alt = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return (write_private(self.path(f"{name}.key"), _pem_key(key)),
                write_private(self.path(f"{name}.crt"), cert.public_bytes(serialization.Encoding.PEM)))

    def service_account_keys(self) -> tuple[Path, Path]:
        """(private, public) key of the service-account token signer."""
        key = _key()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return write_private(self.path("sa.key"), _pem_key(key)), write_private(self.path("sa.pub"), public)

    def tokens(self, nodes: list[str]) -> dict[str, Token]:
        """A bearer token per identity, written to the API server's token file (token,user,uid,"groups")."""
        identities = {"admin": ("ascend-run-admin", ("system:masters",)),
                      "controller-manager": ("system:kube-controller-manager", ()),
                      "scheduler": ("system:kube-scheduler", ()),
                      "coredns": ("ascend-run:coredns", ())}
        identities.update({f"kubelet-{n}": (f"system:node:{n}", ("system:nodes",)) for n in nodes})
        found = {key: Token(user, f"uid-{key}", groups, secrets.token_hex(24))
                 for key, (user, groups) in identities.items()}
        lines = [f'{t.value},{t.user},{t.uid},"{",".join(t.groups)}"' if t.groups else f"{t.value},{t.user},{t.uid}"
                 for t in found.values()]
        write_private(self.path("tokens.csv"), "\n".join(lines) + "\n")
        return found
