"""The local stack's secrets, made once: a certificate authority, a certificate for the services, and a
password per principal (``deploy/credentials.PRINCIPALS``). The directory is mode 0700, each secret 0600;
nothing here is ever printed or logged."""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentlog.deploy import credentials
from agentlog.deploy.credentials import PRINCIPALS, LocalCredentials, write_secret

_DAYS = 3650
HOSTS = ("localhost", "127.0.0.1", "::1")
"""What the services' certificate is valid for: the local stack listens on the loopback only."""


def ensure(stack_dir: Path) -> LocalCredentials:
    """The stack's secrets, made where missing (a principal added since is given its password)."""
    directory = credentials.secrets_dir(stack_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / "credentials.json"
    passwords: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    changed = not path.exists()
    for service, principals in PRINCIPALS.items():
        own = passwords.setdefault(service, {})
        for principal in principals:
            if principal not in own:
                own[principal] = secrets.token_urlsafe(24)
                changed = True
    if changed:
        write_secret(path, json.dumps(passwords, indent=2).encode())
    if not (directory / "server.pem").exists():
        _certificates(directory)
    found = credentials.local(stack_dir)
    assert found is not None
    return found


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM: what Kafka's PEM key store, Postgres and Elasticsearch all read."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificates(directory: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentlog local stack CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = _key()
    names: list[x509.GeneralName] = []
    for host in HOSTS:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=_DAYS))
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    write_secret(directory / "ca.key", _pkcs8(ca_key))
    write_secret(directory / "server.key", _pkcs8(server_key))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
