"""Settings from the environment, grouped per subsystem. Every field says its unit and why."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from guard import redact
from guard.actions.workspaces import parse_topic_workspaces
from guard.engine.engine import DEFAULT_DEDUPE_HORIZON
from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.errors import ConfigError

CommaList = Annotated[tuple[str, ...], NoDecode]

# What an `Authorization: Bearer <key>` header can carry: visible ASCII, no spaces.
_HEADER_SAFE_KEY = re.compile(r"[\x21-\x7e]+")


class KafkaSettings(BaseSettings):
    """How to reach Kafka (`KAFKA_*`)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field("localhost:9092", description="host:port[,host:port...] of the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Production clusters usually want SSL or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="Required with SASL_* protocols."
    )
    sasl_username: str | None = Field(None, description="SASL user.")
    sasl_password: SecretStr | None = Field(None, description="SASL password. Never logged.")
    ssl_cafile: FilePath | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    ssl_certfile: FilePath | None = Field(None, description="Client certificate, for mutual TLS.")
    ssl_keyfile: FilePath | None = Field(None, description="Client key, for mutual TLS.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Consumer heartbeat; a third of the session timeout.")
    fetch_max_wait_ms: int = Field(
        100, ge=0, description="Longest a fetch waits for data; it bounds the decision latency when traffic is thin."
    )
    enable_idempotence: bool = Field(
        True, description="Idempotent producer; turn off only for brokers without it (the embedded test broker)."
    )
    allow_insecure_sasl_plain: bool = Field(
        False,
        description="Allow SASL PLAIN over SASL_PLAINTEXT, which sends the password in cleartext (a lab only).",
    )

    @model_validator(mode="before")
    @classmethod
    def _register_secret(cls, values: Any) -> Any:
        """Mask the password in everything that leaves the process, before anything can quote it."""
        if isinstance(values, dict):
            password = values.get("sasl_password")
            redact.register(password.get_secret_value() if isinstance(password, SecretStr) else password)
        return values

    @field_validator("sasl_username", "sasl_password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty or whitespace-only value (an empty Secret) is no value: refused like a missing one."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value

    @model_validator(mode="after")
    def _complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs KAFKA_SASL_MECHANISM, "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if (
            self.security_protocol == "SASL_PLAINTEXT"
            and self.sasl_mechanism == "PLAIN"
            and not self.allow_insecure_sasl_plain
        ):
            raise ValueError(
                "KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the password in "
                "cleartext: use SASL_SSL (or SCRAM), or set KAFKA_ALLOW_INSECURE_SASL_PLAIN=true"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return self


class LeadterraSettings(BaseSettings):
    """How to reach Leadterra (`LEADTERRA_*`)."""

    model_config = SettingsConfigDict(env_prefix="LEADTERRA_", extra="ignore")

    api_url: str = Field("https://app.leadterra.co", description="Base URL; paths under /v1 are appended.")
    api_key: SecretStr | None = Field(None, description="Workspace API key (sk_live_...). Never logged.")
    api_key_file: FilePath | None = Field(None, description="A file holding the key, e.g. a mounted Secret.")
    api_keys_file: FilePath | None = Field(
        None, description="A YAML or JSON file mapping workspace ids to their keys (several workspaces)."
    )
    request_timeout: float = Field(10.0, gt=0, description="Seconds per HTTP attempt.")
    retry_deadline: float = Field(
        300.0, gt=0, description="Seconds a pause keeps retrying 429/5xx/timeouts before it is audited as failed."
    )
    backoff_initial: float = Field(0.5, gt=0, description="Seconds before the first retry; doubles, with jitter.")
    backoff_max: float = Field(30.0, gt=0, description="Longest wait between retries, unless Retry-After asks more.")

    allow_insecure_http: bool = Field(
        False,
        description="Allow an http:// API URL to a host that is not loopback (the key then travels in cleartext).",
    )
    _key: SecretStr | None = PrivateAttr(None)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"LEADTERRA_API_URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _clean_key(cls, value: Any) -> Any:
        """Whitespace around the key (a pasted newline) is dropped; an empty key is no key."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            redact.register(value)
            value = value.strip() or None
        return value

    @model_validator(mode="after")
    def _usable(self) -> LeadterraSettings:
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        source = "LEADTERRA_API_KEY"
        if key is None and self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"LEADTERRA_API_KEY_FILE cannot be read: {type(error).__name__}") from None
            redact.register(text)
            key, source = text.strip() or None, "the file LEADTERRA_API_KEY_FILE"
        if key is not None and not _HEADER_SAFE_KEY.fullmatch(key):
            raise ValueError(
                f"the API key in {source} holds characters an HTTP header cannot carry (spaces, control or "
                "non-ASCII characters inside it); check how the Secret was written"
            )
        self._key = SecretStr(key) if key is not None else None
        url = urlsplit(self.api_url)
        if url.scheme == "http" and not _loopback(url.hostname or "") and not self.allow_insecure_http:
            raise ValueError(
                "LEADTERRA_API_URL is http:// to a host that is not loopback: the API key would travel in cleartext. "
                "Use https://, or set LEADTERRA_ALLOW_INSECURE_HTTP=true"
            )
        return self

    def key(self) -> SecretStr | None:
        """The API key, from the variable or the file (whitespace stripped; empty means none)."""
        return self._key

    def workspace_keys(self) -> dict[str, SecretStr]:
        """workspace -> key from LEADTERRA_API_KEYS_FILE ({} without it); ConfigError when it is wrong."""
        from guard.actions.workspaces import read_api_keys

        return read_api_keys(self.api_keys_file) if self.api_keys_file is not None else {}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GuardSettings(BaseSettings):
    """What the guard watches and how it behaves (`GUARD_*`)."""

    model_config = SettingsConfigDict(env_prefix="GUARD_", extra="ignore")

    rules: Path = Field(Path("rules"), description="A rule file, or a directory of *.yaml rule files.")
    input_topics: CommaList = Field(("leadterra.events",), description="Comma-separated topics of events.")
    audit_topic: str = Field("guard.audit", description="Where every decision and outcome is recorded.")
    dlq_topic: str = Field("guard.dlq", description="Where malformed records go, with the reason in headers.")
    control_topic: str = Field(
        "guard.control",
        description="Compacted topic of operator records (exemptions, `guard exempt`); created when missing.",
    )
    group_id: str = Field("deliverability-guard", description="Consumer group; replicas share it.")
    dry_run: bool = Field(False, description="Decide and audit, but never call the pause API.")
    http_host: str = Field("0.0.0.0", description="Address of /livez, /readyz and /metrics.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of /livez, /readyz and /metrics (0 = any).")
    shutdown_grace: float = Field(
        20.0, gt=0, description="Seconds SIGTERM waits for in-flight pauses; keep below the pod's grace period."
    )
    commit_interval: float = Field(1.0, gt=0, description="Seconds between offset commits.")
    kafka_connect_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds `guard run` keeps trying to reach Kafka at start-up (with backoff) before it exits 2; "
        "long enough for a broker started alongside the guard.",
    )
    rules_reload_interval: float = Field(
        5.0, ge=0, description="Seconds between checks of the rule files for changes (0 = never reload)."
    )
    dedupe_horizon: float = Field(
        DEFAULT_DEDUPE_HORIZON,
        gt=0,
        description="Seconds a (event, messageId) pair is remembered, to count webhook retries once.",
    )
    max_campaigns: int = Field(
        50_000,
        ge=1,
        description=(
            "Most campaigns one process keeps state for, shared out evenly over the input partitions; beyond it the "
            "least recently active are evicted. A campaign's windows and rule states cost about 2.1 KiB: 50,000 is "
            "~105 MiB (its dedupe keys count in GUARD_MAX_DEDUPE_KEYS)."
        ),
    )
    max_dedupe_keys: int = Field(
        10_000_000,
        ge=1,
        description=(
            "Most (campaign, event, messageId) keys one process remembers for GUARD_DEDUPE_HORIZON, shared out evenly "
            "over the input partitions; beyond it the oldest are forgotten first (a retry of one counts again). A key "
            "costs 12-14 bytes: 10,000,000 is ~135 MiB at most, 12 h of ~230 events a second with a messageId."
        ),
    )
    resume_grace: float = Field(
        DEFAULT_RESUME_GRACE,
        ge=0,
        description="Seconds after a pause decision during which a campaign's sends are mail that was already in "
        "flight when the pause landed; a send after it means the campaign runs again and is judged anew "
        "on its new evidence only. Covers delivery of mail in transit, webhook lag and the pause call's retries.",
    )
    state_topic: str = Field(
        "guard.state",
        description="Compacted topic of state checkpoints (cleanup.policy=compact); while it does not exist at "
        "start-up, a restart replays the rules' look-back instead.",
    )
    checkpoint_interval: float = Field(
        60.0,
        ge=0,
        description="Seconds between state checkpoints of each partition, also written on revoke and SIGTERM; a "
        "restart restores the newest and replays only what came after it (0 = no checkpoints).",
    )
    topic_workspaces: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated `topic=workspace_id` pairs, e.g. 'leadterra.acme=ws_acme,leadterra.beta=ws_beta': "
        "events of a mapped topic without `workspaceId` are in its workspace; one naming another is dead-lettered.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="JSON logs on stderr.")
    slack_webhook_url: SecretStr | None = Field(
        None, description="A Slack incoming webhook told of every pause outcome (paused, failed). Never logged."
    )
    slack_webhook_url_file: FilePath | None = Field(None, description="A file holding that URL, e.g. a mounted Secret.")
    notify_link: str | None = Field(
        None, description="Link in those Slack messages, e.g. 'https://app.leadterra.co/campaigns/{campaign_id}'."
    )
    notify_deadline: float = Field(
        120.0, gt=0, description="Seconds a notification keeps being retried before it is audited as notify_failed."
    )

    @field_validator("slack_webhook_url", mode="before")
    @classmethod
    def _register_url(cls, value: Any) -> Any:
        """The URL holds Slack's token: masked everywhere from the moment it is read."""
        redact.register(value.get_secret_value() if isinstance(value, SecretStr) else value)
        return value or None

    def slack_url(self) -> SecretStr | None:
        """GUARD_SLACK_WEBHOOK_URL, or the content of GUARD_SLACK_WEBHOOK_URL_FILE (stripped)."""
        if self.slack_webhook_url is not None or self.slack_webhook_url_file is None:
            return self.slack_webhook_url
        try:
            text = self.slack_webhook_url_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"GUARD_SLACK_WEBHOOK_URL_FILE cannot be read: {type(error).__name__}") from None
        redact.register(text)
        return SecretStr(text.strip()) if text.strip() else None

    @field_validator("topic_workspaces", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        return parse_topic_workspaces(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _mapped_topics_are_read(self) -> GuardSettings:
        if unread := sorted(set(self.topic_workspaces) - set(self.input_topics)):
            raise ValueError(f"GUARD_TOPIC_WORKSPACES maps {', '.join(unread)}, not in GUARD_INPUT_TOPICS")
        return self

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(topic.strip() for topic in value.split(",") if topic.strip())
        if not value:
            raise ValueError("GUARD_INPUT_TOPICS needs at least one topic")
        return value


class Settings:
    """All settings, read once at start-up."""

    def __init__(self, kafka: KafkaSettings, leadterra: LeadterraSettings, guard: GuardSettings) -> None:
        self.kafka, self.leadterra, self.guard = kafka, leadterra, guard

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment; raises ConfigError naming every wrong variable."""
        settings = cls(**_read({"kafka": KafkaSettings, "leadterra": LeadterraSettings, "guard": GuardSettings}))
        has_keys = settings.leadterra.key() is not None or bool(settings.leadterra.workspace_keys())
        if not settings.guard.dry_run and not has_keys:
            raise ConfigError(
                "invalid settings:\n"
                "  LEADTERRA_API_KEY (or LEADTERRA_API_KEY_FILE, or LEADTERRA_API_KEYS_FILE) is required unless "
                "GUARD_DRY_RUN=true"
            )
        return settings


def kafka_settings_from_env() -> KafkaSettings:
    """The `KAFKA_*` settings alone (for `guard replay kafka:...`); raises ConfigError like `Settings.from_env`."""
    return _read({"kafka": KafkaSettings})["kafka"]


def guard_settings_from_env() -> GuardSettings:
    """The `GUARD_*` settings alone (for the tools); raises ConfigError like `Settings.from_env`."""
    return _read({"guard": GuardSettings})["guard"]


def _read(groups: dict[str, type[BaseSettings]]) -> dict[str, Any]:
    """Each group from the environment, or ConfigError listing every problem. The messages are
    pydantic's without the input values, which may be secrets."""
    problems, read = [], {}
    for name, group in groups.items():
        prefix = group.model_config.get("env_prefix", "")
        try:
            read[name] = group()
        except ValidationError as error:
            for detail in error.errors():
                message = detail["msg"].removeprefix("Value error, ")
                loc = "_".join(str(part) for part in detail["loc"]).upper()
                problems.append(f"{prefix}{loc}: {message}" if loc else message)
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
    return read


def _secret_list(name: str, text: str) -> tuple[str, ...]:
    """Comma- or newline-separated secrets, whitespace stripped; an empty one is refused (it would
    make every signature computable by anyone)."""
    items = tuple(item.strip() for item in text.strip().replace("\n", ",").split(","))
    if not items or any(not item for item in items):
        raise ConfigError(f"{name} holds an empty secret (comma-separated, none may be blank)")
    return items


class WebhookSettings(BaseSettings):
    """How `guard ingest` checks Leadterra's webhook signatures (`LEADTERRA_WEBHOOK_*`)."""

    model_config = SettingsConfigDict(env_prefix="LEADTERRA_WEBHOOK_", extra="ignore")

    secret: SecretStr | None = Field(
        None, description="Signing secret(s), comma-separated: during a rotation both verify. Never logged."
    )
    secret_file: FilePath | None = Field(None, description="A file holding the secret(s), e.g. a mounted Secret.")

    def secrets(self) -> tuple[bytes, ...]:
        """The signing secrets; raises ConfigError when none is set or one is blank."""
        if self.secret is not None and self.secret_file is not None:
            raise ConfigError("set LEADTERRA_WEBHOOK_SECRET or LEADTERRA_WEBHOOK_SECRET_FILE, not both")
        if self.secret is not None:
            return tuple(s.encode() for s in _secret_list("LEADTERRA_WEBHOOK_SECRET", self.secret.get_secret_value()))
        if self.secret_file is not None:
            text = self.secret_file.read_text(encoding="utf-8")
            return tuple(s.encode() for s in _secret_list("LEADTERRA_WEBHOOK_SECRET_FILE", text))
        raise ConfigError("LEADTERRA_WEBHOOK_SECRET (or LEADTERRA_WEBHOOK_SECRET_FILE) is required by guard ingest")


class IngestSettings(BaseSettings):
    """`guard ingest`: limits of its HTTP routes and the feedback-loop (ARF) route (`GUARD_INGEST_*`)."""

    model_config = SettingsConfigDict(env_prefix="GUARD_INGEST_", extra="ignore", populate_by_name=True)

    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Larger request bodies are refused with 413.")
    read_timeout: float = Field(5.0, gt=0, description="Seconds to receive a request body; slower clients get 408.")
    produce_timeout: float = Field(
        5.0,
        gt=0,
        lt=10,
        description="Seconds to wait for the broker's acknowledgement before answering 503; below "
        "Leadterra's 10 s answer budget so it retries rather than times out.",
    )
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
            return tuple(s.encode() for s in _secret_list("GUARD_ARF_TOKEN", self.arf_token.get_secret_value()))
        if self.arf_token_file is not None:
            text = self.arf_token_file.read_text(encoding="utf-8")
            return tuple(s.encode() for s in _secret_list("GUARD_ARF_TOKEN_FILE", text))
        return ()
