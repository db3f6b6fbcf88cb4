"""CertStore without a network: which certificate a name gets, and what a refresh does with
files that vanish, break or change (driven step by step, no waiting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config as cfg
from gateway.metrics import Metrics
from gateway.serve.service import Service
from gateway.tls.certs import CertPair
from gateway.tls.config import TlsConfig
from gateway.tls.store import CertStore
from tests.support.env import ENV
from tests.support.inprocess import base_config, route
from tests.support.tls import Pki, make_pki, serial_of


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def store_for(*pairs: tuple[Path, Path]) -> tuple[CertStore, Metrics]:
    metrics = Metrics()
    config = TlsConfig(tuple(CertPair(str(c), str(k)) for c, k in pairs))
    return CertStore(config, metrics), metrics


def errors(metrics: Metrics) -> float:
    return metrics.tls_reloads.labels("error")._value.get()


def test_pick_by_name(pki: Pki) -> None:
    store, _ = store_for(
        pki.write(pki.leaf("a.test"), "a"),
        pki.write(pki.leaf("*.b.test", "b.test"), "b"),
        pki.write(pki.leaf("x.b.test"), "x"),
    )
    picked = {
        name: store.pick(name).names[0] for name in ("a.test", "b.test", "y.b.test", "x.b.test", "b.test.")
    }
    # The exact name beats an earlier wildcard; a trailing dot is the same name.
    assert picked == {
        "a.test": "a.test",
        "b.test": "*.b.test",
        "y.b.test": "*.b.test",
        "x.b.test": "x.b.test",
        "b.test.": "*.b.test",
    }
    assert store.pick("b.test.evil").names == ("a.test",)
    assert store.pick("").names == ("a.test",)


def test_vanishing_broken_and_renewed_files(pki: Pki) -> None:
    first = pki.leaf("bot.test")
    cert, key = pki.write(first, "bot")
    store, metrics = store_for((cert, key))
    key_bytes = key.read_bytes()

    assert store.refresh() is False  # nothing changed

    key.unlink()  # gone (or a swap caught half-way): keep serving, report it once
    assert store.refresh() is False
    assert store.refresh() is False
    assert errors(metrics) == 1
    assert serial_of(first) == store.pick("bot.test").leaf.serial_number

    key.write_bytes(key_bytes)  # back as it was: nothing to reload
    assert store.refresh() is False

    renewed = pki.leaf("bot.test")
    new_cert, new_key = pki.write(renewed, "new", into=pki.dir / "new")
    cert.write_bytes(new_cert.read_bytes())  # certificate first: does not match the old key
    assert store.refresh() is False
    assert store.refresh() is False  # the same broken bytes are not retried
    assert errors(metrics) == 2
    key.write_bytes(new_key.read_bytes())
    assert store.refresh() is True
    assert store.pick("bot.test").leaf.serial_number == serial_of(renewed)
    assert metrics.tls_reloads.labels("success")._value.get() == 1

    key.unlink()  # a second disappearance is reported again
    assert store.refresh() is False
    assert errors(metrics) == 3


def test_service_refuses_to_start_when_files_broke_after_the_check(pki: Pki) -> None:
    cert, key = pki.write(pki.leaf("bot.test"), "bot")
    tls = {"certificates": [{"cert_file": str(cert), "key_file": str(key)}]}
    config = cfg.build(base_config([route(upstream="http://127.0.0.1:9/x")], tls=tls), environ=ENV)
    key.write_text("not a key\n")
    with pytest.raises(cfg.ConfigError) as err:
        Service(config)
    assert err.value.problems == [f"tls.certificates[0].key_file: {key} holds no PEM private key"]
