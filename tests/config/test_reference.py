"""docs/configuration.md is generated from the settings' schema and never stale."""

from __future__ import annotations

from pathlib import Path

from agent.config import models, reference
from tests.support.agentproc import run_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_reference_in_docs_is_what_the_command_prints() -> None:
    printed = run_cli("config", "reference")
    assert printed.returncode == 0, printed.stderr
    assert DOCS.read_text() == printed.stdout, (
        "docs/configuration.md is stale: run `.venv/bin/python -m agent config reference "
        "> docs/configuration.md`"
    )


def test_every_setting_is_in_the_reference() -> None:
    text = reference.render()
    for group, field in models.Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, models.BaseModel):
            for name, sub in annotation.model_fields.items():
                nested = isinstance(sub.annotation, type) and issubclass(
                    sub.annotation, models.BaseModel
                )  # a section in a group (gpu.fake) is listed by its fields
                row = f"| `{group}.{name}." if nested else f"| `{group}.{name}` |"
                assert row in text, f"{group}.{name}"
    assert "| `services.<name>.restart.backoff_initial_seconds` |" in text
    assert "| `installer.max_entry_bytes` | " in text
