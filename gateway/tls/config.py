"""The `tls:` section: certificate pairs (the first is the default) and the minimum version.

Every pair is loaded once while the config is checked, so a cert/key mismatch or an unreadable
file is reported by `check` with its location, before anything binds a port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.reader import Problems, Reader, text
from gateway.tls.certs import MIN_VERSIONS, CertPair, PairError, load_pair

TLS_KEYS = {"certificates", "min_version"}
PAIR_KEYS = {"cert_file", "key_file"}


@dataclass(frozen=True)
class TlsConfig:
    """Paths and settings only: equal configs mean "same listener", whatever the files hold now
    (a reload compares them, and renewed file contents are the watcher's job, not a restart's)."""

    certificates: tuple[CertPair, ...]
    min_version: str = "1.2"


def _min_version(value: Any) -> str:
    # YAML reads an unquoted 1.2 as a float: accept it as the same thing.
    shown = str(value) if isinstance(value, str | float) else None
    if shown not in MIN_VERSIONS:
        raise ValueError(f"{value!r} is not one of: {', '.join(MIN_VERSIONS)} (Telegram needs 1.2)")
    return shown


def parse_tls(raw: Any, problems: Problems) -> TlsConfig | None:
    r = Reader(raw, "tls", problems, TLS_KEYS)
    min_version = r.get("min_version", _min_version, "1.2")
    items = r.list("certificates")
    if not items:
        problems.add("tls.certificates", "at least one {cert_file, key_file} pair is required")
        return None
    pairs: list[CertPair] = []
    for i, item in enumerate(items):
        p = Reader(item, f"tls.certificates[{i}]", problems, PAIR_KEYS)
        cert_file = p.get("cert_file", text, "", required=True)
        key_file = p.get("key_file", text, "", required=True)
        if not cert_file or not key_file:
            continue
        pair = CertPair(cert_file, key_file)
        try:
            load_pair(pair, min_version)
        except PairError as exc:
            problems.add(p.loc(exc.field), exc.message)
        pairs.append(pair)
    return TlsConfig(certificates=tuple(pairs), min_version=min_version)
