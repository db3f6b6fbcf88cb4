"""The certificates the listener serves: chosen per connection by SNI, swapped when the files
change on disk.

The listener's `SSLContext` never changes (asyncio binds it to the server socket); its
`sni_callback` runs on every handshake, with or without SNI, and points the connection at the
context of the right certificate. Swapping the tuple those contexts come from is therefore
all a reload needs: new connections get the new certificate, established ones keep theirs.

Files are polled by content hash (about once a second). That catches every way they change:
certbot swapping `live/` symlinks, cert-manager updating a Secret (the kubelet swaps a `..data`
symlink), a copy over the file, and a rewrite that keeps the mtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from gateway.metrics import Metrics
from gateway.reader import ConfigError
from gateway.tls.certs import CertPair, LoadedCert, PairError, load_pair, pair_digest
from gateway.tls.config import TlsConfig
from gateway.tls.names import common_name, normalise

log = logging.getLogger("webhook_gateway.tls")

POLL_INTERVAL = 1.0
# A renewal writes the certificate and the key one after the other: act on what stays the same
# for a moment, so the half-way state is not reported as a broken pair.
SETTLE = 0.2


class CertStore:
    def __init__(self, config: TlsConfig, metrics: Metrics, interval: float = POLL_INTERVAL) -> None:
        self.config = config
        self.metrics = metrics
        self.interval = interval
        self._certs: tuple[LoadedCert, ...] = ()
        self._rejected: dict[CertPair, str] = {}  # digest of bytes that failed to load
        self._unreadable: dict[CertPair, str] = {}
        self._exact: dict[str, LoadedCert] = {}
        self._wildcard: dict[str, LoadedCert] = {}
        self._expiry_labels: set[str] = set()
        self._install(tuple(self._load_at_start(i, p) for i, p in enumerate(config.certificates)))
        self.context = self._listening_context()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ serving

    def pick(self, server_name: str | None) -> LoadedCert:
        """The certificate for a handshake: exact SAN, then wildcard SAN, else the first one."""
        if server_name:
            name = normalise(server_name)
            found = self._exact.get(name)
            if found is not None:
                return found
            _, dot, parent = name.partition(".")
            if dot:
                found = self._wildcard.get(parent)
                if found is not None:
                    return found
        return self._certs[0]

    def _on_sni(self, conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        try:
            conn.context = self.pick(server_name).context
        except Exception:  # raising would abort the handshake: serve the first certificate
            log.exception("choosing a certificate failed")

    def _load_at_start(self, index: int, pair: CertPair) -> LoadedCert:
        # The config check loaded the same files moments ago; if they broke since, refuse to
        # start with the same message `check` would give.
        try:
            return load_pair(pair, self.config.min_version)
        except PairError as exc:
            raise ConfigError([f"tls.certificates[{index}].{exc.field}: {exc.message}"]) from None

    def _listening_context(self) -> ssl.SSLContext:
        # A context of its own, complete with the first certificate; the callback below switches
        # every handshake to the current context of the chosen certificate anyway, so this one
        # never needs to change.
        ctx = self._load_at_start(0, self.config.certificates[0]).context
        ctx.sni_callback = self._on_sni
        return ctx

    def _install(self, certs: tuple[LoadedCert, ...]) -> None:
        exact: dict[str, LoadedCert] = {}
        wildcard: dict[str, LoadedCert] = {}
        for cert in certs:  # the first certificate naming a host wins, as in the config order
            for name in cert.names:
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], cert)
                else:
                    exact.setdefault(name, cert)
        # Three reference assignments; a handshake running between them still gets a valid,
        # current-or-previous certificate.
        self._exact, self._wildcard, self._certs = exact, wildcard, certs
        self._publish_expiry()

    def _publish_expiry(self) -> None:
        gauge = self.metrics.tls_certificate_expiry
        served: dict[str, float] = {}
        for cert in self._certs:
            for label in cert.names or (common_name(cert.leaf) or cert.pair.cert_file,):
                served.setdefault(label, cert.not_after)
        for label in self._expiry_labels - served.keys():  # names no certificate carries now
            gauge.remove(label)
        for label, ts in served.items():
            gauge.labels(label).set(ts)
        self._expiry_labels = set(served)

    # ------------------------------------------------------------------ reloading

    def _digests(self) -> list[str | None]:
        out: list[str | None] = []
        for cert in self._certs:
            try:
                out.append(pair_digest(cert.pair))
            except PairError:
                out.append(None)
        return out

    def _nothing_to_do(self, cert: LoadedCert, digest: str | None) -> bool:
        if digest is None:
            return cert.pair in self._unreadable  # already reported
        return digest == cert.digest or digest == self._rejected.get(cert.pair)

    def refresh(self) -> bool:
        """Reload every pair whose files changed. Returns True when something new is served.

        A pair that fails to load keeps serving its previous version; the failure is logged
        and counted once, and the same bytes are not tried again (their next change is).
        """
        new: list[LoadedCert] = []
        for cert, digest in zip(self._certs, self._digests(), strict=True):
            if digest is not None:
                self._unreadable.pop(cert.pair, None)
            if self._nothing_to_do(cert, digest):
                new.append(cert)
                continue
            try:
                loaded = load_pair(cert.pair, self.config.min_version)
            except PairError as exc:
                if digest is None:
                    # Deleted, or a symlink swap caught half-way: keep serving what is loaded.
                    self._unreadable[cert.pair] = exc.message
                else:
                    self._rejected[cert.pair] = digest
                self._failed(cert, exc)
                new.append(cert)
                continue
            self._rejected.pop(cert.pair, None)
            new.append(loaded)
            self.metrics.tls_reloads.labels("success").inc()
            log.info(
                "certificate reloaded",
                extra={
                    "cert_file": cert.pair.cert_file,
                    "names": list(loaded.names),
                    "not_after": loaded.leaf.not_valid_after_utc.isoformat(),
                },
            )
        if any(a is not b for a, b in zip(new, self._certs, strict=True)):
            self._install(tuple(new))
            return True
        return False

    def _failed(self, cert: LoadedCert, exc: PairError) -> None:
        self.metrics.tls_reloads.labels("error").inc()
        log.error(
            "certificate reload refused; the previous certificate is still served",
            extra={"cert_file": cert.pair.cert_file, "field": exc.field, "problem": exc.message},
        )

    async def poll_once(self) -> bool:
        before = self._digests()
        if all(self._nothing_to_do(c, d) for c, d in zip(self._certs, before, strict=True)):
            for cert, digest in zip(self._certs, before, strict=True):
                if digest is not None:
                    self._unreadable.pop(cert.pair, None)
            return False
        await asyncio.sleep(SETTLE)
        if self._digests() != before:
            return False  # still being written: look again on the next tick
        return self.refresh()

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:  # the watcher must outlive any surprise
                log.exception("certificate watch failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
