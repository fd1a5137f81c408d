"""The `notify` section of a rule file: where to tell people what the guard did.

A rule file names channels, never their secrets: a webhook URL (Slack's holds its token) and a
signing secret come from an environment variable or a file, read when a message is sent.
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

NotifyOutcome = Literal[
    "fired", "paused", "already_paused", "not_running", "dry_run", "failed", "exempted", "superseded"
]
LINK_FIELDS = frozenset({"campaign_id", "workspace_id", "rule", "decision_id"})
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _as_tuple(value: object) -> object:
    return (value,) if isinstance(value, str) else value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretSource(_Frozen):
    """Exactly one of an environment variable's name or a file's path."""

    env: str | None = Field(None, pattern=_ENV_NAME, description="Name of the environment variable holding it.")
    file: str | None = Field(None, min_length=1, description="Path of a file holding it, e.g. a mounted Secret.")

    @model_validator(mode="after")
    def _one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env` (a variable's name) or `file` (a path)")
        return self


class SlackChannel(_Frozen):
    """A Slack incoming webhook: a readable message per outcome."""

    url: SecretSource = Field(description="Where the webhook URL is: `{env: NAME}` or `{file: PATH}`.")
    link: str | None = Field(
        None,
        max_length=500,
        description="Link to the campaign, with {campaign_id}, {workspace_id}, {rule} or {decision_id}, e.g. "
        "'https://app.leadterra.co/campaigns/{campaign_id}'.",
    )

    @field_validator("link")
    @classmethod
    def _known_fields(cls, link: str | None) -> str | None:
        if link is None:
            return link
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(link) if name is not None}
        except ValueError as error:
            raise ValueError(f"not a link template: {error}") from None
        if unknown := names - LINK_FIELDS:
            raise ValueError(f"unknown field(s) {sorted(unknown)} in the link; known: {sorted(LINK_FIELDS)}")
        return link


class WebhookChannel(_Frozen):
    """Any HTTPS endpoint: the audit event as JSON, signed with HMAC-SHA256 (X-Guard-Signature)."""

    url: SecretSource = Field(description="Where the URL is: `{env: NAME}` or `{file: PATH}`.")
    secret: SecretSource = Field(description="Where the signing secret is: `{env: NAME}` or `{file: PATH}`.")


class Notify(_Frozen):
    """Channels told about a decision's outcome; in a rule, or at the top of a file for all its rules."""

    # not `on`: YAML 1.1 reads a bare `on` key as the boolean true
    outcomes: Annotated[tuple[NotifyOutcome, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = Field(
        ("paused", "failed"), description="The outcomes to tell about (default: paused, failed)."
    )
    slack: SlackChannel | None = None
    webhook: WebhookChannel | None = None

    @model_validator(mode="after")
    def _some_channel(self) -> Notify:
        if self.slack is None and self.webhook is None:
            raise ValueError("name a channel: `slack` and/or `webhook`")
        return self
