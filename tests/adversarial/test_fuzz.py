"""The fuzz targets in fuzz/: atheris for a bounded time, hypothesis always, and proof they bite.

FUZZ_SECONDS (default 6) is how long each atheris harness runs; both run at once, in their own
processes. Longer: FUZZ_SECONDS=600 python -m pytest tests/adversarial -k atheris
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz import targets
from gateway.proxy.clientip import IPAddress, NetSet, parse_ip
from gateway.schemes import SCHEMES
from gateway.schemes.base import Signed, SigResult
from tests.adversarial.harness import SETTINGS
from tests.support.env import ROOT_DIR as ROOT
from tests.support.process import stop_process

FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "6"))
HARNESSES = sorted(targets.TARGETS_BY_NAME)
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


Run = tuple[subprocess.Popen[bytes], Path]


@pytest.fixture(scope="module")
def atheris_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Start every harness at once (one process each), so they share the wall-clock budget."""
    if not HAVE_ATHERIS:
        pytest.skip(
            "atheris is not installed (no wheel for this platform/Python): the same targets run "
            "under hypothesis in test_targets_under_hypothesis"
        )
    out = tmp_path_factory.mktemp("atheris")
    runs: dict[str, Run] = {}
    for name in HARNESSES:
        log_path = out / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "fuzz" / f"fuzz_{name}.py"),
                    f"-max_total_time={FUZZ_SECONDS}",
                    f"-artifact_prefix={out}/",
                    "-rss_limit_mb=2048",
                    "-timeout=20",
                    "-print_final_stats=1",
                ],
                cwd=out,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        runs[name] = (proc, log_path)
    try:
        yield runs
    finally:
        for proc, _ in runs.values():
            stop_process(proc)


@pytest.mark.parametrize("name", HARNESSES)
def test_atheris_harness_finds_nothing(atheris_runs: dict[str, Run], name: str) -> None:
    proc, log_path = atheris_runs[name]
    rc = proc.wait(FUZZ_SECONDS + 120)
    output = log_path.read_text(errors="replace")
    assert rc == 0, f"fuzz/fuzz_{name}.py found a crash:\n{output[-6000:]}"
    runs = [line for line in output.splitlines() if line.startswith("stat::number_of_executed_units:")]
    assert runs and int(runs[0].split()[-1]) > 1000, output[-2000:]


@pytest.mark.parametrize("name", HARNESSES)
def test_targets_under_hypothesis(name: str) -> None:
    target = targets.TARGETS_BY_NAME[name]

    @settings(SETTINGS, max_examples=SETTINGS.max_examples * 10)
    @given(st.binary(max_size=1024))
    def run(data: bytes) -> None:
        target(data)

    run()


def test_every_scheme_is_a_target() -> None:
    assert {t.scheme for t in targets.TARGETS} == set(SCHEMES)
    by_name = {t.scheme: t for t in targets.TARGETS}
    # whether a scheme signs the body is found by probing: check the probe on two known ones
    assert by_name["hmac"].signs_body and not by_name["telegram"].signs_body


# ---------------------------------------------------------------- the targets can fail


class AcceptsAnything:
    def verify(self, req: Signed) -> SigResult:
        return SigResult(True, None, 0)


class IgnoresBody:
    """Checks the header like the real verifier for the probe body, whatever body it is given."""

    def __init__(self, inner: targets.Verifier) -> None:
        self.inner = inner

    def verify(self, req: Signed) -> SigResult:
        return self.inner.verify(Signed(req.headers, b"", req.now, req.query))


def _raises_somewhere(target: object, tries: int = 3000) -> bool:
    rng = random.Random(8)
    for _ in range(tries):
        try:
            target(rng.randbytes(rng.randrange(1, 300)))  # type: ignore[operator]
        except AssertionError:
            return True
    return False


def test_schemes_target_catches_a_verifier_that_accepts_any_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = [replace(t, wrong=AcceptsAnything()) for t in targets.TARGETS]
    monkeypatch.setattr(targets, "TARGETS", broken)
    assert _raises_somewhere(targets.schemes_one_input)


def test_schemes_target_catches_a_verifier_that_ignores_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    hmac_targets = [t for t in targets.TARGETS if t.scheme == "hmac"]
    assert hmac_targets
    broken = []
    for t in hmac_targets:
        assert t.sign is not None
        sign = t.sign
        # sign the empty body whatever the body is, and verify as if the body were empty
        broken.append(
            replace(t, right=IgnoresBody(t.right), sign=lambda body, now, query, s=sign: s(b"", now, query))
        )
    monkeypatch.setattr(targets, "TARGETS", broken)
    assert _raises_somewhere(targets.schemes_one_input)


def _leftmost(peer: IPAddress | None, headers: list[str], trusted: NetSet) -> IPAddress | None:
    """oauth2-proxy's early bug: the leftmost X-Forwarded-For entry, which the client wrote."""
    if peer is None or not trusted or peer not in trusted:
        return peer
    hops = [parse_ip(h) for header in headers for h in header.split(",")]
    return next((h for h in hops if h is not None), peer)


def test_clientip_target_catches_the_leftmost_entry_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "client_ip", _leftmost)
    assert _raises_somewhere(targets.clientip_one_input)


def test_clientip_expected_rule_examples() -> None:
    """The reference the target compares with, on the cases the README documents."""
    trusted = NetSet([ipaddress.ip_network("10.0.0.0/8")])
    peer = ipaddress.ip_address("10.0.0.1")
    spoofed = ["6.6.6.6, 149.154.167.220, 10.0.0.2"]
    assert str(targets.expected_client(peer, spoofed, trusted)) == "149.154.167.220"
    assert str(targets.expected_client(peer, ["unknown, 10.0.0.3"], trusted)) == "10.0.0.3"
    outsider = ipaddress.ip_address("8.8.8.8")
    assert targets.expected_client(outsider, spoofed, trusted) == outsider


def test_fuzz_scripts_exist_for_every_target() -> None:
    for name in HARNESSES:
        assert (Path(ROOT) / "fuzz" / f"fuzz_{name}.py").is_file()
