"""What `guard run` checks as it starts: the probe server up, Kafka reached (waiting for a broker
starting alongside), and the effective configuration logged (the input topics: guard.runtime.input_topics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_before_delay, wait_exponential_jitter

from guard.engine.kinds import Kinds, why_not_compiled
from guard.errors import ConfigError
from guard.rules import RuleSet
from guard.runtime.kafka import PROBE_SECONDS, KafkaUnreachable, reach
from guard.runtime.server import HealthServer
from guard.runtime.settings import GuardSettings, KafkaSettings, Settings
from guard.telemetry.health import Health

log = structlog.get_logger("guard.runtime.service")  # the service's lines, under the name they always had

CONNECT_BACKOFF_MAX = 30.0  # longest wait between start-up attempts to reach Kafka


@contextlib.contextmanager
def listening(settings: GuardSettings, routes: str = "/livez, /readyz and /metrics") -> Iterator[None]:
    """A port that cannot be had (taken, not allowed, no such address) is a ConfigError naming the
    settings: one line from the command, not a traceback."""
    try:
        yield
    except OSError as error:
        raise ConfigError(
            f"cannot serve {routes} on {settings.http_host}:{settings.http_port} "
            f"(GUARD_HTTP_HOST, GUARD_HTTP_PORT): {error.strerror or error}"
        ) from None


async def serve_probes(server: HealthServer, settings: GuardSettings) -> None:
    """First of all, so that probes answer while Kafka is still being reached."""
    with listening(settings):
        await server.start()


def log_configuration(settings: Settings, rules: RuleSet, http_port: int, kinds: Kinds) -> None:
    """One line with the effective configuration, for whoever reads the logs first (no secrets:
    the key and password are not in it, and every line passes the redaction point). It names the
    engine, and why it is the Python one when GUARD_ENGINE=auto found no compiled core."""
    kafka, guard = settings.kafka, settings.guard
    fallback = guard.engine == "auto" and kinds.name == "python"
    log.info(
        "guard starting",
        brokers=kafka.bootstrap_servers,
        security_protocol=kafka.security_protocol,
        topics=list(guard.input_topics),
        **({"topic_workspaces": guard.topic_workspaces} if guard.topic_workspaces else {}),
        group=guard.group_id,
        audit_topic=guard.audit_topic,
        dlq_topic=guard.dlq_topic,
        rules={rule.name: rule.version for rule in rules.rules},
        rules_path=str(guard.rules),
        dry_run=guard.dry_run,
        engine=kinds.name,
        **({"engine_reason": engine_fallback()} if fallback else {}),
        leadterra=settings.leadterra.api_url,
        http=f"{guard.http_host}:{http_port}",
    )


def engine_fallback() -> str:
    """Why GUARD_ENGINE=auto runs the Python engine, and what builds the compiled one."""
    return f"{why_not_compiled()}: the Python engine runs; a Rust compiler builds it (pip install ./core, or make)"


async def reach_kafka(kafka: KafkaSettings, limit: float, health: Health, stop: asyncio.Event) -> bool:
    """Start-up waits for Kafka (a broker starting alongside the guard, DNS not there yet): one
    line per attempt, backing off, until `limit` seconds (GUARD_KAFKA_CONNECT_TIMEOUT). False if
    stopped meanwhile."""
    servers = kafka.bootstrap_servers
    health.connecting = True

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()

    def retrying(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        health.kafka_error = str(error)
        log.warning(
            "Kafka not reachable; retrying",
            servers=servers,
            error=str(error),
            attempt=state.attempt_number,
            retry_in=round(state.upcoming_sleep, 1),
        )

    try:
        async for attempt in AsyncRetrying(
            stop=stop_before_delay(limit) | (lambda _: stop.is_set()),
            wait=wait_exponential_jitter(multiplier=0.5, max=CONNECT_BACKOFF_MAX, jitter=0.5),
            retry=retry_if_exception_type(KafkaUnreachable),
            before_sleep=retrying,
            sleep=pause,
            reraise=True,
        ):
            with attempt:
                await reach(kafka, PROBE_SECONDS)
    except KafkaUnreachable as error:
        if stop.is_set():
            return False
        raise KafkaUnreachable(
            f"Kafka not reachable at {servers} within {limit:g} s (GUARD_KAFKA_CONNECT_TIMEOUT): {error}"
        ) from None
    if attempt.retry_state.attempt_number > 1:
        log.info("Kafka reachable", servers=servers)
    health.connecting, health.kafka_error = False, None
    health.polled()  # the stall clock starts now, not when connecting began
    return not stop.is_set()
