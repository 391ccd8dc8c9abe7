"""The testbed's small certificate authority: a CA, the transfer service's server certificate, and the client
certificate Rucio's conveyor presents to it (``[conveyor] usercert``, certificate and key in one file, as Rucio
passes it to requests). Made once; kept private (0600)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from datalake.testbed import configs
from datalake.testbed.settings import HOST

CONVEYOR_DN = "/O=datalake testbed/CN=rucio conveyor"
VALID_DAYS = 3650


@dataclass(frozen=True)
class Pki:
    home: Path

    @property
    def ca(self) -> Path:
        return self.home / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.home / "service.pem"

    @property
    def server_key(self) -> Path:
        return self.home / "service.key"

    @property
    def conveyor(self) -> Path:
        return self.home / "conveyor.pem"  # certificate + key

    def ensure(self) -> None:
        if all(p.exists() for p in (self.ca, self.server_cert, self.server_key, self.conveyor)):
            return
        from cryptography.hazmat.primitives import serialization

        ca_key, ca_cert = _make("datalake testbed CA", None, None, ca=True)
        key, cert = _make("transfer service", ca_key, ca_cert, server=True)
        conveyor_key, conveyor_cert = _make("rucio conveyor", ca_key, ca_cert)
        pem = serialization.Encoding.PEM

        def private(k) -> bytes:
            return k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

        configs.write(self.ca, ca_cert.public_bytes(pem).decode())
        configs.write(self.server_key, private(key).decode(), private=True)
        configs.write(self.server_cert, cert.public_bytes(pem).decode())
        configs.write(self.conveyor, (conveyor_cert.public_bytes(pem) + private(conveyor_key)).decode(), private=True)


def _make(common_name: str, issuer_key, issuer_cert, *, ca: bool = False, server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datalake testbed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address(HOST))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert
