"""A throwaway CA with server and client certificates, made in-process (cryptography), for the
TLS and mTLS tests of the runtime and of the chart's probes."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Certs:
    ca_crt: Path
    server_crt: Path  # for localhost, 127.0.0.1 and `dns_names`; usable as a client certificate too
    server_key: Path
    client_crt: Path
    client_key: Path
    stranger_crt: Path  # a client certificate from another CA
    stranger_key: Path


def _write_cert(
    folder: Path,
    name: str,
    subject: str,
    issuer: Any,
    ca: bool,
    server: bool,
    dns_names: tuple[str, ...] = (),
) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name_ = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name_)
        .issuer_name(issuer_cert.subject if issuer_cert else name_)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        # As cert-manager issues it with usages [server auth, client auth]: one certificate for both.
        usages = (
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            if server
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in ("localhost", *dns_names)]
            names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


def make_certs(folder: Path, dns_names: tuple[str, ...] = ()) -> Certs:
    pytest.importorskip("cryptography", reason="cryptography is a dev dependency (pip install -e '.[dev]')")
    ca = _write_cert(folder, "ca", "atelier test CA", None, ca=True, server=False)
    _write_cert(folder, "server", "localhost", ca, ca=False, server=True, dns_names=dns_names)
    _write_cert(folder, "client", "shop client", ca, ca=False, server=False)
    other = _write_cert(folder, "other-ca", "someone else's CA", None, ca=True, server=False)
    _write_cert(folder, "stranger", "stranger", other, ca=False, server=False)
    d = folder
    return Certs(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
        d / "stranger.crt", d / "stranger.key",
    )  # fmt: skip
