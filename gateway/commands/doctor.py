"""`webhook-gateway doctor URL`: why would Telegram not deliver to this URL?

Each check is one line (ok / warn / fail / skip) with what was seen and, when something is
wrong, the fix. The checks run in the order a delivery fails: URL, port, DNS, TCP, TLS
handshake and version, chain, name, dates, the certificate served without SNI, and finally
whether the route refuses a POST without the secret. A failed step skips the steps that need
it, so every finding is a real one. Exit status: 1 when any check fails, else 0.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO

from yarl import URL

from gateway.tls import probe
from gateway.tls.names import covers, describe

TELEGRAM_PORTS = (443, 80, 88, 8443)
WARN_DAYS = 14
PROBE_BODY = b'{"update_id": 0}'
ALL_CHECKS = (
    "url",
    "port",
    "dns",
    "tcp",
    "tls_handshake",
    "tls_version",
    "chain",
    "hostname",
    "validity",
    "sni_default",
    "enforcing",
)


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""


@dataclass
class Report:
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def by_name(self) -> dict[str, Check]:
        return {c.name: c for c in self.checks}

    def to_json(self) -> str:
        return json.dumps(
            {"url": self.url, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}, indent=2
        )

    def to_text(self) -> str:
        lines = [f"webhook-gateway doctor {self.url}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper() if c.status != 'ok' else 'ok':5} {c.name:14} {c.detail}")
            if c.fix and c.status in ("fail", "warn"):
                lines.append(f"  {'':5} {'':14} fix: {c.fix}")
        fails = sum(c.status == "fail" for c in self.checks)
        warns = sum(c.status == "warn" for c in self.checks)
        lines.append(
            "all checks passed" if not fails and not warns else f"{fails} failed, {warns} warning(s)"
        )
        return "\n".join(lines) + "\n"


def parse_resolve(values: Sequence[str]) -> dict[tuple[str, int | None], str]:
    """curl's `--resolve HOST:PORT:ADDR`, or the shorter `HOST:ADDR` (any port)."""
    out: dict[tuple[str, int | None], str] = {}
    for value in values:
        host, sep, rest = value.partition(":")
        port_text, sep2, addr = rest.partition(":")
        if sep2 and port_text.isdigit():
            key: tuple[str, int | None] = (host.lower(), int(port_text))
        else:
            key, addr = (host.lower(), None), rest
        addr = addr.strip("[]")
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"--resolve {value!r}: expected HOST:IP or HOST:PORT:IP") from None
        if not host or not sep:
            raise ValueError(f"--resolve {value!r}: expected HOST:IP or HOST:PORT:IP")
        out[key] = addr
    return out


class Doctor:
    def __init__(
        self,
        url: str,
        ca: str | None = None,
        resolve: dict[tuple[str, int | None], str] | None = None,
        timeout: float = 10.0,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.url = url
        self.ca = ca
        self.resolve = resolve or {}
        self.timeout = timeout
        self.now = now
        self.report = Report(url)
        self._skipped_from: str | None = None

    # ------------------------------------------------------------------ bookkeeping

    def _add(self, name: str, status: str, detail: str, fix: str = "") -> Check:
        check = Check(name, status, detail, fix)
        self.report.checks.append(check)
        return check

    def _skip_rest(self, because: str) -> Report:
        done = {c.name for c in self.report.checks}
        for name in ALL_CHECKS:
            if name not in done:
                self._add(name, "skip", f"not checked: {because}")
        return self.report

    # ------------------------------------------------------------------ the run

    def run(self) -> Report:
        try:
            url = URL(self.url)
        except ValueError:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            self._add("url", "fail", f"{self.url!r} is not an http(s) URL", "give the full webhook URL")
            return self._skip_rest("no usable URL")
        https = url.scheme == "https"
        host, port = url.host, url.port or (443 if https else 80)
        if https:
            self._add("url", "ok", f"https, host {host}, path {url.raw_path}")
        else:
            self._add(
                "url",
                "fail",
                "http: Telegram delivers webhooks over https only",
                "terminate TLS at the gateway (tls: in its config) or at a load balancer in front",
            )
        self._check_port(port)
        address = self._check_dns(host, port)
        if address is None:
            return self._skip_rest("DNS failed")
        if not self._check_tcp(address, port):
            return self._skip_rest("no TCP connection")
        if https and not self._tls_checks(host, address, port):
            return self._skip_rest("no TLS handshake")
        if not https:
            for name in ALL_CHECKS[4:-1]:
                self._add(name, "skip", "not https")
        self._check_enforcing(url, host, address, port, https)
        return self.report

    def _check_port(self, port: int) -> None:
        if port in TELEGRAM_PORTS:
            self._add("port", "ok", f"{port} is a port Telegram delivers to")
        else:
            self._add(
                "port",
                "fail",
                f"{port}: Telegram delivers only to ports {', '.join(map(str, TELEGRAM_PORTS))}",
                "serve the webhook on 443 or 8443 (a load balancer may map it to the gateway's port)",
            )

    def _check_dns(self, host: str, port: int) -> str | None:
        pinned = self.resolve.get((host.lower(), port)) or self.resolve.get((host.lower(), None))
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if pinned is not None:
            addresses = [pinned]
            how = f"pinned to {pinned} by --resolve (DNS not consulted)"
        elif literal is not None:
            addresses = [str(literal)]
            how = "an IP address: no DNS lookup"
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                self._add(
                    "dns",
                    "fail",
                    f"cannot resolve {host}: {exc.strerror}",
                    f"create an A record for {host} (or check it before DNS exists with --resolve {host}:IP)",
                )
                return None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            how = f"{host} -> {', '.join(addresses)}"
        v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
        if not v4:
            self._add(
                "dns",
                "fail",
                f"{how}: no IPv4 address, and Telegram delivers over IPv4 only",
                f"add an A record for {host}",
            )
            return addresses[0]
        self._add("dns", "ok", how)
        return v4[0]

    def _check_tcp(self, address: str, port: int) -> bool:
        try:
            with probe.connect(address, port, self.timeout):
                pass
        except OSError as exc:
            self._add(
                "tcp",
                "fail",
                f"cannot connect to {address}:{port}: {exc.strerror or exc}",
                "is the gateway listening there? Firewalls and security groups must let in Telegram's "
                "networks 149.154.160.0/20 and 91.108.4.0/22",
            )
            return False
        self._add("tcp", "ok", f"connected to {address}:{port}")
        return True

    # ------------------------------------------------------------------ TLS

    def _tls_checks(self, host: str, address: str, port: int) -> bool:
        """Every TLS check; False when not even the handshake works."""
        sni = None if _is_ip(host) else host
        try:
            hs = probe.handshake(address, port, sni, self.timeout)
        except (OSError, ssl.SSLError) as exc:
            text = str(exc)
            fix = (
                "this port answers plain HTTP: configure tls: on the gateway, or use the TLS port"
                if "WRONG_VERSION_NUMBER" in text.upper() or "wrong version number" in text
                else "check the server's TLS configuration (certificate loaded, TLS 1.2+ enabled)"
            )
            detail = f"TLS handshake with SNI {sni or '(none)'} failed: {text}"
            self._add("tls_handshake", "fail", detail, fix)
            return False
        self._add(
            "tls_handshake",
            "ok",
            f"SNI {sni or '(none: IP address)'}: {hs.version}, {hs.cipher}, "
            f"certificate for {describe(hs.leaf)}",
        )
        self._check_version(hs)
        self._check_chain(address, port, sni, hs)
        self._check_hostname(host, hs)
        self._check_validity(hs)
        self._check_sni_default(host, address, port, sni, hs)
        return True

    def _check_version(self, hs: probe.Handshake) -> None:
        if hs.version in ("TLSv1.2", "TLSv1.3"):
            self._add("tls_version", "ok", f"negotiated {hs.version}")
        else:
            self._add(
                "tls_version",
                "fail",
                f"negotiated {hs.version}: Telegram requires TLS 1.2 or newer",
                "enable TLS 1.2 and 1.3 (gateway: tls.min_version 1.2; nginx: ssl_protocols TLSv1.2 TLSv1.3)",
            )

    def _check_chain(self, address: str, port: int, sni: str | None, hs: probe.Handshake) -> None:
        store = f"--ca {self.ca}" if self.ca else "the system trust store"
        sent = _chain_text(hs.presented)
        try:
            ctx = probe.verify_context(self.ca)
        except (OSError, ssl.SSLError) as exc:
            self._add("chain", "fail", f"cannot load {store}: {exc}", "give a PEM file of CA certificates")
            return
        try:
            probe.handshake(address, port, sni, self.timeout, ctx)
        except ssl.SSLCertVerificationError as exc:
            self._add("chain", "fail", *self._explain(exc, hs, store, sent))
            return
        except (OSError, ssl.SSLError) as exc:
            self._add("chain", "fail", f"verifying handshake failed: {exc}", "")
            return
        self._add("chain", "ok", f"verifies to {store}; {sent}")

    @staticmethod
    def _explain(
        exc: ssl.SSLCertVerificationError, hs: probe.Handshake, store: str, sent: str
    ) -> tuple[str, str]:
        code, message = exc.verify_code, exc.verify_message
        leaf_only = hs.presented is not None and len(hs.presented) == 1
        if code in probe.MISSING_ISSUER and leaf_only and not probe.self_issued(hs.leaf):
            return (
                f"intermediate certificate missing: the server sends only its own certificate "
                f"(issued by {probe.issuer_label(hs.leaf)}), so clients cannot link it to a root in {store}",
                "serve the full chain: cert_file must hold the certificate followed by its intermediates "
                "(certbot: fullchain.pem, not cert.pem)",
            )
        if code in probe.MISSING_ISSUER:
            return (
                f"does not lead to a root in {store} ({message}); {sent}",
                "serve the intermediates that link the certificate to a public root (or pass --ca for a "
                "private CA)",
            )
        if code == probe.SELF_SIGNED_LEAF:
            return (
                "self-signed certificate: no client trusts it by default",
                "use a CA-issued certificate (Let's Encrypt), or upload this one with setWebhook's "
                "certificate parameter so Telegram trusts it",
            )
        if code == probe.SELF_SIGNED_IN_CHAIN:
            return (
                f"the chain ends in a root that {store} does not trust; {sent}",
                "use a publicly trusted CA (or pass --ca with your private root to check the rest)",
            )
        return (f"verification failed: {message} (code {code}); {sent}", "")

    def _check_hostname(self, host: str, hs: probe.Handshake) -> None:
        names = describe(hs.leaf)
        if covers(hs.leaf, host):
            self._add("hostname", "ok", f"certificate covers {host} ({names})")
        else:
            self._add(
                "hostname",
                "fail",
                f"certificate is for {names}, not {host}",
                f"serve a certificate whose subjectAltName lists {host} (gateway: add its pair to "
                "tls.certificates; SNI picks it by name)",
            )

    def _check_validity(self, hs: probe.Handshake) -> None:
        now = self.now()
        start, end = hs.leaf.not_valid_before_utc, hs.leaf.not_valid_after_utc
        days_left = (end - now).total_seconds() / 86400
        renew = "renew it (certbot renew, cert-manager); the gateway re-reads renewed files on its own"
        if now < start:
            self._add(
                "validity", "fail", f"not valid before {_day(start)} (server clock or CA mistake)", renew
            )
        elif now > end:
            self._add("validity", "fail", f"expired on {_day(end)} ({-days_left:.0f} days ago)", renew)
        elif days_left < WARN_DAYS:
            self._add("validity", "warn", f"expires on {_day(end)}: {days_left:.1f} days left", renew)
        else:
            self._add("validity", "ok", f"valid until {_day(end)} ({days_left:.0f} days left)")

    def _check_sni_default(
        self, host: str, address: str, port: int, sni: str | None, hs: probe.Handshake
    ) -> None:
        if sni is None:
            self._add("sni_default", "skip", "the URL names an IP address: no SNI either way")
            return
        try:
            plain = probe.handshake(address, port, None, self.timeout)
        except (OSError, ssl.SSLError) as exc:
            self._add(
                "sni_default",
                "warn",
                f"the server refuses clients that send no SNI ({exc})",
                "fine for clients that send SNI; give the server a default certificate for the others",
            )
            return
        if plain.leaf == hs.leaf:
            self._add("sni_default", "ok", "the same certificate is served with and without SNI")
        elif covers(plain.leaf, host):
            self._add("sni_default", "ok", f"without SNI: another certificate that also covers {host}")
        else:
            self._add(
                "sni_default",
                "fail",
                f"without SNI the server presents the certificate for {describe(plain.leaf)}, not {host}",
                f"make the certificate for {host} the default: first in tls.certificates (nginx: the "
                "default_server block), so clients without SNI get it too",
            )

    # ------------------------------------------------------------------ the route

    def _check_enforcing(self, url: URL, host: str, address: str, port: int, https: bool) -> None:
        target = url.raw_path_qs or "/"
        conn: http.client.HTTPConnection
        if https:
            conn = _PinnedHTTPS(host, port, address, self.timeout)
        else:
            conn = _PinnedHTTP(host, port, address, self.timeout)
        try:
            conn.request(
                "POST",
                target,
                body=PROBE_BODY,
                headers={"Content-Type": "application/json", "User-Agent": "webhook-gateway-doctor"},
            )
            resp = conn.getresponse()
            status, body = resp.status, resp.read(300)
        except (OSError, http.client.HTTPException) as exc:
            self._add("enforcing", "fail", f"POST {url.raw_path} failed: {exc}", "")
            return
        finally:
            conn.close()
        said = body.decode("utf-8", "replace").strip()
        said = f" {said}" if said else ""
        if status in (401, 403):
            self._add("enforcing", "ok", f"a POST without the secret is refused: {status}{said}")
        elif 200 <= status < 300:
            self._add(
                "enforcing",
                "fail",
                f"a POST without the secret was accepted ({status}): anyone who learns the URL can "
                "send updates",
                "set the route to mode: enforce (after report-only shows no would-reject from Telegram); "
                "without the gateway, check X-Telegram-Bot-Api-Secret-Token in the bot",
            )
        elif status in (404, 405):
            self._add(
                "enforcing",
                "fail",
                f"{status}{said}: nothing accepts webhooks at {url.raw_path}",
                "use the route's exact path in the URL given to setWebhook",
            )
        else:
            self._add("enforcing", "warn", f"answered {status}{said}: cannot tell whether it enforces", "")


class _PinnedHTTP(http.client.HTTPConnection):
    """Sends Host: <name> but connects to the address doctor resolved (or --resolve pinned)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    def connect(self) -> None:
        super().connect()
        # The certificate was judged above; here only the route's answer matters.
        sni = None if _is_ip(self.host) else self.host
        self.sock = probe.probe_context().wrap_socket(self.sock, server_hostname=sni)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _chain_text(chain: Sequence[object] | None) -> str:
    if chain is None:
        return "the presented chain is not visible to this Python"
    parts = [f"{probe.label(c)} (issued by {probe.issuer_label(c)})" for c in chain]  # type: ignore[arg-type]
    return f"server sent {len(parts)} certificate(s): " + "; ".join(parts)


def main(
    url: str, ca: str | None, resolve: Sequence[str], as_json: bool, timeout: float, out: IO[str]
) -> int:
    try:
        pins = parse_resolve(resolve)
    except ValueError as exc:
        print(f"error: {exc}", file=out)
        return 2
    report = Doctor(url, ca=ca, resolve=pins, timeout=timeout).run()
    out.write(report.to_json() + "\n" if as_json else report.to_text())
    return 0 if report.ok else 1
