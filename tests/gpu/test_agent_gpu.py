"""GPU metrics through a real agent: the replay backend's scrape (the H200 under load, 8
GPUs with one lost, MIG, NotSupported), and this machine's own (no GPU: one info line,
every other metric served)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.agentproc import Agent, Starter, http_get


def scrape(agent: Agent) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, body = http_get(agent.base + "/metrics")
    assert status == 200
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def by_gpu(samples: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels["gpu"]: value for labels, value in samples}


def start(start_agent: Starter, **gpu: Any) -> Agent:
    config = start_agent.base_config()
    config["gpu"] = gpu
    agent = start_agent.start(config)
    # A lost GPU makes the runner unready: its GPU condition is not what these test.
    agent.wait_for(lambda: agent.get("/readyz?exclude=gpu")[0] == 200, timeout=30, what="ready")
    return agent


def test_the_replayed_h200_under_load_through_a_scrape(start_agent: Starter) -> None:
    agent = start(
        start_agent,
        backend="fake",
        slow_interval_seconds=1,
        fake={
            "gpus": 8,
            "trace": "replay",
            "offset_seconds": 14,  # inside the matmul loop (10-30 s)
            "lost": [{"gpu": 3, "at_seconds": 0}],
            "mig": [5],
            "not_supported": ["encoder"],
        },
    )
    m = agent.wait_for(
        lambda: (s := scrape(agent)).get("runner_agent_gpu_energy_joules_total") and s,
        timeout=15,
        what="the first slow sample",
    )
    [(labels, _)] = m["runner_agent_gpu_backend_info"]
    assert labels == {"backend": "fake", "state": "ready"}
    info = {lab["gpu"]: lab for lab, _ in m["runner_agent_gpu_info"]}
    assert len(info) == 8
    assert info["0"]["backend"] == "fake"
    assert info["0"]["model"] == "NVIDIA H200"
    assert (info["0"]["driver_version"], info["0"]["cuda_driver_version"]) == ("580.159.04", "13.0")
    assert info["5"]["mig_mode"] == "enabled"
    assert len({lab["uuid"] for lab in info.values()}) == 8
    util = by_gpu(m["runner_agent_gpu_utilization_ratio"])
    power = by_gpu(m["runner_agent_gpu_power_watts"])
    assert util["0"] >= 0.98
    assert 660 < power["0"] < 710
    assert "5" not in util  # MIG: NotSupported, absent rather than 0
    assert "5" in power
    assert "runner_agent_gpu_encoder_utilization_ratio" not in m
    assert "runner_agent_gpu_decoder_utilization_ratio" in m
    assert by_gpu(m["runner_agent_gpu_lost"]) == {str(i): float(i == 3) for i in range(8)}
    assert by_gpu(m["runner_agent_gpu_healthy"]) == {str(i): float(i != 3) for i in range(8)}
    assert agent.get("/readyz")[0] == 503
    assert "3" not in power
    energy = by_gpu(m["runner_agent_gpu_energy_joules_total"])["0"]
    time.sleep(2.2)  # two more slow samples
    later = scrape(agent)
    assert by_gpu(later["runner_agent_gpu_energy_joules_total"])["0"] > energy + 500
    assert later["runner_agent_gpu_stale"] == [({}, 0.0)]
    assert later["runner_agent_gpu_collect_errors_total"] == [({}, 0.0)]
    [(_, stamp)] = later["runner_agent_gpu_last_collect_timestamp_seconds"]
    assert abs(stamp - time.time()) < 5


def test_no_gpu_here_is_one_info_line_and_every_other_metric(start_agent: Starter) -> None:
    agent = start(start_agent)  # gpu.backend: auto, the default
    m = agent.wait_for(
        lambda: (
            (s := scrape(agent)).get("runner_agent_gpu_backend_info")
            and s["runner_agent_gpu_backend_info"][0][0]["state"] != "starting"
            and s
        ),
        timeout=15,
        what="the GPU engine's start",
    )
    assert m["runner_agent_gpu_backend_info"] == [({"backend": "nvml", "state": "unavailable"}, 1)]
    assert "runner_agent_gpu_info" not in m
    assert "runner_agent_build_info" in m
    assert "runner_agent_ready" in m
    gpu_lines = [r for r in agent.log_records() if r["logger"].startswith("agent.gpu")]
    assert [(r["level"], "no GPU support" in r["message"]) for r in gpu_lines] == [("info", True)]


def test_off_reads_nothing(start_agent: Starter) -> None:
    agent = start(start_agent, backend="off")
    m = agent.wait_for(
        lambda: (s := scrape(agent)).get("runner_agent_gpu_backend_info") and s,
        timeout=15,
        what="the backend info",
    )
    assert m["runner_agent_gpu_backend_info"] == [({"backend": "off", "state": "off"}, 1)]


def test_openmetrics_scrapes_carry_the_gpu_block_before_one_eof(start_agent: Starter) -> None:
    import urllib.request

    agent = start(start_agent, backend="fake")
    request = urllib.request.Request(  # noqa: S310 - loopback
        agent.base + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        text = answer.read().decode()
    assert text.count("# EOF") == 1
    assert text.endswith("# EOF\n")
    assert "runner_agent_gpu_power_watts{" in text
    assert "runner_agent_build_info{" in text
    # The same sweep's block is served again as it was rendered (no new read within 1 s).
    assert http_get(agent.base + "/metrics")[0] == 200
