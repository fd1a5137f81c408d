"""The `notify` section of a rule file: where to tell people what the guard did.

A rule file names channels, never their secrets: a webhook URL (Slack's holds its token) and a
signing secret come from an environment variable or a file, read when a message is sent.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

NotifyOutcome = Literal[
    "fired", "paused", "already_paused", "not_running", "dry_run", "failed", "exempted", "superseded"
]
LINK_FIELDS = frozenset({"campaign_id", "workspace_id", "rule", "decision_id"})
MAX_LINK_CHARS = 500
_KNOWN = ", ".join(f"{{{name}}}" for name in sorted(LINK_FIELDS))
# Whitespace and control characters end a URL; `<`, `>` and `|` are Slack's markup around it (`<url|text>`).
_NOT_IN_A_LINK = re.compile(r"[\s<>|\x00-\x1f\x7f]")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def check_link(link: str) -> str:
    """`link` when it is an http(s) URL whose only fields are LINK_FIELDS written bare (`{campaign_id}`);
    ValueError saying what is wrong otherwise. Bare only: a format spec (`{campaign_id:>2000000000}`
    builds a 2 GB string), a conversion (`!r`) or an attribute or index (`{rule.__class__}`) would let a
    setting or a rule file run str.format's machinery on every message."""
    if len(link) > MAX_LINK_CHARS:
        raise ValueError(f"the link has {len(link)} characters; at most {MAX_LINK_CHARS}")
    if not link.startswith(("https://", "http://")):
        raise ValueError("the link must start with https:// (or http://)")
    try:
        parts = list(string.Formatter().parse(link))
    except ValueError as error:
        raise ValueError(f"not a link template ({error}); write literal braces as {{{{ and }}}}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in LINK_FIELDS or spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{written} in the link: only {_KNOWN} may be filled in, each written bare")
    if unsafe := _NOT_IN_A_LINK.search(link):
        raise ValueError(f"the link holds {unsafe.group()!r}: no spaces, control characters, <, > or | in a link")
    return link


def render_link(link: str, fields: Mapping[str, str]) -> str | None:
    """`link` with its fields filled in from `fields`, or None when it is not a valid link (never raises)."""
    try:
        parts = list(string.Formatter().parse(check_link(link)))
    except (TypeError, ValueError):
        return None
    return "".join(literal + (fields.get(name, "") if name is not None else "") for literal, name, _, _ in parts)


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
        description="Link to the campaign, with {campaign_id}, {workspace_id}, {rule} or {decision_id}, e.g. "
        "'https://app.leadterra.co/campaigns/{campaign_id}'.",
    )

    @field_validator("link")
    @classmethod
    def _link(cls, link: str | None) -> str | None:
        return link if link is None else check_link(link)


class WebhookChannel(_Frozen):
    """Any HTTPS endpoint: the audit event as JSON, signed with HMAC-SHA256 (X-Guard-Signature)."""

    url: SecretSource = Field(description="Where the URL is: `{env: NAME}` or `{file: PATH}`.")
    secret: SecretSource = Field(description="Where the signing secret is: `{env: NAME}` or `{file: PATH}`.")


class Notify(_Frozen):
    """Channels told about a decision's outcome; in a rule, or at the top of a file for all its rules."""

    # not `on`: YAML 1.1 reads a bare `on` key as the boolean true
    outcomes: Annotated[tuple[NotifyOutcome, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = Field(
        ("paused", "failed"), description="The outcomes to tell about (default: paused, failed; an alert's fired)."
    )
    slack: SlackChannel | None = None
    webhook: WebhookChannel | None = None

    @model_validator(mode="after")
    def _some_channel(self) -> Notify:
        if self.slack is None and self.webhook is None:
            raise ValueError("name a channel: `slack` and/or `webhook`")
        return self
