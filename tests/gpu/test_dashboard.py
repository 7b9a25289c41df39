"""The example Grafana dashboard (charts/runner-agent/dashboards/gpu.json) against a real agent:
every metric its queries use is in one real scrape of the replay backend (the job families
declared, as they have samples only after a job), every query selects the $instance and,
where the metric has a gpu label, the $gpu variables, and its panels have unique ids and
do not overlap."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.agentproc import Agent, Starter, http_get

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "charts" / "runner-agent" / "dashboards" / "gpu.json"
)
METRIC = re.compile(r"runner_agent_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Families that have samples only once a job has run on a runner this agent serves.
AFTER_A_JOB = {
    "runner_agent_job_gpu_energy_joules": "histogram",
    "runner_agent_job_gpu_busy_seconds": "histogram",
    "runner_agent_job_info": "gauge",
}


@dataclass(frozen=True)
class Family:
    kind: str  # the TYPE line's
    labels: set[str]  # over its samples
    samples: int


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return found


def exprs(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    assert found, "no panel target has an expr"
    return found


def family_of(name: str) -> str:
    """The name the parser gives the family of ``name``, as a query writes it: a
    histogram's series lose their suffix and a counter's its _total."""
    for suffix in (*HISTOGRAM_SUFFIXES, "_total"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def used(dashboard: dict[str, Any]) -> set[str]:
    return {name for expr in exprs(dashboard) for name in METRIC.findall(expr)}


def scrape(agent: Agent) -> dict[str, Family]:
    status, body = http_get(agent.base + "/metrics")
    assert status == 200
    found: dict[str, Family] = {}
    for family in text_string_to_metric_families(body.decode()):
        labels = {key for sample in family.samples for key in sample.labels}
        assert family.name not in found, f"{family.name} declared twice"
        found[family.name] = Family(family.type, labels, len(family.samples))
    return found


def sampled(families: dict[str, Family], *names: str) -> bool:
    return all(name in families and families[name].samples > 0 for name in names)


def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(start_agent: Starter) -> None:
    dashboard = load()
    names = used(dashboard)
    assert len(names) >= 20
    config = start_agent.base_config()
    config["gpu"] = {
        "backend": "fake",
        "slow_interval_seconds": 1,
        # XID 13 (an application's) is counted and not fatal: it gives the XID counter samples.
        "fake": {"gpus": 2, "xids": [{"gpu": 0, "xid": 13, "at_seconds": 0}]},
    }
    agent = start_agent.start(config)
    families = agent.wait_for(
        lambda: (
            sampled(
                s := scrape(agent), "runner_agent_gpu_energy_joules", "runner_agent_gpu_xid_errors"
            )
            and s
        ),
        timeout=20,
        what="the first slow sample and the XID",
    )
    missing = sorted(n for n in names if family_of(n) not in families)
    assert missing == []
    for name in sorted(names):
        family = families[family_of(name)]
        if name.endswith(HISTOGRAM_SUFFIXES):
            assert family.kind == "histogram", name
        elif name.endswith("_total"):
            assert family.kind == "counter", name
        else:
            assert family.kind not in ("counter", "histogram"), name
        if family_of(name) in AFTER_A_JOB:
            assert family.kind == AFTER_A_JOB[family_of(name)], name
        else:
            assert family.samples > 0, f"{name}: declared, but no sample"
    # Every query selects the dashboard's instances, and its GPUs where there is a gpu label.
    gpu_labelled = {name for name, family in families.items() if "gpu" in family.labels}
    assert {"runner_agent_gpu_utilization_ratio", "runner_agent_gpu_xid_errors"} <= gpu_labelled
    assert "runner_agent_gpu_stale" not in gpu_labelled
    for expr in exprs(dashboard):
        for match in METRIC.finditer(expr):
            selector = re.match(r"\{([^}]*)\}", expr[match.end() :])
            assert selector, f"{match.group()} without a selector in {expr}"
            assert 'instance=~"$instance"' in selector.group(1), expr
            if family_of(match.group()) in gpu_labelled:
                assert 'gpu=~"$gpu"' in selector.group(1), expr
    # The inventory table's columns are labels of the real info line.
    [inventory] = [
        p
        for p in panels(dashboard)
        if any("runner_agent_gpu_info" in t["expr"] for t in p.get("targets", []))
    ]
    columns = set(inventory["transformations"][0]["options"]["indexByName"]) - {"instance"}
    assert columns == {
        "gpu",
        "uuid",
        "model",
        "driver_version",
        "cuda_driver_version",
        "backend",
        "mig_mode",
    }
    assert columns <= families["runner_agent_gpu_info"].labels


def test_the_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    dashboard = load()
    assert (dashboard["uid"], dashboard["title"], dashboard["schemaVersion"]) == (
        "runner-agent-gpus",
        "runner-agent GPUs",
        39,
    )
    every = panels(dashboard)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "gpu"):
        assert (variables[name]["multi"], variables[name]["includeAll"]) == (True, True), name
    for panel in every:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
