"""Client IP: X-Forwarded-For believed only from trusted peers, rightmost untrusted hop wins."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.proxy.clientip import NetSet, client_ip, parse_ip

TRUSTED = NetSet([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")])


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("peer", "xff", "expected", "why"),
    [
        ("203.0.113.5", ["149.154.167.220"], "203.0.113.5", "untrusted peer naming a Telegram IP is ignored"),
        ("10.0.0.2", ["149.154.167.220"], "149.154.167.220", "trusted proxy is believed"),
        ("10.0.0.2", ["1.1.1.1, 149.154.167.220"], "149.154.167.220", "spoofed left entries are ignored"),
        ("10.0.0.2", ["149.154.167.220, 10.0.0.7"], "149.154.167.220", "trusted chain is walked"),
        ("10.0.0.2", ["149.154.167.220", "10.0.0.9"], "149.154.167.220", "several headers are one list"),
        ("10.0.0.2", ["10.0.0.3, 10.0.0.4"], "10.0.0.3", "all trusted: the leftmost trusted hop"),
        ("10.0.0.2", [], "10.0.0.2", "no header: the peer"),
        ("10.0.0.2", ["garbage"], "10.0.0.2", "junk is never believed"),
        ("10.0.0.2", ["149.154.167.220, junk"], "10.0.0.2", "junk on the right stops the walk"),
        ("10.0.0.2", ["junk, 149.154.167.220"], "149.154.167.220", "junk to the left never matters"),
        ("10.0.0.2", ["::ffff:149.154.167.220"], "149.154.167.220", "IPv4-mapped IPv6 is normalised"),
        ("::ffff:10.0.0.2", ["149.154.167.220"], "149.154.167.220", "mapped peer is normalised"),
        ("10.0.0.2", ["149.154.167.220:443"], "149.154.167.220", "IPv4 with a port"),
        ("10.0.0.2", ["[2001:db8::1]:80"], "2001:db8::1", "bracketed IPv6 with a port"),
        ("10.0.0.2", ["fe80::1%eth0"], "10.0.0.2", "zone ids are junk"),
        ("10.0.0.2", [", ,"], "10.0.0.2", "empty entries are junk"),
        ("10.0.0.2", ["x" * 10000], "10.0.0.2", "huge junk"),
        ("::1", ["2001:db8::5"], "2001:db8::5", "IPv6 trusted peer"),
    ],
)
def test_client_ip(peer: str, xff: list[str], expected: str, why: str) -> None:
    from gateway.proxy.clientip import normalise

    assert str(client_ip(normalise(ip(peer)), xff, TRUSTED)) == expected, why


def test_nothing_trusted_means_peer_always() -> None:
    assert client_ip(ip("10.0.0.2"), ["1.2.3.4"], NetSet([])) == ip("10.0.0.2")
    assert client_ip(None, ["1.2.3.4"], TRUSTED) is None


@pytest.mark.parametrize(
    "junk",
    [
        "",
        " ",
        "unknown",
        "_hidden",
        "1.2.3",
        "1.2.3.4.5",
        "[::1",
        "::1]:80",
        "256.1.1.1",
        "\x00",
        "\uff11.\uff12.\uff13.\uff14",  # fullwidth digits
    ],
)
def test_parse_ip_junk_is_none(junk: str) -> None:
    assert parse_ip(junk) is None


def test_netset_membership_per_version() -> None:
    nets = NetSet([ipaddress.ip_network("149.154.160.0/20"), ipaddress.ip_network("2001:db8::/32")])
    assert ip("149.154.175.255") in nets
    assert ip("149.154.176.0") not in nets
    assert ip("2001:db8:ffff::1") in nets
    assert ip("::ffff:149.154.160.1") not in nets  # callers normalise first
