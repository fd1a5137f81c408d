"""`guard ingest`: Leadterra webhooks and feedback-loop reports over HTTP -> the guard's input topic.

Nothing is answered 2xx before the broker acknowledged the record (acks=all, idempotent
producer): a broker that does not answer within `produce_timeout` makes the answer 503, so the
sender retries. A signed body the guard cannot use goes, as it came, to the dead-letter topic
with the reason in headers and is answered 200 (retrying it would not help). A record that timed
out may still reach the topic later; the sender's retry then duplicates it, and the guard counts
an (event, messageId) pair once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from guard.errors import ConfigError
from guard.ingest.arf import UnusableReport, complaint_event
from guard.ingest.signature import SIGNATURE_HEADER, Verifier
from guard.ingest.webhook import UnusableWebhook, webhook_record
from guard.runtime.kafka import client_options
from guard.runtime.server import health_app
from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings, WebhookSettings

log = structlog.get_logger("guard.ingest")

WEBHOOK_PATH = "/v1/webhooks/leadterra"
ARF_PATH = "/v1/feedback/arf"
PROBE_SECONDS = 5.0  # how often a metadata request checks the brokers (readiness)
CONNECT_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class IngestConfig:
    kafka: KafkaSettings
    guard: GuardSettings
    ingest: IngestSettings
    webhook_secrets: tuple[bytes, ...]
    arf_tokens: tuple[bytes, ...] = ()

    @classmethod
    def from_env(cls) -> IngestConfig:
        """Read the environment; raises ConfigError naming every wrong variable."""
        problems, groups = [], {}
        for name, group, prefix in (
            ("kafka", KafkaSettings, "KAFKA_"),
            ("guard", GuardSettings, "GUARD_"),
            ("ingest", IngestSettings, "GUARD_INGEST_"),
            ("webhook", WebhookSettings, "LEADTERRA_WEBHOOK_"),
        ):
            try:
                groups[name] = group()
            except ValidationError as error:
                for detail in error.errors():
                    loc = "_".join(str(part) for part in detail["loc"]).upper()
                    variable = loc if loc.startswith("GUARD_") else prefix + loc  # aliased fields are named in full
                    message = detail["msg"].removeprefix("Value error, ")
                    problems.append(f"{variable}: {message}" if loc else message)  # a check of several names them
        secrets: tuple[bytes, ...] = ()
        tokens: tuple[bytes, ...] = ()
        try:
            if "webhook" in groups:
                secrets = groups.pop("webhook").secrets()
            if "ingest" in groups:
                tokens = groups["ingest"].arf_tokens()
        except ConfigError as error:
            problems.append(str(error))
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
        return cls(**groups, webhook_secrets=secrets, arf_tokens=tokens)

    def __repr__(self) -> str:  # never the secrets
        return f"<IngestConfig topic={self.guard.input_topics[0]} dlq={self.guard.dlq_topic}>"


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "guard_ingest_requests_total",
            "Requests by route (leadterra, arf) and outcome: produced, dead_lettered, unauthorized, "
            "unavailable (503), too_large (413), timeout (408).",
            ["route", "outcome"],
            registry=r,
        )
        self.produce_seconds = Histogram(
            "guard_ingest_produce_duration_seconds",
            "From a request's first byte read to the broker's acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )


class IngestHealth:
    """Live while the process serves; ready once connected to Kafka, while it answers, not stopping."""

    def __init__(self) -> None:
        self.connected = False
        self.kafka_error: str | None = None
        self.stopping = False

    def live(self) -> tuple[bool, str]:
        return True, "ok"

    def warnings(self) -> list[str]:
        return []

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping"
        if not self.connected:
            return False, "not connected to Kafka yet"
        if self.kafka_error is not None:
            return False, f"Kafka unreachable: {self.kafka_error}"
        return True, "ok"


class Ingest:
    """The HTTP routes, the producer, and their lifecycle. `run()` returns after `stop()` has drained."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.verifier = Verifier(config.webhook_secrets)
        self._arf_digests = tuple(hashlib.sha256(token).digest() for token in config.arf_tokens)
        self.metrics, self.health = IngestMetrics(), IngestHealth()
        self._producer: AIOKafkaProducer | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = config.guard.http_port

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.ingest.max_body_bytes)  # beyond it: 413
        health_app(self.health, self.metrics, app)  # type: ignore[arg-type]  # the same live/ready shape
        app.router.add_post(WEBHOOK_PATH, self._webhook)
        if self._arf_digests:
            app.router.add_post(ARF_PATH, self._arf)
        return app

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        settings = self.config.ingest
        # handlers are not cancelled when a client goes away: a record being produced is finished
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=settings.produce_timeout + 1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.guard.http_host, self.config.guard.http_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        probe = asyncio.create_task(self._connect_and_probe())
        log.info("ingest started", http_port=self.port, topic=self.config.guard.input_topics[0])
        try:
            await self._stop.wait()
        finally:
            self.health.stopping = True
            await self._runner.cleanup()  # in-flight requests finish first
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            if self._producer is not None:
                await self._producer.stop()
            log.info("ingest stopped")

    async def _connect_and_probe(self) -> None:
        """Connect (retrying while the brokers are away), then check them every few seconds."""
        kafka, timeout_ms = self.config.kafka, int(self.config.ingest.produce_timeout * 1000)
        while self._producer is None:
            producer = AIOKafkaProducer(
                acks="all",
                enable_idempotence=kafka.enable_idempotence,
                linger_ms=0,  # concurrent requests batch by themselves while one is in flight
                request_timeout_ms=timeout_ms,  # a record not acknowledged by then fails: 503, not 2xx
                **client_options(kafka),
            )
            try:
                await producer.start()
                self._producer = producer
                self.health.connected = True
            except (KafkaError, OSError) as error:
                await producer.stop()
                self._unreachable(error)
                await asyncio.sleep(CONNECT_RETRY_SECONDS)
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), PROBE_SECONDS)
                self._reachable()
            except (KafkaError, OSError, TimeoutError) as error:
                self._unreachable(error)

    def _reachable(self) -> None:
        if self.health.kafka_error is not None:
            log.info("Kafka reachable again")
        self.health.kafka_error = None

    def _unreachable(self, error: BaseException) -> None:
        if self.health.kafka_error is None:
            log.warning("Kafka unreachable", error=repr(error))
        self.health.kafka_error = repr(error) or "no answer"

    async def _webhook(self, request: web.Request) -> web.Response:
        async def handle(body: bytes) -> web.Response:
            if not self.verifier.verify(body, request.headers.get(SIGNATURE_HEADER)):
                return self._unauthorized("leadterra", f"missing or invalid {SIGNATURE_HEADER}")
            try:
                campaign_id, value = webhook_record(body, request.query.get("campaign"))
            except UnusableWebhook as error:
                return await self._dead_letter("leadterra", body, str(error))
            return await self._produce("leadterra", campaign_id, value)

        return await self._with_body(request, "leadterra", handle)

    async def _arf(self, request: web.Request) -> web.Response:
        async def handle(body: bytes) -> web.Response:
            if not self._bearer_ok(request.headers.get("Authorization", "")):
                return self._unauthorized("arf", "missing or invalid bearer token")
            try:
                event = complaint_event(body, self.config.ingest.arf_campaign_header)
            except UnusableReport as error:
                return await self._dead_letter("arf", body, str(error))
            return await self._produce("arf", event["data"]["campaignId"], msgspec.json.encode(event))

        return await self._with_body(request, "arf", handle)

    def _bearer_ok(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = hashlib.sha256(token.strip().encode()).digest()  # equal lengths: the time says nothing
        matched = False
        for digest in self._arf_digests:
            matched |= hmac.compare_digest(digest, given)
        return matched

    async def _with_body(
        self, request: web.Request, route: str, handle: Callable[[bytes], Awaitable[web.Response]]
    ) -> web.Response:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.ingest.read_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.requests.labels(route, "too_large").inc()
            return _answer(413, error=f"body larger than {self.config.ingest.max_body_bytes} bytes")
        except TimeoutError:
            self.metrics.requests.labels(route, "timeout").inc()
            return _answer(408, error="request body not received in time")
        response = await handle(body)
        if response.status < 300:
            self.metrics.produce_seconds.observe(time.perf_counter() - started)
        return response

    def _unauthorized(self, route: str, reason: str) -> web.Response:
        self.metrics.requests.labels(route, "unauthorized").inc()
        return _answer(401, error=reason)

    async def _produce(self, route: str, campaign_id: str, value: bytes) -> web.Response:
        topic = self.config.guard.input_topics[0]
        if not await self._send(topic, value, campaign_id.encode(), []):
            self.metrics.requests.labels(route, "unavailable").inc()
            return _answer(503, error="Kafka unavailable; retry later")
        self.metrics.requests.labels(route, "produced").inc()
        return _answer(200, status="accepted")

    async def _dead_letter(self, route: str, body: bytes, reason: str) -> web.Response:
        headers = [
            ("guard.error", reason.encode()),
            ("guard.source", f"ingest {WEBHOOK_PATH if route == 'leadterra' else ARF_PATH}".encode()),
            ("guard.source.timestamp", str(int(time.time() * 1000)).encode()),
        ]
        if not await self._send(self.config.guard.dlq_topic, body, None, headers):
            self.metrics.requests.labels(route, "unavailable").inc()
            return _answer(503, error="Kafka unavailable; retry later")
        self.metrics.requests.labels(route, "dead_lettered").inc()
        log.warning("request dead-lettered", route=route, reason=reason)
        return _answer(200, status="dead_lettered", reason=reason)

    async def _send(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> bool:
        """True once the broker acknowledged the record; False when it did not in time."""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(self.config.ingest.produce_timeout):
                await producer.send_and_wait(topic, value=value, key=key, headers=headers)
        except (KafkaError, OSError, TimeoutError) as error:
            self._unreachable(error)
            return False
        self._reachable()
        return True


def _answer(code: int, **body: str) -> web.Response:
    return web.json_response(body, status=code)


async def run_until_signalled(ingest: Ingest) -> None:
    """Run until SIGTERM or SIGINT, then drain: in-flight requests are answered, the producer flushed."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingest.stop)
    try:
        await ingest.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
