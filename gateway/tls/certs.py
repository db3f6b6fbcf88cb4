"""Certificate/key pairs: read, checked and turned into server `SSLContext`s.

One function does it for the config check and for the hot reload, so a pair that `check`
accepts is exactly a pair the running listener accepts, and the error names the file at fault.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from gateway.tls.names import dns_names

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# Mozilla's "intermediate" profile without the DHE suites: forward secret AEAD ciphers only.
# It applies to TLS 1.2; OpenSSL's TLS 1.3 suites are all modern and stay at their defaults.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@dataclass(frozen=True)
class CertPair:
    cert_file: str
    key_file: str


class PairError(Exception):
    """A pair that cannot be served. `field` is `cert_file` or `key_file`: the one to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class LoadedCert:
    pair: CertPair
    context: ssl.SSLContext
    leaf: x509.Certificate
    chain_length: int  # certificates in cert_file (leaf + intermediates)
    names: tuple[str, ...]  # SAN DNS names, lower-case
    not_after: float  # unix time
    digest: str  # of both files' bytes: a change means "reload"


def server_context(min_version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[min_version]
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])  # the listener speaks HTTP/1.1 only
    return ctx


def read(path: str, field: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise PairError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def pair_digest(pair: CertPair) -> str:
    """Hash of both files; raises PairError when one is unreadable."""
    h = hashlib.sha256(read(pair.cert_file, "cert_file"))
    h.update(b"\0")
    h.update(read(pair.key_file, "key_file"))
    return h.hexdigest()


def _no_password() -> bytes:
    # Never prompt on a terminal: an encrypted key is refused earlier; this is the backstop.
    raise PairError("key_file", "the private key is encrypted")


def load_pair(pair: CertPair, min_version: str) -> LoadedCert:
    """Read and check one pair, and build its context. Raises PairError."""
    cert_pem = read(pair.cert_file, "cert_file")
    key_pem = read(pair.key_file, "key_file")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise PairError("cert_file", f"{pair.cert_file} holds no PEM certificate") from None
    leaf = chain[0]
    try:
        key = load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise PairError(
            "key_file",
            f"{pair.key_file} is encrypted; store it unencrypted with restricted permissions",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise PairError("key_file", f"{pair.key_file} holds no PEM private key") from None
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise PairError(
            "key_file",
            f"{pair.key_file} does not match the certificate in {pair.cert_file} (the first "
            "certificate of cert_file must be the server's own, followed by its intermediates)",
        )
    ctx = server_context(min_version)
    try:
        ctx.load_cert_chain(pair.cert_file, pair.key_file, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise PairError("cert_file", f"OpenSSL refused the pair: {exc}") from None
    # load_cert_chain re-read the files by path: make sure it saw the bytes checked above, so a
    # renewal landing mid-read is retried on the next poll instead of half-applied.
    digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
    if pair_digest(pair) != digest:
        raise PairError("cert_file", "the files changed while being read")
    return LoadedCert(
        pair=pair,
        context=ctx,
        leaf=leaf,
        chain_length=len(chain),
        names=dns_names(leaf),
        not_after=leaf.not_valid_after_utc.timestamp(),
        digest=digest,
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
