"""The node's TLS certificate: one server `SSLContext`, shared by HTTPS and RTMPS, loaded from
`tls_cert_file` and `tls_key_file` and reloaded in place (SIGHUP).

Invariants: the context always holds a certificate and the key that belongs to it. A new pair
is read once, both files together (so a renewal caught half-way cannot pair an old key with a
new certificate), checked on a scratch context, and only then loaded into the live one; a pair
that does not load leaves the live context as it was. New handshakes use the pair loaded last;
connections already open keep theirs. The bytes are handed to OpenSSL through an in-memory file
(a private temporary file where the system has none), never read from the paths a second time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ripplecast.config import Settings, TlsVersion
from ripplecast.errors import RipplecastError

__all__ = ["ServerTls", "TlsError", "server_tls_for"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_VERSIONS = {
    TlsVersion.TLS1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS1_3: ssl.TLSVersion.TLSv1_3,
}


class TlsError(RipplecastError):
    """A certificate or key that cannot be used; the message names the file and why."""


class _EncryptedKey(Exception):
    """Raised from OpenSSL's password callback: the key needs a passphrase."""


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal and block the server.
    raise _EncryptedKey


class ServerTls:
    """The server side of TLS for every listener of a node (see module docstring)."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        min_version: TlsVersion = TlsVersion.TLS1_2,
    ) -> None:
        """Load the pair; raises `TlsError` naming the file that cannot be used."""
        self.cert_file = cert_file
        self.key_file = key_file
        self._min_version = _VERSIONS[min_version]
        self.context = self._new_context()
        """The live context: give it to every listening server; `reload` changes it in place."""
        self.fingerprint = self._load_into(self.context)
        """SHA-256 fingerprint of the certificate in use (AB:CD:...), for logs."""

    def reload(self) -> str:
        """Load both files again; new handshakes use the new pair. Returns its fingerprint.

        Raises `TlsError` when the new pair cannot be used: the pair in use then stays."""
        self.fingerprint = self._load_into(self.context, check_first=True)
        return self.fingerprint

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self._min_version
        # A client could otherwise make the server redo the expensive part at will.
        context.options |= ssl.OP_NO_RENEGOTIATION
        # No TLS 1.3 session tickets: librtmp built on GnuTLS (rtmpdump, players and encoders
        # linked to it) mistakes the tickets that follow the handshake for an error and drops
        # the connection. What is lost is resumption of TLS 1.3 sessions, a saving of one
        # key exchange per new connection; TLS 1.2 resumption is untouched.
        context.num_tickets = 0
        return context

    def _load_into(self, context: ssl.SSLContext, *, check_first: bool = False) -> str:
        cert = self._read(self.cert_file, "tls_cert_file")
        key = self._read(self.key_file, "tls_key_file")
        chain = [match.group() for match in _PEM_CERTIFICATE.finditer(cert)]
        if not chain:
            raise TlsError(f"tls_cert_file {self.cert_file}: no PEM certificate in it")
        try:
            chain_text = b"\n".join(chain).decode("ascii")
            der = ssl.PEM_cert_to_DER_cert(chain[0].decode("ascii"))
            # Parses every certificate of the chain, apart from the key (checked below).
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=chain_text)
        except (ValueError, ssl.SSLError) as exc:
            raise TlsError(
                f"tls_cert_file {self.cert_file}: not a valid PEM certificate chain ({_why(exc)})"
            ) from None
        if check_first:
            self._load_pair(self._new_context(), cert, key)
        self._load_pair(context, cert, key)
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    @staticmethod
    def _read(path: Path, setting: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise TlsError(f"{setting} {path}: cannot read it ({exc.strerror})") from None

    def _load_pair(self, context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
        try:
            with _in_memory(cert) as cert_path, _in_memory(key) as key_path:
                context.load_cert_chain(cert_path, key_path, password=_no_password)
        except _EncryptedKey:
            raise TlsError(
                f"tls_key_file {self.key_file}: the key is encrypted; give the unencrypted key"
                " (readable by this user only)"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise TlsError(
                    f"tls_key_file {self.key_file} is not the key of the certificate in"
                    f" tls_cert_file {self.cert_file}"
                ) from None
            raise TlsError(
                f"tls_key_file {self.key_file}: no usable PEM private key in it ({_why(exc)})"
            ) from None


def _why(exc: Exception) -> str:
    """OpenSSL's reason, without the location in Python's C code."""
    reason = getattr(exc, "reason", None)
    if reason == "PEM lib":  # OpenSSL's words for "could not read the PEM data"
        return "unreadable PEM data"
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc)) or type(exc).__name__


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open that holds `data`: an anonymous in-memory file on Linux, else a
    private temporary file, removed on exit."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("ripplecast-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="ripplecast-tls-") as folder:
        path = Path(folder) / "pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
        yield str(path)


def server_tls_for(settings: Settings) -> ServerTls | None:
    """The node's TLS from its settings, None without a certificate.

    Raises `TlsError` naming the file that cannot be used (the node refuses to start)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return ServerTls(
        settings.tls_cert_file, settings.tls_key_file, min_version=settings.tls_min_version
    )
