"""The guard's Kafka clients speak TLS (and mutual TLS) with a private CA, as in production.

Tansu 0.6.0 cannot terminate TLS itself (see the guard.testing.broker docstring), so a small
asyncio proxy terminates TLS on 127.0.0.1 and forwards the plaintext bytes to a dedicated Tansu
that advertises the proxy's port: clients reach the broker, after bootstrap too, only over TLS.
Certificates come from throwaway trustme CAs; clients are built by guard.runtime.kafka from settings.

These tests run once, on their own Tansu, not per broker of the matrix: what they check is the
guard's client side of TLS, which the proxy serves the same whatever broker sits behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from guard.runtime.kafka import client_options, make_consumer, make_producer
from guard.runtime.settings import KafkaSettings
from guard.testing.broker import EmbeddedBroker


@dataclass
class Tls:
    """A dedicated Tansu behind a reserved proxy port, and the PKI of a throwaway CA."""

    broker: EmbeddedBroker
    listener: socket.socket  # the proxy's listening socket, reserved for the whole module
    ca: trustme.CA
    server: trustme.LeafCert
    cafile: Path
    client_certfile: Path
    client_keyfile: Path
    other_cafile: Path  # a CA that signed nothing here

    @property
    def bootstrap_servers(self) -> str:
        host, port = self.listener.getsockname()
        return f"{host}:{port}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    tmp = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    client = ca.issue_cert("guard@example.test", common_name="deliverability-guard")
    ca.cert_pem.write_to_path(tmp / "ca.pem")
    other.cert_pem.write_to_path(tmp / "other-ca.pem")
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(tmp / "client.pem", append=i > 0)
    client.private_key_pem.write_to_path(tmp / "client.key")
    # Bound before tansu starts, so its advertised port cannot be taken by anyone else meanwhile.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with EmbeddedBroker(advertised_port=listener.getsockname()[1]) as broker:
            yield Tls(
                broker,
                listener,
                ca,
                ca.issue_cert("127.0.0.1"),
                tmp / "ca.pem",
                tmp / "client.pem",
                tmp / "client.key",
                tmp / "other-ca.pem",
            )


class TlsProxy:
    """Terminates TLS on the reserved listener and pipes plaintext to tansu, both ways.

    :attr:`accepted` counts connections whose TLS handshake succeeded.
    """

    def __init__(self, tls: Tls, server_ctx: ssl.SSLContext) -> None:
        self._tls, self._ctx, self.accepted = tls, server_ctx, 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TlsProxy:  # dup(): closing the server leaves the port reserved
        self._server = await asyncio.start_server(self._handle, sock=self._tls.listener.dup(), ssl=self._ctx)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self._writers.add(client_w)
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self._tls.broker.port)
        except OSError:
            client_w.close()
            return
        self._writers.add(upstream_w)
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))

    @staticmethod
    def context(tls: Tls, *, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.server.configure_cert(ctx)
        if require_client_cert:
            tls.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _settings(tls: Tls, **overrides: object) -> KafkaSettings:
    options: dict[str, object] = dict(
        bootstrap_servers=tls.bootstrap_servers,
        security_protocol="SSL",
        ssl_cafile=tls.cafile,
        enable_idempotence=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=200,
    )
    return KafkaSettings(**{**options, **overrides})  # type: ignore[arg-type]


async def _round_trip(settings: KafkaSettings) -> None:
    """Produce one record with make_producer and read it back with make_consumer in a fresh group."""
    topic, value = f"tls-{uuid.uuid4().hex}", uuid.uuid4().bytes
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(settings, group_id=str(uuid.uuid4()))
    consumer.subscribe([topic])
    await consumer.start()
    try:
        async with asyncio.timeout(15):
            record = await consumer.getone()
        assert (record.key, record.value) == (b"k", value)
    finally:
        await consumer.stop()


async def _refused(settings: KafkaSettings) -> float:
    """Start a producer that must fail to connect; return how long the failure took."""
    producer = make_producer(settings)
    began = time.monotonic()
    try:
        with pytest.raises(KafkaConnectionError):
            async with asyncio.timeout(5):
                await producer.start()
    finally:
        await producer.stop()
    return time.monotonic() - began


@contextlib.asynccontextmanager
async def _proxy(tls: Tls, *, require_client_cert: bool = False) -> AsyncIterator[TlsProxy]:
    async with TlsProxy(tls, TlsProxy.context(tls, require_client_cert=require_client_cert)) as proxy:
        yield proxy


async def test_guard_clients_round_trip_a_record_over_tls_with_a_private_ca(tls: Tls) -> None:
    """make_producer/make_consumer with security_protocol=SSL and the CA file produce and consume
    through the TLS proxy; every broker connection (bootstrap and advertised) went through it."""
    async with _proxy(tls) as proxy:
        await _round_trip(_settings(tls))
    # producer: bootstrap + broker; consumer: bootstrap + broker + coordinator (at least 4 in all)
    assert proxy.accepted >= 4


async def test_mutual_tls_round_trips_with_a_client_certificate_and_refuses_clients_without(tls: Tls) -> None:
    """When the broker requires client certificates, the CA-issued cert and key from settings
    get the round trip through; a client without them fails to connect, quickly."""
    async with _proxy(tls, require_client_cert=True) as proxy:
        await _round_trip(_settings(tls, ssl_certfile=tls.client_certfile, ssl_keyfile=tls.client_keyfile))
        assert proxy.accepted >= 4
        accepted = proxy.accepted
        assert await _refused(_settings(tls)) < 5
        assert proxy.accepted == accepted  # no handshake without a certificate completed


async def test_a_client_trusting_another_ca_cannot_connect(tls: Tls) -> None:
    """A client whose CA file did not sign the broker's certificate refuses the broker."""
    async with _proxy(tls) as proxy:
        assert await _refused(_settings(tls, ssl_cafile=tls.other_cafile)) < 5
    assert proxy.accepted == 0


def test_client_options_for_sasl_ssl_carry_credentials_and_an_ssl_context(tls: Tls) -> None:
    """SASL_SSL settings give aiokafka the mechanism, the username, the password as a plain str,
    and an SSL context that verifies the broker."""
    options = client_options(
        KafkaSettings(
            bootstrap_servers="broker:9093",
            security_protocol="SASL_SSL",
            ssl_cafile=tls.cafile,
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="guard",
            sasl_password="s3cret",  # type: ignore[arg-type]
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "guard"
    assert options["sasl_plain_password"] == "s3cret" and type(options["sasl_plain_password"]) is str
    ctx = options["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_sasl_ssl_without_credentials_is_a_validation_error_naming_the_mechanism_variable() -> None:
    """SASL_SSL without mechanism, username and password is refused at settings time."""
    with pytest.raises(ValidationError, match="KAFKA_SASL_MECHANISM"):
        KafkaSettings(security_protocol="SASL_SSL")
