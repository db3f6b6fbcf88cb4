"""The `tls:` section: every problem reported with its location, before anything binds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)

from gateway import config as cfg
from gateway.metrics import Metrics
from gateway.proxy.snapshot import SnapshotHolder, compile_snapshot
from gateway.serve.reload import Reloader
from tests.support.env import ENV
from tests.support.inprocess import base_config, route
from tests.support.tls import Pki, make_pki, write_config


def build(tls: Any) -> cfg.Config:
    return cfg.build(base_config([route(upstream="http://127.0.0.1:9/x")], tls=tls), environ=ENV)


def problems_of(tls: Any) -> list[str]:
    with pytest.raises(cfg.ConfigError) as err:
        build(tls)
    return err.value.problems


def pair(c: Path, k: Path) -> dict[str, str]:
    return {"cert_file": str(c), "key_file": str(k)}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def test_pairs_and_defaults(pki: Pki) -> None:
    a = pki.write(pki.leaf("a.test"), "a")
    b = pki.write(pki.leaf("b.test"), "b")
    config = build({"certificates": [pair(*a), pair(*b)]})
    assert config.tls is not None
    assert [p.cert_file for p in config.tls.certificates] == [str(a[0]), str(b[0])]
    assert config.tls.min_version == "1.2"
    # Unquoted YAML 1.3 is a float: it means the same as "1.3".
    assert build({"certificates": [pair(*a)], "min_version": 1.3}).tls.min_version == "1.3"  # type: ignore[union-attr]
    # No tls section: plain HTTP, as before.
    assert build_plain().tls is None


def build_plain() -> cfg.Config:
    return cfg.build(base_config([route(upstream="http://127.0.0.1:9/x")]), environ=ENV)


def test_key_of_another_certificate_is_reported_at_its_key_file(pki: Pki) -> None:
    a = pki.write(pki.leaf("a.test"), "a")
    b_cert, _ = pki.write(pki.leaf("b.test"), "b")
    problems = problems_of({"certificates": [pair(*a), pair(b_cert, a[1])]})
    assert len(problems) == 1
    assert problems[0].startswith("tls.certificates[1].key_file: ")
    assert "does not match the certificate in" in problems[0]


def test_unreadable_and_malformed_files(pki: Pki, tmp_path: Path) -> None:
    good = pki.write(pki.leaf("a.test"), "a")
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("hello\n")
    encrypted = tmp_path / "enc.key"
    key = load_pem_private_key(good[1].read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pass"))
    )
    problems = problems_of(
        {
            "certificates": [
                pair(tmp_path / "missing.crt", good[1]),
                pair(good[0], tmp_path / "missing.key"),
                pair(not_pem, good[1]),
                pair(good[0], not_pem),
                pair(good[0], encrypted),
            ]
        }
    )
    assert problems == [
        f"tls.certificates[0].cert_file: cannot read {tmp_path}/missing.crt: No such file or directory",
        f"tls.certificates[1].key_file: cannot read {tmp_path}/missing.key: No such file or directory",
        f"tls.certificates[2].cert_file: {not_pem} holds no PEM certificate",
        f"tls.certificates[3].key_file: {not_pem} holds no PEM private key",
        f"tls.certificates[4].key_file: {encrypted} is encrypted; store it unencrypted with "
        "restricted permissions",
    ]


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ({"certificates": []}, "tls.certificates: at least one {cert_file, key_file} pair is required"),
        ({}, "tls.certificates: at least one {cert_file, key_file} pair is required"),
        ("yes", "tls: expected a mapping, got str"),
        ({"certificates": [{"cert_file": "/x"}]}, "tls.certificates[0].key_file: is required"),
        (
            {"certificates": [{"cert": "/x", "cert_file": "/x", "key_file": "/y"}]},
            "tls.certificates[0].cert: unknown key",
        ),
        (
            {"min_version": "1.1", "certificates": []},
            "tls.min_version: '1.1' is not one of: 1.2, 1.3 (Telegram needs 1.2)",
        ),
        (
            {"min_verison": "1.2", "certificates": []},
            "tls.min_verison: unknown key (did you mean min_version?)",
        ),
    ],
)
def test_structure_problems(tls: Any, expected: str) -> None:
    assert expected in problems_of(tls)


def test_reload_refuses_a_tls_change_but_not_renewed_files(pki: Pki, tmp_path: Path) -> None:
    """The listener's TLS settings need a restart; new bytes in the same files do not."""
    a = pki.write(pki.leaf("a.test"), "a")
    b = pki.write(pki.leaf("b.test"), "b")
    data = base_config([route(upstream="http://127.0.0.1:9/x")], tls={"certificates": [pair(*a)]})
    path = write_config(tmp_path / "g.yaml", data)
    metrics = Metrics()
    holder = SnapshotHolder(compile_snapshot(cfg.load(str(path), ENV), metrics))
    reloader = Reloader(str(path), holder, metrics)
    # Renewal: same paths, new contents, plus an unrelated edit -> applied.
    pki.write(pki.leaf("a.test"), "a")
    data["mode"] = "report-only"
    write_config(path, data)
    assert reloader.reload() is True
    assert holder.current.config.mode == "report-only"
    # Another certificate list -> refused, the running one is kept.
    data["tls"] = {"certificates": [pair(*a), pair(*b)]}
    write_config(path, data)
    assert reloader.reload() is False
    assert holder.current.config.tls is not None
    assert len(holder.current.config.tls.certificates) == 1
