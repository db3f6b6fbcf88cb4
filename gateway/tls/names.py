"""Which names a certificate covers, and whether a host name matches one of them.

Shared by the listener (picking a certificate by SNI) and `doctor` (checking the served one),
so both agree on the rules: subjectAltName only (clients ignore the subject CN when a SAN is
present, and Telegram's client is no exception), and a wildcard is the whole leftmost label
and matches exactly one label (RFC 6125 6.4.3): `*.example.com` covers `a.example.com`, not
`example.com` nor `a.b.example.com`.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names of the subjectAltName, lower-cased, in certificate order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName))


def ip_names(cert: x509.Certificate) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if not isinstance(ip, ipaddress.IPv4Network | ipaddress.IPv6Network)
    )


def common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def normalise(host: str) -> str:
    return host.strip().lower().rstrip(".")


def dns_matches(pattern: str, host: str) -> bool:
    pattern, host = normalise(pattern), normalise(host)
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    first, dot, rest = host.partition(".")
    return bool(first) and bool(dot) and rest == pattern[2:] and "*" not in pattern[2:]


def covers(cert: x509.Certificate, host: str) -> bool:
    """True when a client connecting to `host` (a name or an IP literal) accepts `cert`."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return any(dns_matches(name, host) for name in dns_names(cert))
    return ip in ip_names(cert)


def describe(cert: x509.Certificate) -> str:
    """A short human label: the SAN names, else the CN."""
    names = [*dns_names(cert), *(str(ip) for ip in ip_names(cert))]
    if names:
        return ", ".join(names)
    cn = common_name(cert)
    return f"CN={cn} (no subjectAltName)" if cn else "(no names)"
