"""Rendering charts/runner-agent with the real Helm SDK, in the configurations CI checks.

Each configuration is a values dict; ``render`` returns the manifests as parsed
documents. The ARC configuration is the chart's defaults (what gha-runner-scale-set's
pods need from it) plus the pod of ``examples/arc-values.yaml``, checked as a Pod.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "runner-agent"
ARC_VALUES = ROOT / "examples" / "arc-values.yaml"
RELEASE = "runner-agent"
NAMESPACE = "runners"

STANDALONE: dict[str, Any] = {
    "runners": {
        "enabled": True,
        "url": "https://github.com/octo",
        "registrationToken": {"secretName": "runner-registration"},
    }
}

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "arc": {},
    "gpu": {
        **STANDALONE,
        "runners": {**STANDALONE["runners"], "gpus": 2},
        "gpu": {"backend": "nvml"},
        "pod": {
            "runtimeClassName": "nvidia",
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    },
    "warmer": {
        "warmer": {"enabled": True},
        "github": {
            "token": {"secretName": "github-token"},
            "webhookSecret": {"secretName": "github-webhook"},
            "scaleSets": {"arc-gpu": ["feature:cuda@12"]},
        },
    },
    "everything": {
        # Runners that mint their registration tokens with the App.
        "runners": {"enabled": True, "url": "https://github.com/octo"},
        "warmer": {"enabled": True},
        "agent": {"sandbox": {"enabled": True}},
        "github": {
            "app": {
                "id": 12345,
                "installationId": 678,
                "privateKey": {"secretName": "github-app"},
            },
            "webhookSecret": {"secretName": "github-webhook"},
        },
        "catalog": {
            "team-jq": {
                "id": "team-jq",
                "name": "jq",
                "description": "jq from the operating system's packages, a team's own id.",
                "platforms": ["linux"],
                "install": [
                    {"method": "system", "platforms": ["linux"], "packages": {"apt": ["jq"]}}
                ],
                "check": {"command": ["jq", "--version"], "expect": "jq-"},
            }
        },
        "config": {"runner": {"labels": ["feature:node@20"]}},
        "annotatePod": {"enabled": True},
        "monitoring": {
            "podMonitor": {"enabled": True, "force": True},
            "serviceMonitor": {"enabled": True, "force": True},
            "rules": {"enabled": True, "force": True},
            "dashboard": {"enabled": True},
        },
    },
}


@dataclass(frozen=True)
class Rendered:
    """One configuration's manifests, by kind and name."""

    name: str
    documents: list[dict[str, Any]]

    def kinds(self) -> set[str]:
        return {doc["kind"] for doc in self.documents}

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def one(self, kind: str, suffix: str = "") -> dict[str, Any]:
        [found] = [d for d in self.of(kind) if d["metadata"]["name"].endswith(suffix)]
        return found

    def pod_specs(self) -> dict[str, dict[str, Any]]:
        """Every pod spec: the chart's workloads and, for arc, the example's template."""
        specs = {
            doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
            for doc in self.documents
            if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        }
        if self.name == "arc":
            specs["arc-runner"] = arc_pod()["spec"]
        return specs


def render_text(values: dict[str, Any], *, release: str = RELEASE) -> dict[str, str]:
    with helm_python.Chart.load(str(CHART)) as chart:
        return chart.render(copy.deepcopy(values), name=release, namespace=NAMESPACE)


@functools.cache
def render(name: str) -> Rendered:
    documents = [
        doc
        for path, text in render_text(CONFIGURATIONS[name]).items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Rendered(name, documents)


def arc_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(ARC_VALUES.read_text())
    return values


def arc_pod() -> dict[str, Any]:
    """The example's template as the Pod gha-runner-scale-set makes of it."""
    template = arc_values()["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "arc-runners-runner-x", "labels": template["metadata"]["labels"]},
        "spec": {**template["spec"], "restartPolicy": "Never"},
    }
