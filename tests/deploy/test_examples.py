"""The two sidecar examples of helm/examples/:

- bot-with-sidecar: an existing bot's chart that depends on the gateway chart and includes its
  named templates in the bot's own Deployment (dependencies resolved by Helm, as a user would);
- existing-bot: plain manifests of a bot plus strategic-merge patches; the patch's container is
  exactly what the chart's named templates render, and the patched objects are valid.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.deploy_support import (
    CHART,
    CRD_KINDS,
    EXAMPLES,
    Doc,
    assert_gateway_wired,
    by_kind,
    check_config,
    config_text,
    gateway_container,
    kube_versions,
    labels_match,
    one,
    render,
    secret_mounts,
    strategic_merge,
    validate_strict,
)

BOT_CHART = "bot-with-sidecar"
EXISTING = EXAMPLES / "existing-bot"
MONITORING = {"webhook-gateway": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


@pytest.fixture(scope="module")
def bot_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of helm/ with the example's dependency resolved by Helm (`helm dependency update`)."""
    helm_dir = tmp_path_factory.mktemp("helm") / "helm"
    shutil.copytree(CHART, helm_dir / "webhook-gateway")
    shutil.copytree(EXAMPLES / BOT_CHART, helm_dir / "examples" / BOT_CHART)
    chart = helm_dir / "examples" / BOT_CHART
    helm.dependency_update(chart)
    assert [p.name for p in (chart / "charts").iterdir()] == ["webhook-gateway-0.1.0.tgz"]
    return chart


@functools.cache
def _render_bot(chart: Path, monitoring: bool) -> list[Doc]:
    return render(chart, MONITORING if monitoring else None, release="my-bot")


@pytest.mark.parametrize("monitoring", [False, True])
def test_bot_chart_renders_the_sidecar_into_the_bots_pod(
    bot_chart: Path, monitoring: bool, tmp_path: Path
) -> None:
    docs = copy.deepcopy(_render_bot(bot_chart, monitoring))
    expected = {"ConfigMap", "Deployment", "Service"} | (
        {"ServiceMonitor", "PrometheusRule"} if monitoring else set()
    )
    assert {d["kind"] for d in docs} == expected
    deployments = by_kind(docs)["Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == ["my-bot"], "the bot's own Deployment, no other"
    dep = deployments[0]
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["bot", "webhook-gateway"]
    cm = one(docs, "ConfigMap")
    container = assert_gateway_wired(pod, cm)
    cfg = yaml.safe_load(config_text(cm))
    assert cfg["mode"] == "report-only"
    assert all(r["upstream"].startswith("http://127.0.0.1:") for r in cfg["routes"])

    # the bot's Service now targets the gateway's port; the bot listens on loopback only
    services = by_kind(docs)["Service"]
    [public] = [s for s in services if s["metadata"]["name"] == "my-bot"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels_match(public["spec"]["selector"], pod_labels)
    port_names = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["gateway"]
    assert "gateway" in port_names
    [bot] = [c for c in pod["containers"] if c["name"] == "bot"]
    assert {e["name"]: e["value"] for e in bot["env"]}["LISTEN"].startswith("127.0.0.1:")

    if monitoring:  # the metrics Service selects the bot's pods, the ServiceMonitor that Service
        [metrics] = [s for s in services if s["metadata"]["name"] != "my-bot"]
        assert labels_match(metrics["spec"]["selector"], pod_labels)
        sm = one(docs, "ServiceMonitor")
        assert labels_match(sm["spec"]["selector"]["matchLabels"], metrics["metadata"]["labels"])
        assert not labels_match(sm["spec"]["selector"]["matchLabels"], public["metadata"].get("labels", {}))

    for version in kube_versions():
        for doc in docs:
            if doc["kind"] not in CRD_KINDS:
                validate_strict(doc, version)

    result = check_config(config_text(cm), container, secret_mounts(pod, container), tmp_path)
    assert result.returncode == 0, result.stderr


def test_bot_chart_lints_clean(bot_chart: Path) -> None:
    report = helm.lint(bot_chart, None, strict=True, kube_version=f"v{kube_versions()[-1]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report
    assert report["total_charts_linted"] == 1  # the gateway chart itself: test_chart.py


def _yaml_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def _gateway_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((EXISTING / "gateway-values.yaml").read_text())
    return values


def test_existing_bot_patch_is_what_the_chart_renders() -> None:
    """deployment-patch.yaml carries exactly the container and volumes the named templates
    render for gateway-values.yaml (seen through the standalone Deployment, which includes the
    same templates), so the example cannot drift from the chart."""
    rendered = render(values={**_gateway_values(), "deploymentMode": "standalone"}, release="my-bot-gateway")
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    [patch] = _yaml_docs(EXISTING / "deployment-patch.yaml")
    patch_pod = patch["spec"]["template"]["spec"]
    assert gateway_container(patch_pod) == gateway_container(pod)
    assert patch_pod["volumes"] == pod["volumes"]


def test_existing_bot_patched_objects_are_valid_and_wired(tmp_path: Path) -> None:
    installed = render(values=_gateway_values(), release="my-bot-gateway")
    assert {d["kind"] for d in installed} == {"ConfigMap"}
    cm = one(installed, "ConfigMap")
    bot_docs = _yaml_docs(EXISTING / "bot.yaml")
    dep = strategic_merge(one(bot_docs, "Deployment"), _yaml_docs(EXISTING / "deployment-patch.yaml")[0])
    svc = strategic_merge(one(bot_docs, "Service"), _yaml_docs(EXISTING / "service-patch.yaml")[0])

    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["bot", "webhook-gateway"]
    container = assert_gateway_wired(pod, cm)
    [bot] = [c for c in pod["containers"] if c["name"] == "bot"]
    assert bot["image"] == "registry.example.com/my-bot:1.0.0", "the bot container is kept as it was"
    assert {e["name"]: e["value"] for e in bot["env"]} == {"LISTEN": "127.0.0.1:3000"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "gateway"}]
    port_names = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    assert "gateway" in port_names
    assert labels_match(svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    assert labels_match(
        _gateway_values()["sidecar"]["podSelector"], dep["spec"]["template"]["metadata"]["labels"]
    )
    for version in kube_versions():
        for doc in (dep, svc, cm):
            validate_strict(doc, version)
    result = check_config(config_text(cm), container, secret_mounts(pod, container), tmp_path)
    assert result.returncode == 0, result.stderr


def test_strategic_merge_merges_by_name_and_keeps_the_rest() -> None:
    base = {"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}]}], "n": 1}
    patch = {"containers": [{"name": "a", "env": [{"name": "K", "value": "2"}]}, {"name": "b", "image": "y"}]}
    assert strategic_merge(base, patch) == {
        "containers": [
            {"name": "a", "image": "x", "env": [{"name": "K", "value": "2"}]},
            {"name": "b", "image": "y"},
        ],
        "n": 1,
    }
