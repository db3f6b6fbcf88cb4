"""The soak run (`bench/soak.py`) in short: the three set-ups with every fault, a few seconds
each, at a modest rate. Nothing acknowledged may be lost and no gateway's memory may grow past a
bound; the accounting itself is shown to catch a loss."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.env import ROOT_DIR

SOAK = ROOT_DIR / "bench" / "soak.py"
# A gateway's resident memory may grow this much over a run (caches, allocator arenas), no more.
RSS_GROWTH_MIB = 64


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_soak(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--json", str(out), "--workdir", str(tmp_path / "work"), *args],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == [], proc.stdout + proc.stderr
    results: list[dict[str, Any]] = data["results"]
    return proc, results


def test_account_reports_an_acknowledged_update_the_bot_never_got() -> None:
    soak = load_soak()
    delivered = Counter({1: 1, 2: 2, 3: 1, 99: 1})
    assert soak.account([1, 2, 3], delivered)["lost"] == 0
    result = soak.account([1, 2, 3, 4], delivered)
    assert result["lost"] == 1
    assert result["lost_ids"] == [4]
    assert result["delivered_more_than_once"] == 1
    assert result["acknowledged"] == 4


def test_bot_record_parsing_counts_repeats(tmp_path: Path) -> None:
    soak = load_soak()
    record = tmp_path / "delivered.txt"
    record.write_bytes(b"5\n6\n5\n")
    assert soak.read_delivered(record) == Counter({5: 2, 6: 1})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_loses_nothing_acknowledged_and_memory_stays_bounded(tmp_path: Path) -> None:
    proc, results = run_soak(tmp_path, "--duration", "8", "--rate", "100", "--connections", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["setup"] for r in results] == ["a", "b", "c"]
    for r in results:
        where = f"set-up {r['setup']}: {proc.stdout}"
        assert r["lost"] == 0, where
        assert r["unacknowledged"] == 0, where
        # Every update the driver produced was acknowledged and reached the bot.
        assert r["acknowledged"] == r["sent"] == 800, where
        assert r["delivered"] >= r["acknowledged"], where
        # The faults happened: bot down twice (its updates were refused and retried), a gateway
        # SIGKILLed and restarted, reloads by rename and by SIGHUP.
        assert r["faults"]["bot_kill"] == 2, where
        assert r["faults"]["gateway_kill"] == 1, where
        assert r["faults"]["flip"] >= 1, where
        # A SIGHUP due while a gateway restarts is skipped (before its handler, it would kill).
        assert r["faults"]["hup"] >= 1, where
        assert r["faults"]["hup"] + r["faults"].get("hup_skipped", 0) >= 2 * len(r["rss_mib"]), where
        assert sum(r["non_2xx"].values()) > 0, where
        for gw in r["rss_mib"]:
            assert gw["start"] > 0 and gw["end"] > 0, where
            assert gw["end"] < gw["start"] + RSS_GROWTH_MIB, where
    b = results[1]
    assert b["faults"]["redis_kill"] == 1 and len(b["rss_mib"]) == 2
    assert b["rss_mib"][1]["starts"] == 2
    c = results[2]
    assert c["backlog"], "the spool depth was sampled from /metrics"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_exits_non_zero_when_an_acknowledged_update_is_missing(tmp_path: Path) -> None:
    # The driver is told to forget one update the bot did record: the run must call it lost.
    args = ["--setups", "a", "--duration", "3", "--rate", "50", "--connections", "5"]
    proc, results = run_soak(tmp_path, *args, "--forget-delivered", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert results[0]["lost"] == 1
    assert "FAIL: 1 acknowledged update(s) never reached the bot" in proc.stdout
