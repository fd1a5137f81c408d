"""The README stays true: every setting documented, the two set-up commands on its first screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings, LeadterraSettings, WebhookSettings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
SETTINGS = [
    f"{prefix}{name.upper()}"
    for group, prefix in ((KafkaSettings, "KAFKA_"), (LeadterraSettings, "LEADTERRA_"), (GuardSettings, "GUARD_"))
    for name in group.model_fields
] + [
    field.validation_alias if isinstance(field.validation_alias, str) else f"{prefix}{name.upper()}"
    for group, prefix in ((IngestSettings, "GUARD_INGEST_"), (WebhookSettings, "LEADTERRA_WEBHOOK_"))
    for name, field in group.model_fields.items()
]


@pytest.mark.parametrize("variable", SETTINGS)
def test_every_setting_is_in_the_readme_table(variable: str) -> None:
    """A setting added to guard/runtime/settings/ without a README row fails here."""
    assert f"| `{variable}` |" in README


def test_the_first_screen_shows_exactly_the_demo_and_test_commands() -> None:
    """A newcomer sees `make demo` and `make test` in the first 25 lines, and no other set-up command."""
    first_screen = README.splitlines()[:25]
    commands = [line.split("#")[0].strip() for line in first_screen if line.startswith("make ")]
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls `make test`, the command the README gives."""
    assert "make test" in (ROOT / ".ci" / "run").read_text()
