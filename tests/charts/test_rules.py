"""The chart's alerts under the real promtool (`check rules`, then `test rules` with
alerts_test.yaml, one case per alert at least), and every metric they name in a real
scrape of a running agent with the GPU fake on."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.charts import support
from tests.support.agentproc import Starter, http_get

PROMTOOL = Path(sys.executable).parent / "promtool"
TESTS = Path(__file__).with_name("alerts_test.yaml")
METRIC = re.compile(r"runner_agent_[a-z0-9_]+")


def rules() -> dict[str, object]:
    rule = support.render("everything").one("PrometheusRule")
    return rule["spec"]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        found = shutil.which("promtool")
        if not found:
            pytest.skip(
                "promtool is not installed (scripts/test takes it from Debian's prometheus)"
            )
        tool = found
    else:
        tool = str(PROMTOOL)
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_checks_and_unit_tests_every_alert(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    shutil.copy(TESTS, tmp_path / "alerts_test.yaml")
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {r["alert"] for g in rules()["groups"] for r in g["rules"]}  # type: ignore[index]
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == names  # every alert is shown to fire


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    (tmp_path / "alerts_test.yaml").write_text(
        TESTS.read_text().replace(
            'pod: gpu-a, instance: "10.0.0.1:9102", gpu: "0"',
            'pod: gpu-a, instance: "10.0.0.1:9102", gpu: "1"',
        )
    )
    tested = promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert tested.returncode == 1


def test_every_metric_the_rules_name_is_in_a_real_scrape(start_agent: Starter) -> None:
    text = yaml.safe_dump(rules())
    names = set(METRIC.findall(text))
    assert len(names) >= 7
    with socket.socket() as probe:  # a free loopback port for the webhook listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = start_agent.base_config(webhook_address=f"127.0.0.1:{port}")
    config["gpu"] = {"backend": "fake", "fake": {"gpus": 2}}
    config["services"] = {"sleeper": {"command": ["sleep", "600"]}}
    agent = start_agent.start(config)
    status, body = http_get(agent.base + "/metrics")
    assert status == 200
    scraped = body.decode()
    declared = set(re.findall(r"^# TYPE (\S+) ", scraped, re.M))
    for name in sorted(names):
        family = re.sub(r"(_bucket|_total)$", "", name)
        assert family in declared or name in declared, f"{name} is not in a real scrape"
