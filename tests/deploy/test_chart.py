"""The Helm chart, rendered by Helm's own Go SDK (helm-python-sdk) in both modes and with its
features toggled: every object validates against the Kubernetes schemas (strict), the pieces
point at each other, the rendered gateway config passes `webhook-gateway check`, and the
PrometheusRule carries exactly the plain rules file."""

from __future__ import annotations

import copy
import functools
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.deploy_support import (
    ALERTS,
    CHART,
    CRD_KINDS,
    REPO,
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
    validate_strict,
)

ROUTE = {
    "name": "my-bot",
    "path": "/tg/my-bot/a3f8b2c1d9e7",
    "upstream": "http://my-bot.bots.svc:3000/webhook",
    "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET", "env:TG_SECRET_PREVIOUS"]},
    "allow_sources": ["telegram"],
}
HMAC_ROUTE = {
    "name": "legacy",
    "path": "/hooks/legacy",
    "upstream": "http://legacy.bots.svc:8000/webhook",
    "mode": "report-only",
    "verify": {
        "scheme": "hmac",
        "header": "X-Telegram-Bot-Api-Secret-Hash",
        "secrets": ["file:/var/run/secrets/webhook-gateway/legacy/hook"],
    },
}
SECRET_ENV = [
    {"name": "TG_SECRET", "secretName": "my-bot-webhook", "key": "secret-token"},
    {"name": "TG_SECRET_PREVIOUS", "secretName": "my-bot-webhook", "key": "previous-secret-token"},
]

CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "standalone-defaults": ({}, {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}),
    "standalone-everything": (
        {
            "config": {
                "mode": "enforce",
                "trusted_proxies": ["10.0.0.0/8"],
                "shutdown_timeout": "20s",
                "limits": {"max_body_bytes": 262144, "upstream_timeout": "20s"},
                "routes": [ROUTE, HMAC_ROUTE],
            },
            "secretEnv": SECRET_ENV,
            "secretFiles": [
                {"secretName": "legacy-hook", "mountPath": "/var/run/secrets/webhook-gateway/legacy"}
            ],
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
            "image": {"repository": "registry.example.com/webhook-gateway", "digest": "sha256:" + "ab" * 32},
            "imagePullSecrets": [{"name": "registry"}],
            "replicaCount": 3,
            "bindAddress": "::",
            "ports": {"http": 8443, "admin": 9191},
            "service": {"type": "LoadBalancer", "port": 443, "annotations": {"example.com/lb": "external"}},
            "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "15s"},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "preStopSleepSeconds": 0,
            "podAnnotations": {"example.com/team": "bots"},
            "podLabels": {"team": "bots"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
            ],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "webhook-gateway"}},
                }
            ],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {
                                    "matchLabels": {"app.kubernetes.io/name": "webhook-gateway"}
                                },
                            },
                        }
                    ]
                }
            },
            "priorityClassName": "edge",
        },
        {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"},
    ),
    "standalone-minimal": (
        {"podDisruptionBudget": {"enabled": False}, "metricsService": {"enabled": True}, "replicaCount": 1},
        {"ConfigMap", "Deployment", "Service"},
    ),
    "standalone-spool": (
        {
            "config": {"routes": [{**ROUTE, "delivery": "spool"}], "spool": {"max_items": 50000}},
            "secretEnv": SECRET_ENV,
            "spool": {"enabled": True, "size": "2Gi", "storageClassName": "fast-ssd"},
            "prometheusRule": {"enabled": True},
        },
        {"ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget", "PrometheusRule"},
    ),
    "sidecar-defaults": ({"deploymentMode": "sidecar"}, {"ConfigMap"}),
    "sidecar-spool": (
        {
            "deploymentMode": "sidecar",
            "config": {"routes": [{**ROUTE, "delivery": "spool"}]},
            "secretEnv": SECRET_ENV,
            "spool": {"enabled": True},
        },
        {"ConfigMap", "PersistentVolumeClaim"},
    ),
    "sidecar-monitored": (
        {
            "deploymentMode": "sidecar",
            "sidecar": {"podSelector": {"app.kubernetes.io/name": "my-bot"}},
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True, "ruleLabels": {"team": "bots"}},
        },
        {"ConfigMap", "Service", "ServiceMonitor", "PrometheusRule"},
    ),
}


SPOOLED = sorted(n for n in CASES if CASES[n][0].get("spool", {}).get("enabled"))
STANDALONE = sorted(n for n in CASES if CASES[n][0].get("deploymentMode", "standalone") == "standalone")
MONITORED = sorted(n for n in CASES if "ServiceMonitor" in CASES[n][1])
RULED = sorted(n for n in CASES if "PrometheusRule" in CASES[n][1])


def workload(docs: list[Doc]) -> Doc:
    """The standalone pods' controller: a Deployment, or a StatefulSet when the spool is on."""
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


@functools.cache
def _rendered(name: str) -> list[Doc]:
    return render(values=CASES[name][0])


@pytest.fixture
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[Doc]]:
    """(name, values, rendered documents) of one of CASES (parametrized indirectly)."""
    name: str = request.param
    return name, CASES[name][0], copy.deepcopy(_rendered(name))


def test_case_lists_cover_both_modes_and_every_optional_object() -> None:
    assert STANDALONE and MONITORED and RULED
    assert set(SPOOLED) & set(STANDALONE) and set(SPOOLED) - set(STANDALONE), "spool in both modes"
    assert set(CASES) - set(STANDALONE), "no sidecar case"


@pytest.mark.parametrize("case", sorted(CASES), indirect=True)
def test_renders_exactly_the_objects_of_its_mode(case: tuple[str, dict[str, Any], list[Doc]]) -> None:
    name, _, docs = case
    kinds = [d["kind"] for d in docs]
    assert set(kinds) == CASES[name][1]
    # one webhook Service, plus the headless metrics Service when monitoring is on
    services = by_kind(docs).get("Service", [])
    assert len({s["metadata"]["name"] for s in services}) == len(services)


@pytest.mark.parametrize("version", kube_versions())
@pytest.mark.parametrize("case", sorted(CASES), indirect=True)
def test_every_object_validates_strictly(case: tuple[str, dict[str, Any], list[Doc]], version: str) -> None:
    _, _, docs = case
    validated = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue  # not in the Kubernetes schemas: checked structurally below
        validate_strict(doc, version)
        validated += 1
    assert validated >= 1


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The validator really is strict: a typo in a rendered object fails."""
    dep = one(render(), "Deployment")
    gateway_container(dep["spec"]["template"]["spec"])["readinesProbe"] = {"httpGet": {"port": 1}}
    with pytest.raises(Exception, match="readinesProbe"):
        validate_strict(dep, kube_versions()[-1])


@pytest.mark.parametrize("case", sorted(CASES), indirect=True)
def test_rendered_config_passes_gateway_check(
    case: tuple[str, dict[str, Any], list[Doc]], tmp_path: Path
) -> None:
    name, values, docs = case
    cm = one(docs, "ConfigMap")
    text = config_text(cm)
    cfg = yaml.safe_load(text)
    ports = values.get("ports", {"http": 8080, "admin": 9090})
    host = "[::]" if values.get("bindAddress") == "::" else "0.0.0.0"
    assert cfg["listen"] == f"{host}:{ports['http']}"
    assert cfg["admin_listen"] == f"{host}:{ports['admin']}"
    # The container the config runs in: the standalone pod, or in sidecar mode the same named
    # template the bot's pod includes (rendered here through the standalone Deployment).
    pod_docs = docs if name in STANDALONE else render(values={**values, "deploymentMode": "standalone"})
    pod = workload(pod_docs)["spec"]["template"]["spec"]
    container = gateway_container(pod)
    mounts = secret_mounts(pod, container)
    result = check_config(text, container, mounts, tmp_path)
    assert result.returncode == 0, result.stderr
    routes = cfg["routes"]
    assert f"ok ({len(routes)} route(s)" in result.stdout


def test_a_broken_config_is_caught_by_the_check(tmp_path: Path) -> None:
    bad_route = {**ROUTE, "verify": {"scheme": "telegram", "secrets": ["pasted-secret"]}}
    docs = render(values={"config": {"routes": [bad_route]}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    result = check_config(config_text(one(docs, "ConfigMap")), gateway_container(pod), {}, tmp_path)
    assert result.returncode == 1
    assert "routes[0].verify.secrets[0]: secrets come only from env:NAME or file:PATH" in result.stderr
    assert "pasted-secret" not in result.stderr


def test_config_env_references_need_a_secret_env_entry(tmp_path: Path) -> None:
    """A config naming env:TG_SECRET_NEW that the pod does not provide fails the check."""
    route = {**ROUTE, "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET", "env:TG_SECRET_NEW"]}}
    docs = render(values={"config": {"routes": [route]}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    result = check_config(config_text(one(docs, "ConfigMap")), gateway_container(pod), {}, tmp_path)
    assert result.returncode == 1
    assert "environment variable TG_SECRET_NEW is not set" in result.stderr


@pytest.mark.parametrize("case", STANDALONE, indirect=True)
def test_standalone_pod_is_locked_down_and_wired(case: tuple[str, dict[str, Any], list[Doc]]) -> None:
    _, values, docs = case
    cm = one(docs, "ConfigMap")
    dep = workload(docs)
    template = dep["spec"]["template"]
    pod = template["spec"]
    c = assert_gateway_wired(pod, cm)

    # no checksum annotation: config edits go through hot reload, not a rollout
    annotations = template["metadata"].get("annotations", {})
    assert not [k for k in annotations if "checksum" in k.lower()]
    assert annotations == values.get("podAnnotations", {})

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert sleep == values.get("preStopSleepSeconds", 5)
    shutdown = 20  # the gateway's default shutdown_timeout
    assert sleep + shutdown < pod["terminationGracePeriodSeconds"]

    # secrets come from existing Secrets only
    secret_env = {e["name"] for e in c.get("env", []) if "valueFrom" in e}
    expected = {e["name"] for e in values.get("secretEnv", [{"name": "TG_SECRET"}])}
    assert secret_env == expected

    # the webhook Service reaches the public port only; PDB and Service select these pods
    pod_labels = template["metadata"]["labels"]
    assert labels_match(dep["spec"]["selector"]["matchLabels"], pod_labels)
    services = by_kind(docs)["Service"]
    [public] = [s for s in services if s["metadata"]["name"] == dep["metadata"]["name"]]
    assert labels_match(public["spec"]["selector"], pod_labels)
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["gateway"]
    if values.get("podDisruptionBudget", {}).get("enabled", True):
        pdb = one(docs, "PodDisruptionBudget")
        assert labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        assert dep["spec"]["replicas"] >= 2


@pytest.mark.parametrize("case", MONITORED, indirect=True)
def test_monitoring_objects_point_at_the_admin_port(case: tuple[str, dict[str, Any], list[Doc]]) -> None:
    _, values, docs = case
    [sm] = by_kind(docs)["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["bots"]}
    for k, v in values["serviceMonitor"].get("labels", {}).items():
        assert sm["metadata"]["labels"][k] == v
    targets = [
        s
        for s in by_kind(docs)["Service"]
        if labels_match(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert len(targets) == 1, "the ServiceMonitor must select exactly the metrics Service"
    [metrics] = targets
    assert metrics["spec"]["clusterIP"] == "None"
    [endpoint] = sm["spec"]["endpoints"]
    assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}
    assert endpoint["path"] == "/metrics"
    [port] = metrics["spec"]["ports"]
    assert endpoint["port"] == port["name"] and port["targetPort"] == "gateway-admin"
    assert port["port"] == values.get("ports", {}).get("admin", 9090)
    if values.get("deploymentMode") == "sidecar":
        assert metrics["spec"]["selector"] == values["sidecar"]["podSelector"]
    else:
        pod = workload(docs)["spec"]["template"]
        assert labels_match(metrics["spec"]["selector"], pod["metadata"]["labels"])


ALERT_FILES = {
    "alerts.yaml": "always",
    "alerts-tls-telegram.yaml": "always",
    "alerts-spool.yaml": "spool",
}


def _expected_groups(spool: bool) -> list[Doc]:
    groups: list[Doc] = []
    for name, when in ALERT_FILES.items():
        if when == "always" or spool:
            groups.extend(yaml.safe_load((ALERTS.parent / name).read_text())["groups"])
    return groups


def test_every_rules_file_is_in_the_chart() -> None:
    shipped = {p.name for p in ALERTS.parent.glob("alerts*.yaml") if not p.name.endswith("_test.yaml")}
    assert shipped == set(ALERT_FILES)
    assert {p.name for p in (CHART / "files").glob("alerts*.yaml")} == set(ALERT_FILES)


@pytest.mark.parametrize("name", sorted(ALERT_FILES))
def test_chart_alerts_file_is_the_plain_rules_file(name: str) -> None:
    chart_copy = CHART / "files" / name
    plain = ALERTS.parent / name
    assert chart_copy.read_bytes() == plain.read_bytes(), (
        f"{chart_copy} differs from {plain}: copy deploy/prometheus/{name} over it"
    )


@pytest.mark.parametrize("case", RULED, indirect=True)
def test_prometheus_rule_carries_the_rules_files(
    case: tuple[str, dict[str, Any], list[Doc]], tmp_path: Path
) -> None:
    name, values, docs = case
    [pr] = by_kind(docs)["PrometheusRule"]
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pr["spec"]) == {"groups"}
    extra = values["prometheusRule"].get("ruleLabels", {})
    spool = name in SPOOLED
    expected = {"groups": _expected_groups(spool)}
    for group in expected["groups"]:
        for rule in group["rules"]:
            rule["labels"] = {**extra, **rule.get("labels", {})}
    assert pr["spec"] == expected
    alerts = {r["alert"] for g in pr["spec"]["groups"] for r in g["rules"]}
    assert {"WebhookGatewaySignatureMismatchRatioHigh", "WebhookGatewayTLSCertificateExpiresSoon"} <= alerts
    assert ("WebhookGatewaySpoolOldestPendingTooOld" in alerts) == spool
    for k, v in values["prometheusRule"].get("labels", {}).items():
        assert pr["metadata"]["labels"][k] == v
    # what the operator hands Prometheus is a rules file: promtool must accept it
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(pr["spec"]))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in expected['groups'])} rules found" in result.stdout


def _pod_and_claims(docs: list[Doc], values: dict[str, Any]) -> tuple[Doc, dict[str, Doc]]:
    """The pod spec running the gateway and the PVC specs by volume name. In sidecar mode: the
    named templates (rendered through standalone mode) plus the PVC the chart renders."""
    if values.get("deploymentMode") == "sidecar":
        pod = workload(render(values={**values, "deploymentMode": "standalone"}))["spec"]["template"]["spec"]
        pod["volumes"] = yaml.safe_load(_sidecar_volumes(values))
        claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
        return pod, claims
    sts = workload(docs)
    claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
    return sts["spec"]["template"]["spec"], claims


def _sidecar_volumes(values: dict[str, Any]) -> str:
    """What `include "webhook-gateway.sidecar.volumes"` gives a bot's pod, rendered by Helm."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "webhook-gateway"
        shutil.copytree(CHART, chart)
        (chart / "templates" / "zz-volumes.yaml").write_text(
            'kind: VolumesProbe\nvolumes:\n{{- include "webhook-gateway.sidecar.volumes" . | nindent 2 }}\n'
        )
        docs = render(chart=chart, values=values)
    [probe] = [d for d in docs if d["kind"] == "VolumesProbe"]
    return yaml.safe_dump(probe["volumes"])


@pytest.mark.parametrize("case", SPOOLED, indirect=True)
def test_spool_is_on_a_persistent_volume_claim(case: tuple[str, dict[str, Any], list[Doc]]) -> None:
    _, values, docs = case
    pod, claims = _pod_and_claims(docs, values)
    c = gateway_container(pod)
    cfg = yaml.safe_load(config_text(one(docs, "ConfigMap")))
    path = cfg["spool"]["path"]
    assert path == "/var/lib/webhook-gateway/spool.db"
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/webhook-gateway"]
    assert not mount.get("readOnly") and "subPath" not in mount
    assert path.startswith(mount["mountPath"] + "/")
    # the other keys of the user's spool section survive the chart setting the path
    assert {k: v for k, v in cfg["spool"].items() if k != "path"} == values["config"].get("spool", {})
    if values.get("deploymentMode") == "sidecar":
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert set(volume) == {"name", "persistentVolumeClaim"}, "a PVC, never an emptyDir"
        claim = claims[volume["persistentVolumeClaim"]["claimName"]]["spec"]
        assert [v["name"] for v in pod["volumes"] if "emptyDir" in v] == ["webhook-gateway-tmp"]
    else:
        assert mount["name"] not in {v["name"] for v in pod["volumes"]}, "from volumeClaimTemplates only"
        claim = claims[mount["name"]]["spec"]
    spool_values = values["spool"]
    assert claim["accessModes"] == spool_values.get("accessModes", ["ReadWriteOnce"])
    assert claim["resources"]["requests"]["storage"] == spool_values.get("size", "1Gi")
    assert claim.get("storageClassName", "") == spool_values.get("storageClassName", "")
    # the root filesystem stays read-only; the non-root user writes the volume through fsGroup
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["fsGroup"] == c["securityContext"]["runAsGroup"] == 10001


def test_standalone_spool_is_one_volume_per_replica() -> None:
    docs = _rendered("standalone-spool")
    sts = one(docs, "StatefulSet")
    assert "Deployment" not in by_kind(docs)
    assert sts["spec"]["replicas"] == 2
    [template] = sts["spec"]["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    # the governing Service exists and is headless
    governing = one(docs, "Service", sts["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert labels_match(governing["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])


def test_sidecar_spool_can_mount_an_existing_claim() -> None:
    values = {**CASES["sidecar-spool"][0], "spool": {"enabled": True, "existingClaim": "bot-spool"}}
    docs = render(values=values)
    assert "PersistentVolumeClaim" not in by_kind(docs)
    volumes = yaml.safe_load(_sidecar_volumes(values))
    [spool] = [v for v in volumes if v["name"] == "webhook-gateway-spool"]
    assert spool["persistentVolumeClaim"] == {"claimName": "bot-spool"}


def test_spool_disabled_mounts_no_spool_volume() -> None:
    pod = workload(_rendered("standalone-defaults"))["spec"]["template"]["spec"]
    assert "/var/lib/webhook-gateway" not in {m["mountPath"] for m in gateway_container(pod)["volumeMounts"]}
    assert "spool" not in yaml.safe_load(config_text(one(_rendered("standalone-defaults"), "ConfigMap")))
    assert "webhook-gateway-spool" not in _sidecar_volumes({"deploymentMode": "sidecar"})


@pytest.mark.parametrize(
    ("shutdown", "grace", "ok"),
    [
        ("20s", 30, True),
        ("20s", 29, False),
        ("1m", 70, True),
        ("1m", 69, False),
        (40, 50, True),
        (40.5, 50, False),
    ],
)
def test_grace_period_covers_the_drain(shutdown: Any, grace: int, ok: bool) -> None:
    values = {
        "config": {"shutdown_timeout": shutdown, "routes": [ROUTE]},
        "secretEnv": SECRET_ENV,
        "terminationGracePeriodSeconds": grace,
    }
    if ok:
        assert (
            workload(render(values=values))["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            == grace
        )
    else:
        with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
            render(values=values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"deploymentMode": "daemonset"}, "/deploymentMode"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"ports": {"http": 8080, "admin": 70000}}, "/ports/admin"),
        ({"secretEnv": [{"name": "TG_SECRET", "secretName": "s"}]}, "missing property 'key'"),
        ({"secretFiles": [{"secretName": "s", "mountPath": "relative/dir"}]}, "/secretFiles/0/mountPath"),
        ({"config": {"mode": "enforced", "routes": [ROUTE]}}, "/config/mode"),
        ({"config": {"routes": []}}, "/config/routes"),
        ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
        ({"image": {"repository": "x", "digest": "latest"}}, "/image/digest"),
        ({"spool": {"enabled": True, "size": "lots", "accessModes": ["ReadWriteOnce"]}}, "/spool/size"),
        ({"spool": {"enabled": True, "size": "1Gi", "accessModes": ["ReadWrite"]}}, "/spool/accessModes"),
        ({"spool": {"enabled": True, "size": "1Gi", "accessModes": [], "emptyDir": {}}}, "/spool"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render(values=values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"listen": "0.0.0.0:80", "routes": [ROUTE]}}, "config.listen is set by the chart"),
        ({"ports": {"http": 9090, "admin": 9090}}, "ports.http and ports.admin must differ"),
        (
            {"deploymentMode": "sidecar", "serviceMonitor": {"enabled": True}},
            "sidecar.podSelector .* is required",
        ),
        (
            {"config": {"routes": [{**ROUTE, "delivery": "spool"}]}},
            "config uses the spool .* but spool.enabled is false",
        ),
        (
            {"deploymentMode": "sidecar", "config": {"routes": [ROUTE], "spool": {"max_items": 10}}},
            "config uses the spool .* but spool.enabled is false",
        ),
        (
            {"spool": {"enabled": True}, "config": {"routes": [ROUTE], "spool": {"path": "/data/spool.db"}}},
            "must be a file directly in /var/lib/webhook-gateway",
        ),
        (
            {"spool": {"enabled": True}, "podSecurityContext": {"fsGroup": None}},  # null removes a default
            "spool.enabled needs podSecurityContext.fsGroup",
        ),
    ],
)
def test_templates_refuse_inconsistent_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values=values)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"deploymentMode": "sidecar"},
        CASES["standalone-everything"][0],
        CASES["standalone-spool"][0],
        CASES["sidecar-spool"][0],
    ],
)
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube_versions()[-1]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report
    assert report["total_charts_linted"] == 1


def test_helm_lint_reports_a_broken_template(tmp_path: Path) -> None:
    """Lint really looks: a chart copy with a template error is reported."""
    import shutil

    copy = tmp_path / "webhook-gateway"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "broken.yaml").write_text("kind: ConfigMap\n{{ .Values.nope.deeper }}\n")
    report = helm.lint(copy, {}, strict=True)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] >= 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(admin: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
        return r.read().decode()


def _enforced(admin: int) -> str | None:
    m = re.search(
        r'^webhook_gateway_route_enforced\{route="my-bot"\} (\S+)$',
        _metrics(admin),
        re.M,
    )
    return m.group(1) if m else None


def _forged_status(public: int) -> int:
    forged = urllib.request.Request(
        f"http://127.0.0.1:{public}{ROUTE['path']}",
        data=b'{"update_id": 1}',
        headers={"X-Telegram-Bot-Api-Secret-Token": "forged", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(forged, timeout=5) as r:  # noqa: S310 - http on loopback
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_flipping_mode_through_the_chart_reaches_a_running_gateway_without_a_rollout(tmp_path: Path) -> None:
    """`helm upgrade` with only `mode` changed: the Deployment is unchanged (so Kubernetes rolls
    nothing), the ConfigMap changes, and a gateway reading the ConfigMap through the kubelet's
    layout (gateway.yaml -> ..data/gateway.yaml, ..data swapped atomically) enforces at once."""
    public, admin = _free_port(), _free_port()
    # no allow_sources: this test's requests come from 127.0.0.1 and must reach the secret check;
    # the upstream is a closed port, so a forwarded request gets 502
    route = {k: v for k, v in ROUTE.items() if k != "allow_sources"}
    route["upstream"] = f"http://127.0.0.1:{_free_port()}/webhook"
    base = {"bindAddress": "127.0.0.1", "ports": {"http": public, "admin": admin}, "secretEnv": SECRET_ENV}
    v1 = render(values={**base, "config": {"mode": "report-only", "routes": [route]}})
    v2 = render(values={**base, "config": {"mode": "enforce", "routes": [route]}})
    assert one(v1, "Deployment") == one(v2, "Deployment")
    assert config_text(one(v1, "ConfigMap")) != config_text(one(v2, "ConfigMap"))

    mount = tmp_path / "etc-webhook-gateway"
    for version, docs in (("..v1", v1), ("..v2", v2)):
        (mount / version).mkdir(parents=True)
        (mount / version / "gateway.yaml").write_text(config_text(one(docs, "ConfigMap")))
    os.symlink("..v1", mount / "..data")
    os.symlink("..data/gateway.yaml", mount / "gateway.yaml")
    env = {"PATH": os.environ["PATH"], "TG_SECRET": "secret-one", "TG_SECRET_PREVIOUS": "secret-two"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(mount / "gateway.yaml")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _enforced(admin) == "0.0":
                    break
            except OSError:
                time.sleep(0.05)
        assert _enforced(admin) == "0.0"
        assert _forged_status(public) == 502  # report-only: forwarded (to the closed port)
        os.symlink("..v2", mount / "..tmp")
        os.replace(mount / "..tmp", mount / "..data")  # what the kubelet does
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _enforced(admin) != "1.0":
            time.sleep(0.05)
        assert _enforced(admin) == "1.0"
        assert _forged_status(public) == 401  # enforce: rejected at the gateway
        assert proc.poll() is None, "the same process, never restarted"
        assert 'webhook_gateway_config_reloads_total{result="success"} 2.0' in _metrics(admin)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("page", ["redis-sentinel.md", "redis-cluster.md"])
def test_store_topology_pages_helm_values_render_and_pass_the_check(page: str, tmp_path: Path) -> None:
    """The Helm values example of each Redis topology page, as printed: the chart renders it,
    the objects validate, and the config it carries passes `webhook-gateway check`."""
    text = (REPO / "docs" / page).read_text()
    section = text.split("## Helm values", 1)[1]
    values = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    docs = render(values=values)
    for doc in docs:
        validate_strict(doc, kube_versions()[-1])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = gateway_container(pod)
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    cfg_text = config_text(one(docs, "ConfigMap"))
    store = yaml.safe_load(cfg_text)["store"]
    assert store == values["config"]["store"]
    result = check_config(cfg_text, container, secret_mounts(pod, container), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stand-in-secret" not in result.stdout + result.stderr
