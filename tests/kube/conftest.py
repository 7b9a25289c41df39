"""The Kubernetes API stub over TLS on a free loopback port, the pod's ServiceAccount
files, and annotators pointed at it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.config import kubernetes as kube_config
from agent.kube import annotator, metrics
from tests.kube import pki as pki_
from tests.kube.stub import ApiServer, serve


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> pki_.Pki:
    return pki_.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def api(pki: pki_.Pki) -> AsyncIterator[ApiServer]:
    async with serve(ApiServer(), pki.server) as served:
        yield served


class Settings:
    """``kubernetes`` settings for the stub, changeable as a reload would."""

    def __init__(self, api: ApiServer, pki: pki_.Pki, folder: Path) -> None:
        self.token_file = folder / "token"
        self.token_file.write_text(api.token + "\n")
        self.current = kube_config.KubernetesSettings(
            annotate_pod=True,
            api_url=api.url,
            token_file=self.token_file,
            ca_file=pki.ca_file,
            namespace=api.namespace,
            pod_name=api.pod,
        )

    def __call__(self) -> kube_config.KubernetesSettings:
        return self.current

    def change(self, **values: Any) -> None:
        self.current = self.current.model_copy(update=values)


@pytest.fixture
def settings(api: ApiServer, pki: pki_.Pki, tmp_path: Path) -> Settings:
    return Settings(api, pki, tmp_path)


class Counts:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = metrics.AnnotationMetrics(self.registry)

    def __getitem__(self, result: str) -> float:
        value = self.registry.get_sample_value(
            "runner_agent_pod_annotations_total", {"result": result}
        )
        assert value is not None
        return value


@pytest.fixture
def counts() -> Counts:
    return Counts()


MakeAnnotator = Callable[..., annotator.Annotator]


@pytest.fixture
async def make_annotator(settings: Settings, counts: Counts) -> AsyncIterator[MakeAnnotator]:
    """``make_annotator(**keywords)``: a started annotator for the stub (fast backoff),
    closed at the end of the test."""
    made: list[annotator.Annotator] = []

    def make(**keywords: Any) -> annotator.Annotator:
        keywords.setdefault("backoff_seconds", 0.01)
        made.append(annotator.Annotator(settings, counts.metrics, **keywords))
        made[-1].start()
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def eventually(
    predicate: Callable[[], Any], *, timeout: float = 5.0, what: str = "condition"
) -> Any:
    """Wait for ``predicate`` to hold, polling the running loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
