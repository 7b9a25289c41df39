"""The chart's PodMonitor, ServiceMonitor and PrometheusRule against the
prometheus-operator CRDs' own schemas.

Source of the schemas: the npm package @kubernetes-models/prometheus-operator 6.0.0
(kubernetes-models-ts, MIT), whose validators are generated from the
prometheus-operator CRDs (monitoring.coreos.com/v1). scripts/test installs it into
.venv/share/crd-models; node runs validate_crds.mjs on the rendered objects. The CRD
schemas check types, enums and patterns (a Duration such as `30s`); like the API
server, they do not refuse unknown fields, which it prunes: the selector tests below
check the fields that matter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.charts import support

MODELS = Path(sys.executable).parent.parent / "share" / "crd-models" / "node_modules"
SCRIPT = Path(__file__).with_name("validate_crds.mjs")
OPERATOR_KINDS = ("PodMonitor", "ServiceMonitor", "PrometheusRule")


def validate(objects: list[dict[str, Any]], tmp_path: Path) -> list[list[Any]]:
    node = shutil.which("node")
    if node is None or not (MODELS / "@kubernetes-models" / "prometheus-operator").is_dir():
        pytest.skip("node or @kubernetes-models/prometheus-operator is missing (scripts/test)")
    # ES modules resolve packages from the script's own folder.
    shutil.copy(SCRIPT, tmp_path / SCRIPT.name)
    os.symlink(MODELS, tmp_path / "node_modules")
    done = subprocess.run(
        [node, str(tmp_path / SCRIPT.name)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[list[Any]] = json.loads(done.stdout)
    return results


def operator_objects() -> list[dict[str, Any]]:
    rendered = support.render("everything")
    return [doc for kind in OPERATOR_KINDS for doc in rendered.of(kind)]


def test_every_operator_object_is_valid_under_its_crd_schema(tmp_path: Path) -> None:
    objects = operator_objects()
    assert sorted(o["kind"] for o in objects) == sorted(OPERATOR_KINDS)
    results = validate(objects, tmp_path)
    assert [errors for _, _, errors in results] == [[], [], []], results


def test_the_crd_schemas_refuse_what_the_operator_would(tmp_path: Path) -> None:
    pod_monitor, service_monitor, rule = (
        json.loads(json.dumps(support.render("everything").one(kind))) for kind in OPERATOR_KINDS
    )
    pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"] = 30  # a number, not a Duration
    service_monitor["spec"]["endpoints"] = {"port": "metrics"}  # an object, not a list
    del rule["spec"]["groups"][0]["name"]  # every group needs a name
    results = validate([pod_monitor, service_monitor, rule], tmp_path)
    by_kind = {kind: errors for kind, _, errors in results}
    assert any("/spec/podMetricsEndpoints/0/interval" in e for e in by_kind["PodMonitor"])
    assert any("/spec/endpoints" in e for e in by_kind["ServiceMonitor"])
    assert any("name" in e for e in by_kind["PrometheusRule"]), by_kind


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pod_labels() -> dict[str, dict[str, str]]:
    rendered = support.render("everything")
    labels = {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"]
        for doc in rendered.of("Deployment") + rendered.of("StatefulSet")
    }
    example = support.arc_values()["template"]["metadata"]["labels"]
    labels["arc-runner"] = example
    return labels


def test_each_agent_is_scraped_once_and_arc_pods_are_found() -> None:
    rendered = support.render("everything")
    pods = pod_labels()
    pod_monitor = rendered.one("PodMonitor")["spec"]["selector"]
    by_pod_monitor = {name for name, labels in pods.items() if matches(pod_monitor, labels)}
    assert by_pod_monitor == {"runner-agent-runner", "arc-runner"}
    # The ServiceMonitor finds the warmer's metrics Service, which finds the warmer alone.
    service_monitor = rendered.one("ServiceMonitor")["spec"]
    services = {
        doc["metadata"]["name"]: doc
        for doc in rendered.of("Service")
        if matches(service_monitor["selector"], doc["metadata"]["labels"])
    }
    assert list(services) == ["runner-agent-warmer-metrics"]
    [service] = services.values()
    assert service["spec"]["type"] == "ClusterIP"
    assert {p["name"] for p in service["spec"]["ports"]} == {
        e["port"] for e in service_monitor["endpoints"]
    }
    selected = {
        name
        for name, labels in pods.items()
        if matches({"matchLabels": service["spec"]["selector"]}, labels)
    }
    assert selected == {"runner-agent-warmer"}
    # The webhook Service (it may face the internet) carries no metrics port.
    webhook = rendered.one("Service", "-warmer")
    assert [p["name"] for p in webhook["spec"]["ports"]] == ["webhook"]


def test_the_network_policy_covers_every_agent_pod() -> None:
    policy = support.render("everything").one("NetworkPolicy")["spec"]["podSelector"]
    assert all(matches(policy, labels) for labels in pod_labels().values())
