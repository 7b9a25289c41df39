"""Metrics of the pod annotator.

Policy: one counter by a fixed result set (``ok``, ``error``), counted once per change
of the pod's job (not per attempt: retries are the annotator's business, and a change
that a newer one replaced is not counted). Both series exist from the start, so a rate
of errors is readable before the first one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AnnotationMetrics:
    """The annotator's metrics on the agent's registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        """Register on ``registry`` (``None``: count without exporting, as tests do)."""
        self.updates = Counter(
            "runner_agent_pod_annotations",
            "Changes of the job annotations on the agent's own pod, by result: ok (the pod "
            "carries them), error (given up on, or the pod could not be found at start: "
            "the agent's log says why).",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "error"):
            self.updates.labels(result)
