"""Settings from the environment, grouped per subsystem, one module per group. Every field says its unit and why."""

from __future__ import annotations

import difflib

from guard.errors import ConfigError
from guard.runtime.settings.env import read_groups
from guard.runtime.settings.guard import GuardSettings
from guard.runtime.settings.ingest import IngestSettings, WebhookSettings
from guard.runtime.settings.kafka import KafkaSettings
from guard.runtime.settings.leadterra import LeadterraSettings

__all__ = [
    "GuardSettings",
    "IngestSettings",
    "KafkaSettings",
    "LeadterraSettings",
    "Settings",
    "WebhookSettings",
    "guard_settings_from_env",
    "kafka_settings_from_env",
]


class Settings:
    """All settings, read once at start-up."""

    def __init__(self, kafka: KafkaSettings, leadterra: LeadterraSettings, guard: GuardSettings) -> None:
        self.kafka, self.leadterra, self.guard = kafka, leadterra, guard

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment; raises ConfigError naming every wrong variable."""
        settings = cls(**read_groups({"kafka": KafkaSettings, "leadterra": LeadterraSettings, "guard": GuardSettings}))
        has_keys = settings.leadterra.key() is not None or bool(settings.leadterra.workspace_keys())
        if not settings.guard.dry_run and not has_keys:
            raise ConfigError(
                "invalid settings:\n"
                "  LEADTERRA_API_KEY (or LEADTERRA_API_KEY_FILE, or LEADTERRA_API_KEYS_FILE) is required unless "
                "GUARD_DRY_RUN=true"
            )
        return settings

    def unkeyed_workspaces(self) -> dict[str, str]:
        """workspace -> what to tell of it, for each workspace GUARD_TOPIC_WORKSPACES maps a topic to and the keys
        file (LEADTERRA_API_KEYS_FILE) does not hold (a typo in either, or a key not there yet): its campaigns are
        paused with LEADTERRA_API_KEY, or, without one, not at all. The file's ids are never listed: one written the
        wrong way round holds keys there. A close one is named, being close to what the mapping says."""
        if self.leadterra.api_keys_file is None:
            return {}  # every campaign is paused with the one key
        keys = self.leadterra.workspace_keys()
        unkeyed: dict[str, str] = {}
        for topic, workspace in sorted(self.guard.topic_workspaces.items()):
            if workspace not in keys and workspace not in unkeyed:
                close = difflib.get_close_matches(workspace, list(keys), n=1, cutoff=0.8)
                hint = f"; did you mean {close[0]}?" if close else ""
                unkeyed[workspace] = (
                    f"GUARD_TOPIC_WORKSPACES maps {topic} to it, LEADTERRA_API_KEYS_FILE has no key for it{hint}"
                )
        return unkeyed


def kafka_settings_from_env() -> KafkaSettings:
    """The `KAFKA_*` settings alone (for `guard replay kafka:...`); raises ConfigError like `Settings.from_env`."""
    return read_groups({"kafka": KafkaSettings})["kafka"]


def guard_settings_from_env() -> GuardSettings:
    """The `GUARD_*` settings alone (for the tools); raises ConfigError like `Settings.from_env`."""
    return read_groups({"guard": GuardSettings})["guard"]
