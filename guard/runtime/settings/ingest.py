"""`guard ingest`: the webhook signing secrets and the limits of its routes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from guard import redact
from guard.contracts.events import MAX_ID_LENGTH
from guard.errors import ConfigError
from guard.runtime.settings.env import secret_list


class WebhookSettings(BaseSettings):
    """How `guard ingest` checks Leadterra's webhook signatures (`LEADTERRA_WEBHOOK_*`)."""

    model_config = SettingsConfigDict(env_prefix="LEADTERRA_WEBHOOK_", extra="ignore", allow_inf_nan=False)

    secret: SecretStr | None = Field(
        None, description="Signing secret(s), comma-separated: during a rotation both verify. Never logged."
    )
    secret_file: FilePath | None = Field(None, description="A file holding the secret(s), e.g. a mounted Secret.")
    campaign_secrets_file: FilePath | None = Field(
        None,
        description="YAML or JSON mapping campaign ids to the signing secret(s) of their own webhook "
        "(`?campaign=<id>`): the only secrets that may attribute a body naming no campaign. Never logged.",
    )

    def secrets(self) -> tuple[bytes, ...]:
        """The account's signing secrets (may be none when campaigns have their own); raises ConfigError
        when none at all is set or one is blank."""
        if self.secret is not None and self.secret_file is not None:
            raise ConfigError("set LEADTERRA_WEBHOOK_SECRET or LEADTERRA_WEBHOOK_SECRET_FILE, not both")
        if self.secret is not None:
            return tuple(s.encode() for s in secret_list("LEADTERRA_WEBHOOK_SECRET", self.secret.get_secret_value()))
        if self.secret_file is not None:
            return read_secret_file(self.secret_file)
        if self.campaign_secrets_file is not None:
            return ()
        raise ConfigError(
            "LEADTERRA_WEBHOOK_SECRET (or LEADTERRA_WEBHOOK_SECRET_FILE, or LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE) "
            "is required by guard ingest"
        )

    def campaign_secrets(self) -> dict[str, tuple[bytes, ...]]:
        """campaign -> its own webhook's signing secret(s) ({} without the file); ConfigError naming the
        problem (never a secret) when the file is wrong."""
        if self.campaign_secrets_file is None:
            return {}
        return read_campaign_secrets(self.campaign_secrets_file)


def read_secret_file(path: Path) -> tuple[bytes, ...]:
    """The secret(s) in LEADTERRA_WEBHOOK_SECRET_FILE; ConfigError (never quoting one) when unusable."""
    name = "LEADTERRA_WEBHOOK_SECRET_FILE"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{name} cannot be read: {type(error).__name__}") from None
    return tuple(s.encode() for s in secret_list(name, text))


def read_campaign_secrets(path: Path) -> dict[str, tuple[bytes, ...]]:
    """`camp_123: whsec_...` lines (a list, or a comma-separated string, during a rotation)."""
    name = "LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE"
    data = redact.read_secrets_file(path, name, "campaign ids to secrets", "camp_123: whsec_...")
    secrets: dict[str, tuple[bytes, ...]] = {}
    for campaign, value in data.items():
        if not isinstance(campaign, str) or not campaign.strip() or len(campaign) > MAX_ID_LENGTH:
            raise ConfigError(f"{name}: {str(campaign)[:40]!r} is not a campaign id")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{name}: the secret of campaign {campaign[:80]} is not text")
        found = secret_list(f"{name} (campaign {campaign[:80]})", ",".join(items))
        redact.register(*found)
        secrets[campaign.strip()] = tuple(item.encode() for item in found)
    return secrets


class IngestSettings(BaseSettings):
    """`guard ingest`: limits of its HTTP routes and the feedback-loop (ARF) route (`GUARD_INGEST_*`)."""

    model_config = SettingsConfigDict(
        env_prefix="GUARD_INGEST_", extra="ignore", allow_inf_nan=False, populate_by_name=True
    )

    max_body_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="Larger request bodies are refused with 413. The default leaves room for the record's key "
        "and headers below Kafka's default record size (1,048,588 bytes); a smaller input topic lowers it.",
    )
    read_timeout: float = Field(5.0, gt=0, description="Seconds to receive a request body; slower clients get 408.")
    produce_timeout: float = Field(
        5.0,
        gt=0,
        lt=10,
        description="Seconds to wait for the broker's acknowledgement before answering 503; below "
        "Leadterra's 10 s answer budget so it retries rather than times out.",
    )
    max_connections: int = Field(
        128,
        ge=1,
        description="Open connections at most; at the cap a new one closes one still waiting for its request "
        "(the ones not read from yet last), or is answered 503 when all are being answered. Sizes the chart's "
        "memory limit with the body and header limits.",
    )
    idle_timeout: float = Field(
        75.0,
        gt=0,
        description="Seconds a connection may stay without a complete request header: a slow header or an "
        "idle keep-alive connection is closed. Above what reuses connections keeps them idle (an Ingress's "
        "upstream pool: 60 s), so a pooled request never crosses the close; at the connection cap, such "
        "connections make room first.",
    )
    max_header_bytes: int = Field(
        8190, ge=1024, description="Longest request line or header field; a longer one is answered 400."
    )
    max_headers: int = Field(32, ge=8, description="Header fields per request at most; more are answered 400.")
    arf_campaign_header: str = Field(
        "X-Leadterra-Campaign-Id",
        min_length=1,
        validation_alias="GUARD_ARF_CAMPAIGN_HEADER",
        description="Header of the reported (original) message that holds the campaign id.",
    )
    arf_token: SecretStr | None = Field(
        None,
        validation_alias="GUARD_ARF_TOKEN",
        description="Bearer token(s) of POST /v1/feedback/arf, comma-separated; unset = route off. Never logged.",
    )
    arf_token_file: FilePath | None = Field(
        None, validation_alias="GUARD_ARF_TOKEN_FILE", description="A file holding the ARF bearer token(s)."
    )

    def arf_tokens(self) -> tuple[bytes, ...]:
        """The bearer tokens of the ARF route (empty: the route is off); blank ones are refused."""
        if self.arf_token is not None:
            return tuple(s.encode() for s in secret_list("GUARD_ARF_TOKEN", self.arf_token.get_secret_value()))
        if self.arf_token_file is not None:
            text = self.arf_token_file.read_text(encoding="utf-8")
            return tuple(s.encode() for s in secret_list("GUARD_ARF_TOKEN_FILE", text))
        return ()
