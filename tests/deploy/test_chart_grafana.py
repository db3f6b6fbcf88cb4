"""The chart's Grafana dashboard ConfigMap, rendered by Helm's Go SDK: off by default, labelled for
Grafana's dashboard sidecar when on, valid for the Kubernetes schemas, and carrying exactly the
dashboard of deploy/grafana (one file: the chart's copy is a link to it)."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest

from tests.deploy.deploy_support import CHART, REPO, by_kind, kube_versions, one, render, validate_strict

DASHBOARD = REPO / "deploy" / "grafana" / "webhook-gateway.json"
CHART_COPY = CHART / "files" / "grafana-dashboard.json"


def dashboard_configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in by_kind(docs).get("ConfigMap", []) if "webhook-gateway.json" in d.get("data", {})]


@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_off_by_default(mode: str) -> None:
    assert dashboard_configmaps(render(values={"deploymentMode": mode})) == []


def test_the_chart_file_is_the_deploy_file_not_a_copy() -> None:
    assert CHART_COPY.is_symlink()
    assert CHART_COPY.resolve() == DASHBOARD.resolve()


@pytest.mark.parametrize("version", kube_versions())
@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_enabled_renders_a_sidecar_labelled_configmap_with_the_dashboard(mode: str, version: str) -> None:
    docs = render(values={"deploymentMode": mode, "grafanaDashboard": {"enabled": True}})
    [cm] = dashboard_configmaps(docs)
    validate_strict(cm, version)
    assert cm["metadata"]["name"] == "gw-webhook-gateway-dashboard"
    assert cm["metadata"]["namespace"] == "bots"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == "webhook-gateway"
    assert cm["data"]["webhook-gateway.json"] == DASHBOARD.read_text().rstrip("\n")
    assert json.loads(cm["data"]["webhook-gateway.json"])["uid"] == "webhook-gateway"
    # the gateway's own ConfigMap is still there and still the only one with gateway.yaml
    assert "gateway.yaml" in one([d for d in docs if d not in (cm,)], "ConfigMap")["data"]


def test_labels_annotations_and_namespace_follow_the_values() -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "labels": {"grafana_dashboard": "webhook", "team": "bots"},
            "annotations": {"grafana_folder": "Bots"},
            "namespace": "monitoring",
        }
    }
    [cm] = dashboard_configmaps(render(values=values))
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "webhook"
    assert cm["metadata"]["labels"]["team"] == "bots"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Bots"}
    validate_strict(cm, kube_versions()[-1])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"grafanaDashboard": {"enabled": "yes"}}, "/grafanaDashboard/enabled"),
        ({"grafanaDashboard": {"enabled": True, "label": {}}}, "additional properties 'label' not allowed"),
        ({"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}, "/grafanaDashboard/labels"),
        ({"grafanaDashboard": {"namespace": "Monitoring"}}, "/grafanaDashboard/namespace"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render(values=values)


def test_helm_lint_is_clean_with_the_dashboard() -> None:
    values = {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Bots"}}}
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube_versions()[-1]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report
