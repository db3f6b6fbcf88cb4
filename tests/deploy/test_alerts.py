"""The Prometheus rules: promtool accepts them, its unit tests (alerts fire above the thresholds
and stay silent under them) pass and would catch a wrong threshold, and every metric and label
value the rules use is one the gateway really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import CHECKS, REASONS, SPOOL_RESULTS, Metrics
from tests.deploy.deploy_support import ALERTS, REPO

UNIT_TESTS = ALERTS.parent / "alerts_test.yaml"
SELECTOR = re.compile(r"\b(webhook_gateway_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*')


# Every rules file the chart's PrometheusRule carries (the first one's own tests are below; the
# others have promtool unit tests of their own in tests/spool and tests/tls).
RULE_FILES = [ALERTS, ALERTS.parent / "alerts-spool.yaml", ALERTS.parent / "alerts-tls-telegram.yaml"]


def _rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for g in groups for rule in g["rules"]]


def _all_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for rule in _rules(path)]


def _promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("threshold", "failing_case"),
    [
        # paging at 1% instead of 0.1% misses the 0.2% case that must fire
        ("0.01", "signature mismatch ratio above 0.1% fires after 5 minutes"),
        # paging at 0.01% fires on the 0.05% case that must stay silent
        ("0.0001", "signature mismatch ratio under 0.1% stays silent"),
    ],
)
def test_unit_tests_catch_a_wrong_threshold(threshold: str, failing_case: str, tmp_path: Path) -> None:
    text = ALERTS.read_text()
    assert text.count("> 0.001\n") == 1
    (tmp_path / "alerts.yaml").write_text(text.replace("> 0.001\n", f"> {threshold}\n"))
    shutil.copy(UNIT_TESTS, tmp_path / "alerts_test.yaml")
    result = _promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert f"name: {failing_case}," in result.stdout + result.stderr


def test_mismatch_alert_is_the_one_line_ratio_over_inbound_requests() -> None:
    [rule] = [r for r in _rules() if r["alert"] == "WebhookGatewaySignatureMismatchRatioHigh"]
    expr = rule["expr"]
    assert "\n" not in expr.strip()
    numerator, _, rest = expr.partition(" / ")
    denominator, _, threshold = rest.rpartition(" > ")
    assert 'rate(webhook_gateway_check_failures_total{check="signature"}[5m])' in numerator
    assert 'rate(webhook_gateway_requests_total{outcome!="not_found"}[5m])' in denominator
    assert float(threshold) == 0.001
    assert rule["for"] == "5m"
    assert rule["labels"]["severity"] == "page"


def test_every_alert_is_documented() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} == {
        "WebhookGatewaySignatureMismatchRatioHigh",
        "WebhookGatewayConfigReloadFailing",
        "WebhookGatewayUpstreamErrors",
    }
    section = _alerts_section()
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert f"`{rule['alert']}`" in section, (
            f"docs/metrics.md's Alerts section does not explain {rule['alert']}"
        )


def _alerts_section() -> str:
    """The "## Alerts" section of docs/metrics.md, where every alert is explained."""
    page = (REPO / "docs" / "metrics.md").read_text()
    start = page.index("\n## Alerts\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else len(page)]


def _exported() -> dict[str, dict[str, set[str]]]:
    """Sample name -> label -> values, from a Metrics registry exercised the way the gateway does:
    one route, every outcome, every check failure, a reload of each result, a spooled route's
    deliveries and write failures, a served certificate and a Telegram watcher."""
    m = Metrics()
    route = m.route("r")
    route.upstream.observe(0.01)
    route.duration.observe(0.01)
    route.secret_matched(0)
    m.route_enforced.labels("r").set(1)
    for check in CHECKS:
        for reason in REASONS:
            for mode in ("enforce", "report-only"):
                route.failure(check, reason, mode)
    spool = m.spool
    spool.depth.labels("r").set(1)
    spool.oldest_age.labels("r").set(1)
    spool.dead.labels("r").set(0)
    for result in SPOOL_RESULTS:
        spool.deliveries.labels("r", result).inc()
    spool.dead_letters.labels("r").inc()
    for reason in ("full", "disk_full", "locked", "timeout", "unavailable", "error"):
        spool.write_failures.labels("r", reason).inc()
    m.tls_certificate_expiry.labels("bot.example.com").set(2e9)
    for gauge in (m.telegram_pending, m.telegram_last_error, m.telegram_url_matches, m.telegram_watch_up):
        gauge.labels("r").set(1)
    out: dict[str, dict[str, set[str]]] = {}
    for family in m.registry.collect():
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for k, v in sample.labels.items():
                labels.setdefault(k, set()).add(v)
    return out


def test_every_metric_and_label_value_in_the_rules_is_exported() -> None:
    exported = _exported()
    used: set[str] = set()
    for rule in _all_rules():
        for name, matchers in SELECTOR.findall(rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name} is not exported by gateway/metrics.py"
            used.add(name)
            for label, op, value in MATCHER.findall(matchers):
                values = exported[name].get(label)
                assert values is not None, f"{rule['alert']}: {name} has no label {label}"
                if op in ("=", "!="):
                    assert value in values, f"{rule['alert']}: {name}{{{label}}} is never {value!r}"
                else:
                    assert any(re.fullmatch(value, v) for v in values), (rule["alert"], label, value)
    assert used >= {
        "webhook_gateway_requests_total",
        "webhook_gateway_check_failures_total",
        "webhook_gateway_config_last_reload_successful",
        "webhook_gateway_spool_oldest_age_seconds",
        "webhook_gateway_spool_write_failures_total",
        "webhook_gateway_dead_letters_total",
        "webhook_gateway_tls_certificate_expiry_timestamp_seconds",
        "webhook_gateway_tls_certificate_reloads_total",
        "webhook_gateway_telegram_webhook_url_matches",
        "webhook_gateway_telegram_last_error_timestamp_seconds",
        "webhook_gateway_telegram_pending_updates",
        "webhook_gateway_telegram_watch_up",
    }


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_checks_every_rules_file(path: Path) -> None:
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules(path))} rules found" in result.stdout
    tests = path.with_name(path.stem + "_test.yaml")
    result = _promtool("test", "rules", str(tests), cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_chart_alert_is_documented_in_the_alerts_section() -> None:
    section = _alerts_section()
    for rule in _all_rules():
        assert rule["labels"]["severity"] in {"page", "warning"}
        assert f"`{rule['alert']}`" in section, (
            f"docs/metrics.md's Alerts section does not explain {rule['alert']}"
        )


def test_metric_check_sees_a_metric_that_does_not_exist() -> None:
    exported = _exported()
    assert "webhook_gateway_spool_queue_length" not in exported
    assert "webhook_gateway_spool_depth" in exported
    assert "webhook_gateway_requests_total" in exported
    assert "upstream_error" in exported["webhook_gateway_requests_total"]["outcome"]
    assert "signature" in exported["webhook_gateway_check_failures_total"]["check"]
