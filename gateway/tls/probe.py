"""Client-side TLS probes for `doctor`: one handshake, what the server presented, and whether
that chain verifies. Blocking sockets: doctor is a one-shot command, not part of the server."""

from __future__ import annotations

import socket
import ssl
import warnings
from dataclasses import dataclass

from cryptography import x509

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: verify the chain's signatures and trust regardless of
# dates, so a chain problem and an expired certificate are reported as two separate findings.
NO_CHECK_TIME = 0x200000

# OpenSSL verify codes doctor explains (X509_V_ERR_*).
UNABLE_TO_GET_ISSUER_CERT = 2
SELF_SIGNED_LEAF = 18
SELF_SIGNED_IN_CHAIN = 19
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
MISSING_ISSUER = (
    UNABLE_TO_GET_ISSUER_CERT,
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
    UNABLE_TO_VERIFY_LEAF_SIGNATURE,
)


@dataclass(frozen=True)
class Handshake:
    version: str
    cipher: str
    leaf: x509.Certificate
    presented: tuple[x509.Certificate, ...] | None  # what the server sent; None: Python can't tell


def probe_context() -> ssl.SSLContext:
    """Accepts anything the server offers, down to TLS 1.0, so an old server is *described*
    ("negotiated TLSv1.1") instead of failing with an opaque handshake error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def verify_context(cafile: str | None) -> ssl.SSLContext:
    """Verifies the chain like a strict client (system store, or only `cafile` like curl --cacert);
    the host name and the dates are checked separately."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    ctx.verify_flags = ctx.verify_flags | NO_CHECK_TIME
    return ctx


def connect(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout)


def handshake(
    address: str, port: int, server_name: str | None, timeout: float, ctx: ssl.SSLContext | None = None
) -> Handshake:
    """One TLS handshake; raises OSError / ssl.SSLError."""
    with (
        connect(address, port, timeout) as raw,
        (ctx or probe_context()).wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        if der is None:
            raise ssl.SSLError("the server presented no certificate")
        cipher = tls.cipher()
        return Handshake(
            version=tls.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            leaf=x509.load_der_x509_certificate(der),
            presented=_presented_chain(tls),
        )


def _presented_chain(tls: ssl.SSLSocket) -> tuple[x509.Certificate, ...] | None:
    # Public from Python 3.13; the same method exists privately on the 3.10-3.12 socket object.
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is None:
        return None
    try:
        chain = getter() or []
    except (ssl.SSLError, ValueError):
        return None
    out = []
    for cert in chain:
        der = cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        out.append(x509.load_der_x509_certificate(der))
    return tuple(out)


def self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def label(cert: x509.Certificate) -> str:
    """Subject CN, else the first SAN, else the whole subject: a short name for messages."""
    from gateway.tls.names import common_name, dns_names

    return common_name(cert) or next(iter(dns_names(cert)), "") or cert.subject.rfc4514_string() or "?"


def issuer_label(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    attrs = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else cert.issuer.rfc4514_string()
