"""Shared helpers of the deployment tests: render the chart with the real Helm SDK, validate
objects with kubernetes-validate, run `webhook-gateway check` on a rendered config, apply a
strategic-merge patch the way kubectl does for the lists these examples touch."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "webhook-gateway"
EXAMPLES = REPO / "helm" / "examples"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
CONFIG_DIR = "/etc/webhook-gateway"
CONFIG_PATH = f"{CONFIG_DIR}/gateway.yaml"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

Doc = dict[str, Any]


def kube_versions() -> list[str]:
    """The oldest version the chart supports (Chart.yaml kubeVersion) and the newest one
    kubernetes-validate knows."""
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    m = re.search(r">=\s*(\d+\.\d+)", floor)
    assert m, floor
    return [m.group(1), kv_utils.latest_version()]


def render(
    chart: Path = CHART, values: dict[str, Any] | None = None, release: str = "gw", namespace: str = "bots"
) -> list[Doc]:
    """Render like `helm template` (offline) and return the non-empty documents."""
    with helm.Chart.load(chart) as loaded:
        out = loaded.render(values=values, name=release, namespace=namespace, is_install=True)
    docs: list[Doc] = []
    for name, text in sorted(out.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[Doc]) -> dict[str, list[Doc]]:
    kinds: dict[str, list[Doc]] = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    return kinds


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def validate_strict(doc: Doc, version: str) -> None:
    """kubernetes-validate in strict mode (unknown fields are errors). Raises on any problem."""
    kubernetes_validate.validate(doc, version, strict=True)


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def gateway_container(pod_spec: Doc) -> Doc:
    found = [c for c in pod_spec["containers"] if c["name"] == "webhook-gateway"]
    assert len(found) == 1, [c["name"] for c in pod_spec["containers"]]
    return found[0]


def config_text(configmap: Doc) -> str:
    return configmap["data"]["gateway.yaml"]


def check_config(
    text: str, container: Doc, secret_mounts: dict[str, str], tmp: Path
) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway check` on a rendered config, with the environment the container
    would have: a value for every env entry (secretKeyRef entries get a stand-in secret) and the
    `file:` secrets placed under a temporary root (each must lie in a mounted Secret volume)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TG_", "WEBHOOK_GATEWAY"))}
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "stand-in-secret-0123456789")
    root = tmp / "podroot"

    def place(m: re.Match[str]) -> str:
        path = m.group(1)
        assert any(path.startswith(mount.rstrip("/") + "/") for mount in secret_mounts), (
            f"{path} is not inside a mounted Secret ({sorted(secret_mounts)})"
        )
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("stand-in-hmac-key\n")
        return f"file:{target}"

    rewritten = re.sub(r"file:(/[^\s\]\"',]+)", place, text)
    cfg = tmp / "gateway.yaml"
    cfg.write_text(rewritten)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _merge_list(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = [copy.deepcopy(x) for x in base]
    for item in patch:
        for i, existing in enumerate(out):
            if existing.get(key) == item.get(key):
                out[i] = strategic_merge(existing, item)
                break
        else:
            out.append(copy.deepcopy(item))
    return out


# Merge keys of the lists these patches touch (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": None,
}


def strategic_merge(base: Any, patch: Any) -> Any:
    """The subset of `kubectl patch --type strategic` these examples need: maps merge, lists
    with a merge key merge item by item, other lists are replaced."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if k in out and isinstance(v, list) and isinstance(out[k], list):
            key = MERGE_KEYS.get(k)
            if k == "ports":  # containerPort in a container, port in a Service
                key = "containerPort" if any("containerPort" in p for p in v) else "port"
            out[k] = _merge_list(out[k], v, key) if key else copy.deepcopy(v)
        elif k in out:
            out[k] = strategic_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def assert_gateway_wired(pod: Doc, configmap: Doc) -> Doc:
    """The gateway container of a pod spec runs the image's command on the ConfigMap mounted as a
    directory, is locked down, and its ports and probes match the config. Returns the container."""
    c = gateway_container(pod)
    cfg = yaml.safe_load(config_text(configmap))
    assert c["args"] == ["run", "--config", CONFIG_PATH]
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
    assert mount["readOnly"] is True
    assert all("subPath" not in m and "subPathExpr" not in m for m in c["volumeMounts"])
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"] == {"name": configmap["metadata"]["name"]}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert cfg["listen"].endswith(f":{ports['gateway']}")
    assert cfg["admin_listen"].endswith(f":{ports['gateway-admin']}")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "gateway-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "gateway-admin"}
    for entry in c.get("env", []):
        assert "value" in entry or set(entry["valueFrom"]) == {"secretKeyRef"}
    return c


def secret_mounts(pod: Doc, container: Doc) -> dict[str, str]:
    """mountPath -> Secret name, for the Secret volumes mounted into `container`."""
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    return {
        m["mountPath"]: secret_volumes[m["name"]]
        for m in container["volumeMounts"]
        if m["name"] in secret_volumes
    }
