"""Certificates for the TLS tests, made on the spot with `cryptography`: a private CA and leaf
certificates it signs for 127.0.0.1 and localhost, each with a serial the test can recognise.

Nothing here talks to a server; the tests read the certificate a server presents with
`served_certificate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Leaf:
    """A server certificate and its key, as PEM files."""

    cert_file: Path
    key_file: Path
    serial: int

    def settings(self) -> dict[str, object]:
        """The node settings that serve this certificate."""
        return {"tls_cert_file": self.cert_file, "tls_key_file": self.key_file}

    def combined(self, path: Path) -> Path:
        """Certificate and key in one file (what HAProxy's `crt` reads)."""
        path.write_bytes(self.cert_file.read_bytes() + self.key_file.read_bytes())
        return path


class TestCA:
    """A certificate authority for one test; `ca_file` is what clients trust."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ripplecast test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.name = name
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, *, hosts: tuple[str, ...] = HOSTS) -> Leaf:
        """A leaf certificate for `hosts`, written to LABEL.crt and LABEL.key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        serial = x509.random_serial_number()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.folder / f"{label}.crt"
        key_file = self.folder / f"{label}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return Leaf(cert_file, key_file, serial)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (and checks host names)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def encrypted_key(leaf: Leaf, path: Path) -> Path:
    """`leaf`'s key encrypted with a passphrase, written to `path`."""
    key = serialization.load_pem_private_key(leaf.key_file.read_bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    return path


async def served_certificate(
    port: int, context: ssl.SSLContext, *, host: str = "127.0.0.1", timeout: float = 5
) -> x509.Certificate:
    """The certificate a TLS server on `port` presents (after a verified handshake)."""
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)
