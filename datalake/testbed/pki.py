"""The testbed's small certificate authority: a CA, one server certificate for 127.0.0.1 (the transfer service,
the token issuer, the XRootD servers' TLS), and the client certificate Rucio's conveyor presents to the transfer
service (``[conveyor] usercert``, certificate and key in one file, as Rucio passes it to requests). Made once; keys
kept private (0600). The CA also comes as a hashed directory (``X509_CERT_DIR``, what XRootD clients and servers
read) and appended to the system's bundle (what the servers' token plugin trusts: it reads only that file)."""

from __future__ import annotations

import datetime
import fcntl
import subprocess
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from datalake.testbed import configs
from datalake.testbed.settings import HOST

# the hosts of the site lake (docker/compose.yaml), named for their servers: one certificate serves them all
SITE_LAKE_HOSTS = ("postgres", "rucio", "issuer", "transfer", "dask-scheduler", *(f"xrd{i}" for i in range(1, 21)))

CONVEYOR_DN = "/O=datalake testbed/CN=rucio conveyor"
VALID_DAYS = 3650
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's trust store, as one file


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

    @property
    def certdir(self) -> Path:
        return self.home / "certificates"  # the CA under its OpenSSL subject hash

    @property
    def bundle(self) -> Path:
        return self.home / "ca-bundle.pem"  # the system's CAs and ours

    def ensure(self) -> None:
        """Make what is missing; components preparing at once (one container each) take turns."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._ensure()

    def _ensure(self) -> None:
        self._ensure_ca()
        if not any(self.certdir.glob("*.0")):
            self.certdir.mkdir(exist_ok=True)
            subject = subprocess.run(
                ["openssl", "x509", "-hash", "-noout", "-in", str(self.ca)], capture_output=True, text=True, check=True
            )
            configs.write(self.certdir / f"{subject.stdout.strip()}.0", self.ca.read_text())
        system = Path(SYSTEM_BUNDLE).read_text() if Path(SYSTEM_BUNDLE).exists() else ""
        configs.write(self.bundle, system + self.ca.read_text())

    def _ensure_ca(self) -> None:
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


def pki(state: Path) -> Pki:
    """The testbed's PKI, in its state directory."""
    return Pki(state / "pki")


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
            # XRootD's third-party copies name a loopback source [::ffff:127.0.0.1], and XrdTls compares that text
            # with the DNS names (an IP address entry alone is not enough)
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    *(x509.DNSName(name) for name in SITE_LAKE_HOSTS),
                    x509.DNSName(f"[::ffff:{HOST}]"),
                    x509.DNSName(f"::ffff:{HOST}"),
                    *(x509.IPAddress(ip_address(a)) for a in (HOST, "::1", f"::ffff:{HOST}")),
                ]
            ),
            critical=False,
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
