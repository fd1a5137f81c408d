"""What `guard run` watches and how it behaves (`GUARD_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from guard import redact
from guard.actions.workspaces import parse_topic_workspaces
from guard.engine.engine import DEFAULT_DEDUPE_HORIZON
from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.engine.kinds import CoreMissing, EngineChoice, Kinds, choose
from guard.errors import ConfigError
from guard.rules.notify import check_link
from guard.runtime.catchup import DEFAULT_CATCH_UP_LIMIT

CommaList = Annotated[tuple[str, ...], NoDecode]


class GuardSettings(BaseSettings):
    """What the guard watches and how it behaves (`GUARD_*`)."""

    model_config = SettingsConfigDict(env_prefix="GUARD_", extra="ignore", allow_inf_nan=False)

    rules: Path = Field(Path("rules"), description="A rule file, or a directory of *.yaml rule files.")
    input_topics: CommaList = Field(("leadterra.events",), description="Comma-separated topics of events.")
    audit_topic: str = Field("guard.audit", description="Where every decision and outcome is recorded.")
    dlq_topic: str = Field("guard.dlq", description="Where malformed records go, with the reason in headers.")
    control_topic: str = Field(
        "guard.control",
        description="Compacted topic of operator records (exemptions, `guard exempt`); created when missing.",
    )
    internal_replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replication factor of the topics the guard creates for itself when missing (GUARD_STATE_TOPIC, "
        "GUARD_CONTROL_TOPIC); unset: the number of brokers, at most 3, as Kafka Streams advises for its own.",
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
    catch_up_limit: float = Field(
        DEFAULT_CATCH_UP_LIMIT,
        gt=0,
        description="Seconds a backlog's pause decision is held at most, waiting for its partition to catch up "
        "(DESIGN promise 10); a partition still behind then acts on it, judged on what it has read. Bounds how "
        "long a guard that stays behind (traffic it cannot keep up with, a very long backlog) pauses nothing.",
    )
    state_topic: str = Field(
        "guard.state",
        description="Compacted topic of state checkpoints; created when missing (compacted, one partition, a short "
        "segment.ms). Where the brokers refuse, there are no checkpoints and a restart replays the rules' look-back.",
    )
    scope_topic: str = Field(
        "guard.scopes",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Where events are forwarded, keyed by scope, for rules over a workspace, sender or domain "
        "(`scope:`); created when missing, as many partitions as the input, and read by the same group. Used only "
        "while some rule has a scope beyond the campaign.",
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
    engine: EngineChoice = Field(
        "auto",
        description="Which engine counts: `compiled` (the compiled core, guard-core, built from core/ with a Rust "
        "compiler), `python` (the reference), or `auto`: the compiled core when it is installed, else Python. Both "
        "decide the same; `guard run`'s start-up line says which runs.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="JSON logs on stderr.")
    slack_webhook_url: SecretStr | None = Field(
        None, description="A Slack incoming webhook told of every pause outcome (paused, failed). Never logged."
    )
    slack_webhook_url_file: FilePath | None = Field(None, description="A file holding that URL, e.g. a mounted Secret.")
    notify_link: str | None = Field(
        None,
        description="Link in those Slack messages, e.g. 'https://app.leadterra.co/campaigns/{campaign_id}': "
        "{campaign_id}, {workspace_id}, {rule} and {decision_id} are filled in; checked at start-up.",
    )
    notify_deadline: float = Field(
        120.0,
        gt=0,
        description="Seconds after a notification's first try within which any retry starts; "
        "then it is audited as notify_failed.",
    )

    @field_validator("slack_webhook_url", mode="before")
    @classmethod
    def _register_url(cls, value: Any) -> Any:
        """The URL holds Slack's token: masked everywhere from the moment it is read."""
        redact.register(value.get_secret_value() if isinstance(value, SecretStr) else value)
        return value or None

    def slack_url(self) -> SecretStr | None:
        """GUARD_SLACK_WEBHOOK_URL, or the content of GUARD_SLACK_WEBHOOK_URL_FILE (stripped); ConfigError when it is
        no http(s) URL with a host, found at start-up rather than by every message failing after its pause."""
        if self.slack_webhook_url is not None or self.slack_webhook_url_file is None:
            url, setting = self.slack_webhook_url, "GUARD_SLACK_WEBHOOK_URL"
        else:
            setting = "GUARD_SLACK_WEBHOOK_URL_FILE"
            try:
                text = self.slack_webhook_url_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"{setting} cannot be read: {type(error).__name__}") from None
            redact.register(text)
            url = SecretStr(text.strip()) if text.strip() else None
        if url is not None:
            try:
                parts = urlsplit(url.get_secret_value())
                usable = parts.scheme in ("https", "http") and bool(parts.hostname)
            except ValueError:  # e.g. an unclosed [ of an IPv6 host
                usable = False
            if not usable:
                # the URL holds Slack's token: never quoted
                raise ConfigError(f"{setting} is not an https:// URL, e.g. https://hooks.slack.com/services/...")
        return url

    def engine_kinds(self) -> Kinds:
        """The series types of GUARD_ENGINE; ConfigError when `compiled` is asked and the core is missing."""
        try:
            return choose(self.engine)
        except CoreMissing as error:
            raise ConfigError(str(error)) from None

    @field_validator("notify_link")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        """A typo (`{campaign}`) found now, not by every message failing after its pause."""
        return check_link(value) if value else None

    @field_validator("topic_workspaces", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        return parse_topic_workspaces(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _mapped_topics_are_read(self) -> GuardSettings:
        if unread := sorted(set(self.topic_workspaces) - set(self.input_topics)):
            raise ValueError(f"GUARD_TOPIC_WORKSPACES maps {', '.join(unread)}, not in GUARD_INPUT_TOPICS")
        own = {"GUARD_SCOPE_TOPIC": self.scope_topic, "GUARD_STATE_TOPIC": self.state_topic}
        own |= {"GUARD_CONTROL_TOPIC": self.control_topic, "GUARD_AUDIT_TOPIC": self.audit_topic}
        own |= {"GUARD_DLQ_TOPIC": self.dlq_topic}  # a dead letter keeps its bytes: read again, it fails again
        named: dict[str, str] = {}
        for setting, topic in own.items():
            if topic in self.input_topics:
                raise ValueError(
                    f"{setting} {topic!r} is also in GUARD_INPUT_TOPICS: the guard would read its own output"
                )
            if (other := named.setdefault(topic, setting)) != setting:
                # each is read back as what it holds (audit records, checkpoints, operator records, forwards)
                raise ValueError(f"{other} and {setting} are both {topic!r}: each needs a topic of its own")
        return self

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(topic.strip() for topic in value.split(",") if topic.strip())
        if not value:
            raise ValueError("GUARD_INPUT_TOPICS needs at least one topic")
        return value
