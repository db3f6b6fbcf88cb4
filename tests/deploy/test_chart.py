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
from deploy_support import (
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
    "sidecar-defaults": ({"deploymentMode": "sidecar"}, {"ConfigMap"}),
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


STANDALONE = sorted(n for n in CASES if CASES[n][0].get("deploymentMode", "standalone") == "standalone")
MONITORED = sorted(n for n in CASES if "ServiceMonitor" in CASES[n][1])
RULED = sorted(n for n in CASES if "PrometheusRule" in CASES[n][1])


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
    pod = one(pod_docs, "Deployment")["spec"]["template"]["spec"]
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
    dep = one(docs, "Deployment")
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
        pod = one(docs, "Deployment")["spec"]["template"]
        assert labels_match(metrics["spec"]["selector"], pod["metadata"]["labels"])


def _rules_file() -> Doc:
    return yaml.safe_load(ALERTS.read_text())


def test_chart_alerts_file_is_the_plain_rules_file() -> None:
    chart_copy = CHART / "files" / "alerts.yaml"
    assert chart_copy.read_bytes() == ALERTS.read_bytes(), (
        f"{chart_copy} differs from {ALERTS}: copy deploy/prometheus/alerts.yaml over it"
    )


@pytest.mark.parametrize("case", RULED, indirect=True)
def test_prometheus_rule_carries_the_rules_file(
    case: tuple[str, dict[str, Any], list[Doc]], tmp_path: Path
) -> None:
    _, values, docs = case
    [pr] = by_kind(docs)["PrometheusRule"]
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pr["spec"]) == {"groups"}
    extra = values["prometheusRule"].get("ruleLabels", {})
    expected = _rules_file()
    for group in expected["groups"]:
        for rule in group["rules"]:
            rule["labels"] = {**extra, **rule.get("labels", {})}
    assert pr["spec"] == expected
    for k, v in values["prometheusRule"].get("labels", {}).items():
        assert pr["metadata"]["labels"][k] == v
    # what the operator hands Prometheus is a rules file: promtool must accept it
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(pr["spec"]))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in expected['groups'])} rules found" in result.stdout


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
    ],
)
def test_templates_refuse_inconsistent_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values=values)


@pytest.mark.parametrize("values", [{}, {"deploymentMode": "sidecar"}, CASES["standalone-everything"][0]])
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
