"""How to reach Kafka (`KAFKA_*`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from guard import redact

_LISTENER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*://")
# a DNS name or IPv4 address, or an IPv6 address in brackets; the port is optional (aiokafka's default 9092)
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.%A-Za-z]+\])(?::(?P<port>[0-9]{1,5}))?")


class KafkaSettings(BaseSettings):
    """How to reach Kafka (`KAFKA_*`)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore", allow_inf_nan=False)

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

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        """host:port entries as the clients take them. A listener name in front (`PLAINTEXT://host:9092`,
        as a broker's `listeners` line reads) is dropped, as Kafka's own clients drop it; anything else
        that is not host[:port] is refused now, not retried for minutes as a name DNS does not know."""
        servers = []
        for entry in value.split(","):
            server = _LISTENER_PREFIX.sub("", entry.strip())
            match = _HOST_PORT.fullmatch(server)
            if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
                raise ValueError(
                    f"{entry.strip()[:80]!r} is not host:port; write host:port[,host:port...], e.g. kafka:9092"
                )
            servers.append(server)
        return ",".join(servers)

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
