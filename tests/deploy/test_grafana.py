"""The Grafana dashboard (deploy/grafana/webhook-gateway.json): every panel's PromQL, template
variables filled in, is a recording rule that `promtool test rules` evaluates over the series a
real gateway exported (TLS listener, enforce and report-only routes, a spool route with a dead
letter, a Telegram watcher) and must return something, so a renamed metric or label fails here.
The dashboard's own shape (variables, datasource, the 0.1% line) is checked too."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.deploy_support import REPO
from tests.support.botapi import BOT_TOKEN, fake_bot_api
from tests.support.env import TG_SECRET
from tests.support.inprocess import base_config, route, running_gateway
from tests.support.tls import client_context, make_pki
from tests.support.upstream import recording_upstream

DASHBOARD = REPO / "deploy" / "grafana" / "webhook-gateway.json"
ROUTES = ("tg-enforce", "tg-report", "spooled")
# Prometheus adds these to every scraped series; the dashboard groups by them.
TARGET = {"job": "webhook-gateway", "instance": "10.0.0.7:9090"}
PUBLIC_URL = "https://bot.example.test/tg"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
STEP, STEPS, EVAL_AT = "15s", 40, "5m"


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded into collapsed rows."""
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def variable_values() -> dict[str, str]:
    """What Grafana puts in place of each variable: `route` as a multi-value selection of every
    route (Grafana's regex format), the rate interval as a window that holds several scrapes."""
    return {"route": "(" + "|".join(ROUTES) + ")", "__rate_interval": "1m"}


def substitute(expr: str) -> str:
    values = variable_values()
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
    assert "$" not in out, out
    return out


def recording_rules(board: dict[str, Any]) -> list[dict[str, str]]:
    """One recording rule per panel target, plus the route variable's query."""
    rules = []
    for p in panels(board):
        for t in p.get("targets", []):
            rules.append({"record": f"grafana:panel_{p['id']}_{t['refId']}", "expr": substitute(t["expr"])})
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", var["query"]["query"])
            assert m, var["query"]
            rules.append({"record": f"grafana:variable_{var['name']}", "expr": f"count by ({m[2]}) ({m[1]})"})
    return rules


# ---------------------------------------------------------------- what a real gateway exports
async def _drive_a_gateway(tmp: Path) -> str:
    """Run a gateway with every feature the dashboard shows, make each series appear, scrape."""
    pki = make_pki(tmp)
    cert, key = pki.write(pki.leaf("bot.example.test", "127.0.0.1"), "bot")
    async with (
        fake_bot_api() as api,
        recording_upstream() as bot,
        recording_upstream(status=400, body=b'{"ok":false}') as refusing,
    ):
        api.info = {
            "url": "https://bot.example.test/tg",
            "pending_update_count": 7,
            "last_error_date": 1_700_000_000,
        }
        telegram = {
            "bot_token": "env:BOT_TOKEN",
            "api_base": api.base,
            "watch": True,
            "watch_interval": "100ms",
            "expected_url": PUBLIC_URL,
        }
        verify = {"scheme": "telegram", "secrets": ["env:TG_SECRET"]}
        config = base_config(
            [
                route("tg-enforce", bot.url, verify=verify),
                route("tg-report", bot.url, verify=verify, mode="report-only", telegram=telegram),
                route("spooled", refusing.url, delivery="spool"),
            ],
            tls={"certificates": [{"cert_file": str(cert), "key_file": str(key)}]},
            spool={"path": str(tmp / "spool.db"), "max_attempts": 1, "backoff_initial": "20ms"},
        )
        async with running_gateway(config, environ={"TG_SECRET": TG_SECRET, "BOT_TOKEN": BOT_TOKEN}) as gw:
            base = f"https://127.0.0.1:{gw.service.public_port}"
            good, forged = (
                {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
                {"X-Telegram-Bot-Api-Secret-Token": "x"},
            )
            await _send(client_context(pki), base, [
                ("/hook/tg-enforce", good, 200),
                ("/hook/tg-enforce", forged, 401),
                ("/hook/tg-report", forged, 200),
                ("/hook/spooled", {}, 200),
                ("/no/such/path", {}, 404),
            ])  # fmt: skip
            await _until(gw, "webhook_gateway_dead_letters_total", route="spooled")
            await _until(gw, "webhook_gateway_telegram_watch_up", route="tg-report")
            assert len(refusing.received) == 1 and len(bot.received) == 2
            return await gw.metrics_text()


async def _send(ctx: ssl.SSLContext, base: str, calls: list[tuple[str, dict[str, str], int]]) -> None:
    async with aiohttp.ClientSession() as s:
        for i, (path, headers, status) in enumerate(calls):
            body = json.dumps({"update_id": 1000 + i}).encode()
            async with s.post(base + path, data=body, headers=headers, ssl=ctx) as r:
                assert r.status == status, (path, r.status, await r.text())


async def _until(gw: Any, name: str, **labels: str) -> None:
    async with asyncio.timeout(30):
        while await gw.metric(name, **labels) < 1:
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> str:
    return asyncio.run(_drive_a_gateway(tmp_path_factory.mktemp("grafana")))


def input_series(metrics_text: str) -> list[dict[str, str]]:
    """Each scraped sample as a promtool input series with the scrape target's labels: counters
    (and histogram parts) grow by their scraped value each step, gauges hold it."""
    out = []
    for family in text_string_to_metric_families(metrics_text):
        growing = family.type in ("counter", "histogram")
        for sample in family.samples:
            labels = {**sample.labels, **TARGET}
            text = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            v = repr(float(sample.value))
            grows = growing and not sample.name.endswith("_created")
            out.append({"series": f"{sample.name}{{{text}}}", "values": f"{v}+{v if grows else 0}x{STEPS}"})
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promtool_check(board: dict[str, Any], metrics_text: str, where: Path) -> subprocess.CompletedProcess[str]:
    """Write the dashboard's rules and a unit test that each of them returns something."""
    rules = recording_rules(board)
    (where / "dashboard-rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "grafana-dashboard", "interval": STEP, "rules": rules}]})
    )
    unit = {
        "rule_files": ["dashboard-rules.yaml"],
        "evaluation_interval": STEP,
        "tests": [
            {
                "interval": STEP,
                "input_series": input_series(metrics_text),
                "promql_expr_test": [
                    {"expr": f"absent({r['record']})", "eval_time": EVAL_AT, "exp_samples": []} for r in rules
                ],
            }
        ],
    }
    (where / "dashboard-rules_test.yaml").write_text(yaml.safe_dump(unit, allow_unicode=True))
    return subprocess.run(
        ["promtool", "test", "rules", "dashboard-rules_test.yaml"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------- the tests
def test_every_panel_expression_returns_data_for_the_series_a_gateway_exports(
    exported: str, tmp_path: Path
) -> None:
    board = dashboard()
    result = promtool_check(board, exported, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # no panel escapes the check: each target of each panel is one of the rules promtool ran
    checked = {r["expr"] for r in recording_rules(board)}
    targets = [t for p in panels(board) for t in p.get("targets", [])]
    assert {substitute(t["expr"]) for t in targets} <= checked
    assert len(targets) == sum(1 for r in recording_rules(board) if r["record"].startswith("grafana:panel_"))
    assert len(targets) >= 14


def test_a_renamed_metric_in_a_panel_fails_the_check(exported: str, tmp_path: Path) -> None:
    text = DASHBOARD.read_text()
    assert text.count("webhook_gateway_spool_depth{") == 1
    broken = json.loads(text.replace("webhook_gateway_spool_depth{", "webhook_gateway_spool_queue_length{"))
    result = promtool_check(broken, exported, tmp_path)
    assert result.returncode != 0
    [panel] = [p for p in panels(broken) if "spool_queue_length" in json.dumps(p)]
    assert f"absent(grafana:panel_{panel['id']}_A)" in result.stdout + result.stderr


def test_a_label_value_the_gateway_never_exports_fails_the_check(exported: str, tmp_path: Path) -> None:
    text = DASHBOARD.read_text()
    broken = json.loads(text.replace('outcome!=\\"not_found\\"', 'outcome=\\"verified\\"'))
    result = promtool_check(broken, exported, tmp_path)
    assert result.returncode != 0


def test_every_panel_has_a_query_on_the_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    route_var = variables["route"]
    assert route_var["multi"] and route_var["includeAll"] and route_var["allValue"] == ".*"
    assert "__inputs" not in board, "no import-time inputs: the dashboard sidecar loads the file as is"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for p in panels(board):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
        metric_names = set(re.findall(r"\bwebhook_gateway_\w+", " ".join(t["expr"] for t in p["targets"])))
        route_metrics = metric_names - {
            "webhook_gateway_config_reloads_total",
            "webhook_gateway_config_last_reload_successful",
            "webhook_gateway_tls_certificate_expiry_timestamp_seconds",
        }
        if route_metrics:
            assert all('route=~"$route"' in t["expr"] for t in p["targets"]), p["title"]


def test_the_ratio_panel_draws_the_paging_threshold() -> None:
    [ratio] = [p for p in panels(dashboard()) if "0.1%" in p["title"]]
    defaults = ratio["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit"
    assert defaults["custom"]["thresholdsStyle"] == {"mode": "line"}
    assert {"color": "red", "value": 0.001} in defaults["thresholds"]["steps"]
    [target] = ratio["targets"]
    assert "sum by (route, check)" in target["expr"]
    assert "webhook_gateway_check_failures_total" in target["expr"]
    assert 'outcome!="not_found"' in target["expr"], "the alert's denominator"


def test_the_panels_the_dashboard_promises_are_there() -> None:
    exprs = " ".join(t["expr"] for p in panels(dashboard()) for t in p.get("targets", []))
    for needed in (
        "webhook_gateway_requests_total",
        "webhook_gateway_check_failures_total",
        "webhook_gateway_route_enforced",
        "histogram_quantile(0.5, sum by (route, le) (rate(webhook_gateway_upstream_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (route, le) (rate(webhook_gateway_upstream_duration_seconds_bucket",
        "webhook_gateway_config_reloads_total",
        "webhook_gateway_config_last_reload_successful",
        "webhook_gateway_spool_depth",
        "webhook_gateway_dead_letters_total",
        "webhook_gateway_tls_certificate_expiry_timestamp_seconds",
        "webhook_gateway_telegram_pending_updates",
        "webhook_gateway_telegram_last_error_timestamp_seconds",
    ):
        assert needed in exprs, needed


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in panels(dashboard()):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
