"""charts/runner-agent rendered by the real Helm SDK in every CI configuration, each
manifest validated against Kubernetes' own schemas (strict: no unknown field), the
SDK's lint, and values.schema.json refusing bad values with the key's path."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.charts import support

# The oldest Kubernetes the chart supports (native sidecars) and the newest with schemas.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version() + ".0")
OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("name", sorted(support.CONFIGURATIONS))
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_builtin_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    rendered = support.render(name)
    documents = list(rendered.documents)
    if name == "arc":
        documents.append(support.arc_pod())
    checked = 0
    for doc in documents:
        if doc["kind"] in OPERATOR_KINDS:
            continue  # prometheus-operator's CRDs: tests/charts/test_monitoring.py
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']} at {path}: {exc.message}")
        checked += 1
    assert checked >= 4


def test_the_configurations_render_what_they_turn_on() -> None:
    base = {"ConfigMap", "Secret", "PersistentVolumeClaim", "NetworkPolicy", "ServiceAccount"}
    assert support.render("defaults").kinds() == base
    assert support.render("gpu").kinds() == base | {"StatefulSet", "Service"}
    assert support.render("warmer").kinds() == base | {"Deployment", "Service"}
    assert support.render("everything").kinds() == base | {
        "Role",
        "RoleBinding",
        "StatefulSet",
        "Deployment",
        "Service",
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
    }
    # Without force and without the operator's API, no monitor renders.
    quiet = {"monitoring": {"podMonitor": {"enabled": True}, "rules": {"enabled": True}}}
    text = support.render_text(quiet)
    assert "PodMonitor" not in "".join(v for k, v in text.items() if not k.endswith("NOTES.txt"))
    assert "force: true" in text["runner-agent/templates/NOTES.txt"]


def test_lint_is_clean() -> None:
    result = helm_python.lint(str(support.CHART))
    assert result["errors"] == []
    # Severity 1 is INFO (a missing icon); warnings (2) and errors (3) fail.
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"runners": {"replicas": "two"}}, "at '/runners/replicas': got string, want integer"),
        ({"agnet": {}}, "additional properties 'agnet' not allowed"),
        ({"agent": {"sandbox": {"enabled": True, "caps": []}}}, "'caps' not allowed"),
        ({"gpu": {"backend": "cuda"}}, "at '/gpu/backend': value must be one of"),
        ({"store": {"lockBackend": "flock"}}, "at '/store/lockBackend'"),
        ({"store": {"accessModes": []}}, "at '/store/accessModes'"),
        ({"monitoring": {"rules": {"cacheBudgetRatio": 1.5}}}, "cacheBudgetRatio"),
        ({"github": {"apiUrl": "http://github.example"}}, "at '/github/apiUrl'"),
        ({"onConfigError": "crash"}, "at '/onConfigError'"),
        ({"engine": {"extraArgs": ["--mtu=1400"]}}, "at '/engine/extraArgs/0'"),
        ({"engine": {"extraArgs": ["-H", "tcp://0.0.0.0:2375"]}}, "at '/engine/extraArgs/0'"),
        ({"engine": {"extraArgs": ["registry-mirror"]}}, "at '/engine/extraArgs/0'"),
        ({"engine": {"mtu": 40}}, "at '/engine/mtu'"),
        ({"agent": {"livenessProbe": {"successThreshold": 2}}}, "livenessProbe/successThreshold"),
    ],
)
def test_the_schema_refuses_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        support.render_text(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"runners": {"enabled": True}}, "runners.url is required"),
        (
            {"runners": {"enabled": True, "url": "https://github.com/octo"}},
            "runners.enabled needs a way to register: github.token.secretName or github.app",
        ),
        (
            {
                "github": {
                    "token": {"secretName": "t"},
                    "app": {"id": 1, "installationId": 2, "privateKey": {"secretName": "k"}},
                }
            },
            "are both set: choose one",
        ),
        ({"warmer": {"enabled": True}}, "warmer.enabled needs github.webhookSecret.secretName"),
        ({"catalog": {"Bad_Id": {}}}, 'feature id "Bad_Id"'),
        (
            {
                "runners": {"enabled": True, "url": "https://ghe.example.test/octo"},
                "github": {"token": {"secretName": "t"}},
            },
            "set github.apiUrl, e.g. https://ghe.example.test/api/v3",
        ),
        (
            {"annotatePod": {"enabled": True}, "serviceAccount": {"create": False}},
            "annotatePod.enabled with serviceAccount.create: false needs serviceAccount.name",
        ),
    ],
)
def test_missing_settings_fail_the_render_saying_what_to_set(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        support.render_text(values)


def test_tokens_are_random_and_the_secret_outlives_the_release() -> None:
    one = support.render("defaults").one("Secret", "-tokens")
    other = support.render_text({})["runner-agent/templates/tokens.yaml"]
    assert one["data"]["job"] != one["data"]["admin"]
    assert one["data"]["job"] not in other  # a fresh render makes fresh tokens
    assert one["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert (
        support.render_text({"tokens": {"existingSecret": "mine"}})
        .get("runner-agent/templates/tokens.yaml", "")
        .strip()
        == ""
    )


def test_the_dashboard_ships_with_its_grafana_label() -> None:
    [dashboard] = [
        d
        for d in support.render("everything").of("ConfigMap")
        if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert '"runner_agent_gpu_utilization_ratio' in dashboard["data"]["runner-agent-gpu.json"]


def test_the_notes_name_each_monitor_left_out() -> None:
    values = {
        **support.CONFIGURATIONS["warmer"],
        "monitoring": {
            "podMonitor": {"enabled": True},
            "serviceMonitor": {"enabled": True},
            "rules": {"enabled": True, "force": True},
        },
    }
    notes = support.render_text(values)["runner-agent/templates/NOTES.txt"]
    assert "PodMonitor, ServiceMonitor left out" in notes
    assert "PrometheusRule" not in notes  # forced: rendered
    quiet = support.render_text(support.CONFIGURATIONS["everything"])
    assert "WARNING" not in quiet["runner-agent/templates/NOTES.txt"]
    assert "each pod mints its registration token" in quiet["runner-agent/templates/NOTES.txt"]


def test_a_long_release_name_still_fits_the_runner_pods_labels() -> None:
    """A StatefulSet's pods carry controller-revision-hash, its name and a hash of up to 11
    characters: a label value of at most 63."""
    values = {"runners": {"enabled": True, "url": "https://github.com/octo"}}
    values["github"] = {"token": {"secretName": "t"}}
    release = "r" * 53
    text = support.render_text(values, release=release)
    documents = [
        d
        for path, t in text.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(t)
        if isinstance(d, dict)
    ]
    [runners] = [d for d in documents if d.get("kind") == "StatefulSet"]
    name = runners["metadata"]["name"]
    assert name.endswith("-runner")
    assert len(name) + 1 + 10 <= 63, name
    assert runners["spec"]["serviceName"] == name
