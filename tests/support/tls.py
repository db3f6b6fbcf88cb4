"""Certificate chains generated per test (root CA -> intermediate -> leaf, via trustme) and
small TLS clients that report what a server really presented."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
import yaml
from cryptography import x509

from gateway.tls.names import dns_names


@dataclass
class Pki:
    root: trustme.CA
    intermediate: trustme.CA
    dir: Path

    @property
    def root_pem(self) -> Path:
        path = self.dir / "root.pem"
        if not path.exists():
            self.root.cert_pem.write_to_path(str(path))
        return path

    def leaf(
        self,
        *names: str,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> trustme.LeafCert:
        return self.intermediate.issue_cert(*names, not_before=not_before, not_after=not_after)

    def write(
        self, leaf: trustme.LeafCert, stem: str, *, full_chain: bool = True, into: Path | None = None
    ) -> tuple[Path, Path]:
        """cert_file (leaf + intermediate, or the leaf alone) and key_file, as a server expects."""
        where = into or self.dir
        where.mkdir(parents=True, exist_ok=True)
        cert, key = where / f"{stem}.crt", where / f"{stem}.key"
        pems = leaf.cert_chain_pems if full_chain else leaf.cert_chain_pems[:1]
        cert.write_bytes(b"".join(p.bytes() for p in pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        return cert, key


def make_pki(tmp: Path) -> Pki:
    root = trustme.CA()
    return Pki(root=root, intermediate=root.create_child_ca(), dir=tmp)


def days(n: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=n)


@dataclass
class Served:
    leaf: x509.Certificate
    chain_length: int
    version: str

    @property
    def names(self) -> tuple[str, ...]:
        return dns_names(self.leaf)

    @property
    def serial(self) -> int:
        return self.leaf.serial_number


def handshake(port: int, server_name: str | None, host: str = "127.0.0.1") -> Served:
    """Blocking: connect without verifying and report what the server presented (run in a thread)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        chain = tls._sslobj.get_unverified_chain()  # type: ignore[union-attr]
        return Served(x509.load_der_x509_certificate(der), len(chain or []), tls.version() or "")


def client_context(pki: Pki) -> ssl.SSLContext:
    """A verifying client that trusts only the test root (like `curl --cacert root.pem`)."""
    return ssl.create_default_context(cafile=str(pki.root_pem))


def cert_of(leaf: trustme.LeafCert) -> x509.Certificate:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


def serial_of(leaf: trustme.LeafCert) -> int:
    return cert_of(leaf).serial_number


def not_after_of(leaf: trustme.LeafCert) -> float:
    return cert_of(leaf).not_valid_after_utc.timestamp()


def write_config(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
