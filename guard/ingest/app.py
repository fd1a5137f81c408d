"""`guard ingest`: Leadterra webhooks and feedback-loop reports over HTTP -> the guard's input topic.

Nothing is answered 2xx before the broker acknowledged the record (acks=all, idempotent
producer): a broker that does not answer within `produce_timeout` makes the answer 503, so the
sender retries; only such a broker makes `/readyz` say so. A body larger than a record of the topic
holds is 413, like one over the body limit (limits.py). A signed body the guard cannot use goes, as
it came (cut when too large), to the dead-letter topic with the reason in headers and is answered
200 (retrying it would not help). A record that timed out may still reach the topic later; the
sender's retry then duplicates it, and the guard counts an (event, messageId) pair once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from guard.contracts.events import IgnoredEvent, MalformedEvent, decode
from guard.errors import ConfigError
from guard.ingest.arf import UnusableReport, complaint_event
from guard.ingest.door import ConnectionCap, ParserErrors
from guard.ingest.health import IngestHealth, IngestMetrics
from guard.ingest.limits import door_limit, producer_request_size, topic_message_limit
from guard.ingest.secrets import WebhookSecrets
from guard.ingest.signature import SIGNATURE_HEADER
from guard.ingest.webhook import UnusableWebhook, webhook_record
from guard.runtime.dead_letters import MAX_REASON_CHARS, DeadLetters, Letter
from guard.runtime.kafka import client_options, start_producer
from guard.runtime.server import health_app
from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings, WebhookSettings
from guard.runtime.settings.env import invalid, read_each
from guard.runtime.startup import listening

log = structlog.get_logger("guard.ingest")

WEBHOOK_PATH = "/v1/webhooks/leadterra"
ARF_PATH = "/v1/feedback/arf"
PROBE_SECONDS = 5.0  # how often a metadata request checks the brokers (readiness)
CONNECT_RETRY_SECONDS = 1.0
LINGER_SECONDS = 1.0  # an unread body (401 before reading it) is discarded this long, then the connection closed
# connections the kernel completes before the process accepts them (capped by net.core.somaxconn): at
# asyncio's 100, a burst of new connections overflowed it and a signed webhook's SYN waited 1 s to be resent
ACCEPT_BACKLOG = 1024
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)  # the record, not the broker: 413


@dataclass(frozen=True)
class IngestConfig:
    kafka: KafkaSettings
    guard: GuardSettings
    ingest: IngestSettings
    webhook_secrets: tuple[bytes, ...]
    arf_tokens: tuple[bytes, ...] = ()
    campaign_secrets: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)  # campaign -> its own secrets
    # where those secrets were read from at start-up: read again while running (a rotated mounted Secret)
    webhook_secret_file: Path | None = None
    campaign_secrets_file: Path | None = None

    @classmethod
    def from_env(cls) -> IngestConfig:
        """Read the environment; raises ConfigError naming every wrong variable."""
        groups, problems = read_each(
            {"kafka": KafkaSettings, "guard": GuardSettings, "ingest": IngestSettings, "webhook": WebhookSettings}
        )
        secrets: tuple[bytes, ...] = ()
        tokens: tuple[bytes, ...] = ()
        campaign_secrets: dict[str, tuple[bytes, ...]] = {}
        files: dict[str, Path | None] = {}
        try:
            if "webhook" in groups:
                webhook = groups.pop("webhook")
                secrets, campaign_secrets = webhook.secrets(), webhook.campaign_secrets()
                files = {
                    "webhook_secret_file": webhook.secret_file,
                    "campaign_secrets_file": webhook.campaign_secrets_file,
                }
            if "ingest" in groups:
                tokens = groups["ingest"].arf_tokens()
        except ConfigError as error:
            problems.append(str(error))
        if problems:
            raise invalid(problems)
        return cls(**groups, webhook_secrets=secrets, arf_tokens=tokens, campaign_secrets=campaign_secrets, **files)

    def __repr__(self) -> str:  # never the secrets
        return f"<IngestConfig topic={self.guard.input_topics[0]} dlq={self.guard.dlq_topic}>"


class Ingest:
    """The HTTP routes, the producer, and their lifecycle. `run()` returns after `stop()` has drained:
    in-flight requests answered, the producer flushed."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self._arf_digests = tuple(hashlib.sha256(token).digest() for token in config.arf_tokens)
        self.metrics, self.health = IngestMetrics(), IngestHealth()
        self.secrets = WebhookSecrets(
            config.webhook_secrets,
            config.campaign_secrets,
            secret_file=config.webhook_secret_file,
            campaign_secrets_file=config.campaign_secrets_file,
            reloads=self.metrics.secret_reloads,
        )
        self._producer: AIOKafkaProducer | None = None
        self._dead_letters: DeadLetters | None = None
        self.body_limit = config.ingest.max_body_bytes  # lowered at start-up to what a record of the topic holds
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._door: ConnectionCap | None = None
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
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            shutdown_timeout=settings.produce_timeout + 1,
            keepalive_timeout=settings.idle_timeout,  # from the connection's start: slow headers too
            max_line_size=settings.max_header_bytes,
            max_field_size=settings.max_header_bytes,
            max_headers=settings.max_headers,
            lingering_time=LINGER_SECONDS,
            logger=ParserErrors(self.metrics.bad_requests),
        )
        await self._runner.setup()
        assert self._runner.server is not None
        metrics = self.metrics
        self._door = accept = ConnectionCap(
            self._runner.server, settings.max_connections, metrics.connections_refused, metrics.connections_evicted
        )
        guard = self.config.guard
        try:
            with listening(guard, f"{WEBHOOK_PATH}, /livez, /readyz and /metrics"):
                self._listener = await asyncio.get_running_loop().create_server(
                    accept, guard.http_host, guard.http_port, backlog=ACCEPT_BACKLOG
                )
        except ConfigError:
            await self._runner.cleanup()
            raise
        self.port = self._listener.sockets[0].getsockname()[1]
        background = [asyncio.create_task(self._connect_and_probe())]
        if self.secrets.from_files:
            background.append(asyncio.create_task(self.secrets.watch()))
        log.info("ingest started", http_port=self.port, topic=self.config.guard.input_topics[0])
        try:
            await self._stop.wait()
        finally:
            self.health.stopping = True
            self._listener.close()  # no new connections
            await self._runner.cleanup()  # in-flight requests finish first
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
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
                max_request_size=producer_request_size(self.config.ingest.max_body_bytes),
                **client_options(kafka),
            )
            try:
                await start_producer(producer, kafka)
                await self._check_topic_limit()
            except ConfigError as error:  # the brokers refuse the idempotent producer: said as guard run says it
                self._refused(error)
                await asyncio.sleep(CONNECT_RETRY_SECONDS)
                continue
            except (KafkaError, OSError) as error:
                await producer.stop()
                self._unreachable(error)
                await asyncio.sleep(CONNECT_RETRY_SECONDS)
                continue
            self._producer = producer
            self._dead_letters = DeadLetters(producer, self.config.guard.dlq_topic, self.metrics)
            self.health.connected = True
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                async with asyncio.timeout(PROBE_SECONDS):
                    await self._producer.client.fetch_all_metadata()
                self._reachable()
            except (KafkaError, OSError, TimeoutError) as error:
                self._unreachable(error)

    async def _check_topic_limit(self) -> None:
        """Lower the door's limit to what one record of the input topic holds, saying so once."""
        topic, max_body = self.config.guard.input_topics[0], self.config.ingest.max_body_bytes
        try:
            topic_limit = await topic_message_limit(self.config.kafka, topic)
        except Exception as error:  # not allowed to describe it, say: a side check never keeps the door shut
            log.info("the topic's max.message.bytes is not known", topic=topic, error=repr(error))
            return
        self.body_limit = door_limit(max_body, topic_limit)
        if self.body_limit < max_body:
            log.warning(
                "the input topic takes smaller records than GUARD_INGEST_MAX_BODY_BYTES: larger bodies are "
                "refused with 413 (raise its max.message.bytes or lower GUARD_INGEST_MAX_BODY_BYTES)",
                topic=topic,
                max_message_bytes=topic_limit,
                max_body_bytes=max_body,
                body_limit=self.body_limit,
            )

    def _reachable(self) -> None:
        if self.health.kafka_error is not None:
            log.info("Kafka reachable again")
        self.health.kafka_error = None

    def _refused(self, error: ConfigError) -> None:
        if self.health.kafka_error != str(error):
            log.error("Kafka refuses the producer", error=str(error))
        self.health.kafka_error = str(error)

    def _unreachable(self, error: BaseException) -> None:
        if self.health.kafka_error is None:
            log.warning("Kafka unreachable", error=repr(error))
        self.health.kafka_error = repr(error) or "no answer"

    async def _webhook(self, request: web.Request) -> web.Response:
        # a header that spells no MAC, or a URL no secret can sign for, is refused before the body is read
        url_campaign = (request.query.get("campaign") or "").strip() or None  # unsigned: picks a secret, no more
        verifier = self.secrets.verifier  # the secrets in force when the request came, for all of its checks
        claimed = verifier.claimed(request.headers.get(SIGNATURE_HEADER))
        if claimed is None or not verifier.can_verify(url_campaign):
            return self._before_body(request, self._unauthorized("leadterra", f"missing or invalid {SIGNATURE_HEADER}"))

        async def handle(body: bytes) -> web.Response:
            if (signer := verifier.signer(body, claimed, url_campaign)) is None:
                return self._unauthorized("leadterra", f"missing or invalid {SIGNATURE_HEADER}")
            try:
                campaign_id, value = webhook_record(body, signer.campaign)
            except UnusableWebhook as error:
                return await self._dead_letter("leadterra", body, str(error))
            if (reason := _unreadable(value)) is not None:
                return await self._dead_letter("leadterra", body, reason)
            return await self._produce("leadterra", campaign_id, value)

        return await self._with_body(request, "leadterra", handle)

    async def _arf(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request.headers.get("Authorization", "")):  # before reading the body
            return self._before_body(request, self._unauthorized("arf", "missing or invalid bearer token"))

        async def handle(body: bytes) -> web.Response:
            try:
                # off the event loop: a signed webhook is not kept waiting while a report is parsed
                header = self.config.ingest.arf_campaign_header
                event = await asyncio.to_thread(complaint_event, body, header, time.time())
            except UnusableReport as error:
                return await self._dead_letter("arf", body, str(error))
            value = msgspec.json.encode(event)
            if (reason := _unreadable(value)) is not None:
                return await self._dead_letter("arf", body, reason)
            return await self._produce("arf", event["data"]["campaignId"], value)

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
                with self._door.reading_body(request.protocol) if self._door else contextlib.nullcontext():
                    body = await _read_body(request, self.body_limit)
        except web.HTTPRequestEntityTooLarge:
            return self._before_body(request, self._too_large(route))
        except TimeoutError:
            self.metrics.requests.labels(route, "timeout").inc()
            return self._before_body(request, _answer(408, error="request body not received in time"))
        except (ConnectionError, RuntimeError) as error:
            if isinstance(error, RuntimeError) and request.transport is not None:
                raise  # not aiohttp's "Connection closed." of a connection closed to make room
            # the client went away mid-body, or its connection was closed to make room: nobody to answer
            self.metrics.requests.labels(route, "disconnected").inc()
            return _answer(400, error="connection lost before the body was received")
        response = await handle(body)
        if response.status < 300:
            self.metrics.produce_seconds.observe(time.perf_counter() - started)
        return response

    def _before_body(self, request: web.Request, response: web.Response) -> web.Response:
        """`response`, given before the whole body was in: the rest is discarded for LINGER_SECONDS (so
        that the client reads the answer), then the connection closed; meanwhile it may make room."""
        if not request.content.at_eof():
            response.force_close()
            if self._door is not None:
                self._door.answered_early(request.protocol)
        return response

    def _too_large(self, route: str) -> web.Response:
        self.metrics.requests.labels(route, "too_large").inc()
        return _answer(413, error=f"body larger than {self.body_limit} bytes")

    def _unavailable(self, route: str) -> web.Response:
        self.metrics.requests.labels(route, "unavailable").inc()
        return _answer(503, error="Kafka unavailable; retry later")

    def _unauthorized(self, route: str, reason: str) -> web.Response:
        self.metrics.requests.labels(route, "unauthorized").inc()
        return _answer(401, error=reason)

    async def _produce(self, route: str, campaign_id: str, value: bytes) -> web.Response:
        sent = await self._send(self.config.guard.input_topics[0], value, campaign_id.encode())
        if sent == "too_large":
            return self._too_large(route)
        if sent != "acknowledged":
            return self._unavailable(route)
        self.metrics.requests.labels(route, "produced").inc()
        return _answer(200, status="accepted")

    async def _dead_letter(self, route: str, body: bytes, reason: str) -> web.Response:
        """As it came, or cut when too large (DeadLetters); 503 only when not written in time."""
        reason = reason[:MAX_REASON_CHARS]
        if self._dead_letters is None:
            return self._unavailable(route)
        source = f"ingest {WEBHOOK_PATH if route == 'leadterra' else ARF_PATH}"
        letter = Letter(body, None, (), source, int(time.time() * 1000))
        written = await self._dead_letters.send_letter(letter, reason)
        # not cancelled when late: a dead letter that still lands is harmless beside the sender's retry
        await asyncio.wait([written], timeout=self.config.ingest.produce_timeout)
        if not written.done() or written.result() == "failed":
            return self._unavailable(route)
        self.metrics.requests.labels(route, "dead_lettered").inc()
        log.warning("request dead-lettered", route=route, reason=reason)
        return _answer(200, status="dead_lettered", reason=reason)

    async def _send(self, topic: str, value: bytes, key: bytes) -> str:
        """ "acknowledged" once the broker has the record; "too_large" when the producer or the broker
        refuses its size (the brokers are fine); "unavailable" when there was no answer in time."""
        producer = self._producer
        if producer is None:
            return "unavailable"
        try:
            async with asyncio.timeout(self.config.ingest.produce_timeout):
                await producer.send_and_wait(topic, value=value, key=key)
        except TOO_LARGE as error:
            log.warning("record refused as too large", topic=topic, size=len(value), error=repr(error))
            return "too_large"
        except (KafkaError, OSError, TimeoutError) as error:
            self._unreachable(error)
            return "unavailable"
        self._reachable()
        return "acknowledged"


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit`: by its Content-Length
    before a byte is read, else once the bytes read pass it."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def _unreadable(value: bytes) -> str | None:
    """Why `guard run` would dead-letter this record, read by its own decoder with now as the record's time (the
    producer stamps it so), or None: `accepted` means the event counts, so a body it would not count is answered
    `dead_lettered` with the decoder's reason. An event the guard does not count (`ignored`) is accepted."""
    try:
        decode(value, time.time())
    except MalformedEvent as error:
        return str(error)
    except IgnoredEvent:
        pass
    return None


def _answer(code: int, **body: str) -> web.Response:
    return web.json_response(body, status=code)
