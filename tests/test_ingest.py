"""`guard ingest` over real HTTP on 127.0.0.1 and a real broker: nothing 2xx that is not in the topic."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from guard.contracts.events import Signal, decode
from guard.ingest.app import ARF_PATH, WEBHOOK_PATH, Ingest, IngestConfig
from guard.ingest.signature import SIGNATURE_HEADER, sign
from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings
from guard.testing.broker import BrokerInfo, EmbeddedBroker, free_port

ARF = Path(__file__).parent / "arf"
SECRET, OLD_SECRET, ARF_TOKEN = b"whsec_new", b"whsec_old", b"arf-token-1"
CAMPAIGN_SECRETS = {"camp_own": (b"whsec_own",)}  # camp_own's webhook (?campaign=camp_own) has its own secret


class Topics:
    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.input, self.dlq = f"events-{suffix}", f"dlq-{suffix}"


async def create_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=2, replication_factor=1) for t in (topics.input, topics.dlq)]
        )
    finally:
        await admin.close()


async def read_all(bootstrap: str, topic: str, until: Callable[[list[ConsumerRecord]], bool], timeout: float = 10.0):
    """Every record of `topic` from the beginning, read until `until(records)` or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(records) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


@asynccontextmanager
async def running_ingest(broker: BrokerInfo, topics: Topics, **ingest: object) -> AsyncIterator[Ingest]:
    config = IngestConfig(
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=broker.idempotence),
        guard=GuardSettings(input_topics=(topics.input,), dlq_topic=topics.dlq, http_host="127.0.0.1", http_port=0),
        ingest=IngestSettings(**ingest),
        webhook_secrets=(OLD_SECRET, SECRET),
        arf_tokens=(ARF_TOKEN,),
        campaign_secrets=CAMPAIGN_SECRETS,
    )
    async with serving(config) as service:
        yield service


@asynccontextmanager
async def serving(config: IngestConfig) -> AsyncIterator[Ingest]:
    """`guard ingest` with `config`, once ready; stopped and drained on leaving."""
    service = Ingest(config)
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + 10
    while not service.health.ready()[0]:
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, service.health.ready()
        await asyncio.sleep(0.02)
    try:
        yield service
    finally:
        service.stop()
        await task


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    names = Topics()
    await create_topics(kafka_bootstrap, names)
    return names


@pytest.fixture
async def ingest(kafka_broker: BrokerInfo, topics: Topics) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(kafka_broker, topics) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=15) as client:
            yield client


def webhook(campaign_id: str | None = "camp_1", message_id: str | None = None, event: str = "message.sent") -> bytes:
    data = {"messageId": message_id or uuid.uuid4().hex}
    if campaign_id is not None:
        data["campaignId"] = campaign_id
    return json.dumps({"event": event, "timestamp": "2026-01-01T00:00:00Z", "data": data}).encode()


def signed(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, body), "Content-Type": "application/json"}


def message_ids(records: list[ConsumerRecord]) -> list[str]:
    return [json.loads(record.value)["data"]["messageId"] for record in records]


async def test_a_signed_webhook_is_in_the_topic_when_answered(ingest, topics, kafka_bootstrap) -> None:
    """200 means the record is there: keyed by campaign, the body byte for byte."""
    body = webhook("camp_ok", "m-ok")
    answer = await ingest.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    records = await read_all(kafka_bootstrap, topics.input, lambda r: len(r) >= 1)
    assert [(r.key, r.value) for r in records] == [(b"camp_ok", body)]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({SIGNATURE_HEADER: "sha256=" + "0" * 64}, id="wrong"),
        pytest.param({SIGNATURE_HEADER: sign(b"whsec_forged", b"x")}, id="other-secret"),
    ],
)
async def test_an_unsigned_or_forged_webhook_is_401_and_not_produced(ingest, topics, kafka_bootstrap, headers) -> None:
    """The forged one is refused; a signed one sent after it (same partition) is the only record."""
    forged = webhook("camp_f", "m-forged")
    answer = await ingest.post(WEBHOOK_PATH, content=forged, headers=headers)
    assert answer.status_code == 401
    assert "whsec" not in answer.text
    good = webhook("camp_f", "m-good")
    assert (await ingest.post(WEBHOOK_PATH, content=good, headers=signed(good))).status_code == 200
    records = await read_all(kafka_bootstrap, topics.input, lambda r: "m-good" in message_ids(r))
    assert message_ids(records) == ["m-good"]
    dead = await read_all(kafka_bootstrap, topics.dlq, lambda r: False, timeout=0.5)
    assert dead == []


async def test_both_secrets_of_a_rotation_are_accepted(ingest, topics, kafka_bootstrap) -> None:
    """LEADTERRA_WEBHOOK_SECRET=old,new: deliveries signed with either are produced."""
    old, new = webhook("camp_r", "m-old"), webhook("camp_r", "m-new")
    assert (await ingest.post(WEBHOOK_PATH, content=old, headers=signed(old, OLD_SECRET))).status_code == 200
    assert (await ingest.post(WEBHOOK_PATH, content=new, headers=signed(new, SECRET))).status_code == 200
    records = await read_all(kafka_bootstrap, topics.input, lambda r: len(r) >= 2)
    assert sorted(message_ids(records)) == ["m-new", "m-old"]


async def test_the_campaign_comes_from_the_reply_or_the_campaign_secret(ingest, topics, kafka_bootstrap) -> None:
    """Without data.campaignId: data.reply.campaignId, else the campaign whose own secret signed the body
    at its URL (?campaign=camp_own); written into data.campaignId."""
    reply = json.dumps({"event": "reply.received", "data": {"reply": {"id": "r1", "campaignId": "camp_x"}}}).encode()
    bounce = webhook(None, "m-b", "message.bounced")
    assert (await ingest.post(WEBHOOK_PATH, content=reply, headers=signed(reply))).status_code == 200
    url = f"{WEBHOOK_PATH}?campaign=camp_own"
    assert (await ingest.post(url, content=bounce, headers=signed(bounce, b"whsec_own"))).status_code == 200
    records = await read_all(kafka_bootstrap, topics.input, lambda r: len(r) >= 2)
    got = {record.key: json.loads(record.value)["data"]["campaignId"] for record in records}
    assert got == {b"camp_x": "camp_x", b"camp_own": "camp_own"}


async def test_a_signed_body_cannot_be_pinned_on_a_campaign_by_the_url(ingest, topics, kafka_bootstrap) -> None:
    """The URL is not signed: a body naming no campaign, signed with the account secret, posted with
    ?campaign=camp_a and ?campaign=camp_b, lands under neither (dead-lettered, the reason says why); camp_own's
    secret signs only at camp_own's URL, and only for camp_own."""
    body = webhook(None, "m-pinned", "message.bounced")
    for campaign in ("camp_a", "camp_b"):
        answer = await ingest.post(f"{WEBHOOK_PATH}?campaign={campaign}", content=body, headers=signed(body))
        assert answer.status_code == 200 and answer.json()["status"] == "dead_lettered", answer.text
        assert "?campaign= is not signed" in answer.json()["reason"]
    own = signed(body, b"whsec_own")
    for url in (f"{WEBHOOK_PATH}?campaign=camp_a", WEBHOOK_PATH):  # camp_own's secret elsewhere: not a signature
        assert (await ingest.post(url, content=body, headers=own)).status_code == 401
    other = webhook("camp_b", "m-other")  # camp_own's secret naming another campaign in the body
    answer = await ingest.post(f"{WEBHOOK_PATH}?campaign=camp_own", content=other, headers=signed(other, b"whsec_own"))
    assert answer.json()["status"] == "dead_lettered" and "speaks for that campaign only" in answer.json()["reason"]
    assert (await ingest.post(f"{WEBHOOK_PATH}?campaign=camp_own", content=body, headers=own)).status_code == 200
    dead = await read_all(kafka_bootstrap, topics.dlq, lambda r: len(r) >= 3)
    assert sorted(r.value for r in dead) == sorted([body, body, other])
    records = await read_all(kafka_bootstrap, topics.input, lambda r: False, timeout=1.0)  # all there is
    assert [(r.key, json.loads(r.value)["data"]["campaignId"]) for r in records] == [(b"camp_own", "camp_own")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"{not json", "not JSON", id="not-json"),
        pytest.param(webhook(None, "m-nc"), "no campaign id", id="no-campaign"),
        pytest.param(b'{"hello": "world"}', "no event name", id="unknown-shape"),
        pytest.param(
            b'{"event": "message.sent", "data": {"campaignId": 12345, "messageId": "m"}}',
            "data.campaignId is a number",
            id="numeric-campaign",
        ),
        # signed, with a campaign, and yet `guard run` would not count them: `accepted` would be a lie
        pytest.param(
            b'{"event": "message.sent", "data": {"campaignId": "camp_1", "messageId": 42}}',
            "messageId",
            id="numeric-message-id",
        ),
        pytest.param(
            b'{"event": "message.bounced", "data": {"campaignId": "camp_1", "messageId": "m", "bounceType": "Hard"}}',
            "bounceType",
            id="bounce-type-not-documented",
        ),
        pytest.param(
            b'{"event": "message.sent", "timestamp": "2999-01-01T00:00:00Z", "data": {"campaignId": "camp_1"}}',
            "ahead of the record's time",
            id="stamped-far-ahead",
        ),
    ],
)
async def test_a_signed_but_unusable_body_is_dead_lettered_as_it_came(
    ingest, topics, kafka_bootstrap, body, reason
) -> None:
    """2xx (a retry would not help), the original bytes in the dead-letter topic with the reason."""
    answer = await ingest.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert answer.status_code == 200 and answer.json()["status"] == "dead_lettered"
    dead = await read_all(kafka_bootstrap, topics.dlq, lambda r: len(r) >= 1)
    assert [r.value for r in dead] == [body]
    assert reason in dict(dead[0].headers)["guard.error"].decode()
    assert await read_all(kafka_bootstrap, topics.input, lambda r: False, timeout=0.5) == []
    metrics = (await ingest.get("/metrics")).text
    assert 'guard_ingest_requests_total{outcome="dead_lettered",route="leadterra"} 1.0' in metrics


async def test_limits_and_routes(ingest) -> None:
    """Bodies over 1 MiB are 413; only the documented routes exist; probes answer."""
    big = b'{"event":"message.sent","data":{"campaignId":"c","pad":"' + b"x" * (1024 * 1024) + b'"}}'
    assert (await ingest.post(WEBHOOK_PATH, content=big, headers=signed(big))).status_code == 413
    assert (await ingest.post("/v1/webhooks/other", content=b"{}")).status_code == 404
    assert (await ingest.get(WEBHOOK_PATH)).status_code == 405
    assert (await ingest.get("/readyz")).status_code == 200
    assert (await ingest.get("/livez")).status_code == 200


class TestArf:
    async def test_an_abuse_report_with_the_campaign_header_is_a_complaint(self, ingest, topics, kafka_bootstrap):
        raw = (ARF / "abuse.eml").read_bytes()
        answer = await ingest.post(ARF_PATH, content=raw, headers={"Authorization": f"Bearer {ARF_TOKEN.decode()}"})
        assert answer.status_code == 200, answer.text
        records = await read_all(kafka_bootstrap, topics.input, lambda r: len(r) >= 1)
        assert [r.key for r in records] == [b"camp_fbl_1"]
        event = decode(records[0].value, records[0].timestamp / 1000)
        assert (event.signal, event.campaign_id, event.message_id) == (
            Signal.COMPLAINED,
            "camp_fbl_1",
            "msg_8b1f2c@sender.example.com",
        )

    @pytest.mark.parametrize(
        ("sample", "reason"),
        [("abuse-no-campaign.eml", "no X-Leadterra-Campaign-Id"), ("not-a-report.eml", "not an ARF report")],
    )
    async def test_a_report_without_a_campaign_or_malformed_is_dead_lettered(
        self, ingest, topics, kafka_bootstrap, sample, reason
    ):
        raw = (ARF / sample).read_bytes()
        answer = await ingest.post(ARF_PATH, content=raw, headers={"Authorization": f"Bearer {ARF_TOKEN.decode()}"})
        assert answer.status_code == 200 and reason in answer.json()["reason"]
        dead = await read_all(kafka_bootstrap, topics.dlq, lambda r: len(r) >= 1)
        assert [r.value for r in dead] == [raw]
        assert await read_all(kafka_bootstrap, topics.input, lambda r: False, timeout=0.5) == []

    @pytest.mark.parametrize(
        "variant",
        ["base64-original", "quoted-printable-original", "arrival-date-ahead", "message-id-of-998-characters"],
    )
    async def test_a_report_a_feedback_loop_bends_still_counts(self, ingest, topics, kafka_bootstrap, variant):
        """Some feedback loops base64-encode the reported message (RFC 2046 forbids it on message/*), or write local
        time as UTC, and a Message-ID may be longer than the guard keeps of an id: the complaint counts all the same,
        at the record's time when its Arrival-Date is ahead, without the id when it is too long."""
        raw = (ARF / "abuse.eml").read_bytes()
        if variant == "base64-original":
            part = b"Content-Type: message/rfc822\nContent-Disposition: inline\n\n"
            head, _, original = raw.partition(part)
            original, _, tail = original.rpartition(b"\n--")
            encoding = b"Content-Transfer-Encoding: base64\n\n"
            raw = head + part.removesuffix(b"\n") + encoding + base64.encodebytes(original) + b"\n--" + tail
        elif variant == "quoted-printable-original":  # its headers stay readable: nothing to decode
            part = b"Content-Type: message/rfc822\n"
            raw = raw.replace(part, part + b"Content-Transfer-Encoding: quoted-printable\n")
        elif variant == "arrival-date-ahead":
            raw = re.sub(rb"Arrival-Date: [^\n]+", b"Arrival-Date: Fri, 01 Jan 2999 00:00:00 +0000", raw)
        else:
            raw = raw.replace(b"<msg_8b1f2c@sender.example.com>", b"<" + b"m" * 980 + b"@sender.example.com>")
        answer = await ingest.post(ARF_PATH, content=raw, headers={"Authorization": f"Bearer {ARF_TOKEN.decode()}"})
        assert answer.json()["status"] == "accepted", answer.text
        records = await read_all(kafka_bootstrap, topics.input, lambda r: len(r) >= 1)
        event = decode(records[0].value, records[0].timestamp / 1000)
        expected_id = None if variant == "message-id-of-998-characters" else "msg_8b1f2c@sender.example.com"
        assert (event.signal, event.campaign_id, event.message_id) == (Signal.COMPLAINED, "camp_fbl_1", expected_id)
        if variant == "arrival-date-ahead":
            assert event.time == records[0].timestamp / 1000

    @pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic YTpi", f"bearer{ARF_TOKEN.decode()}"])
    async def test_without_the_bearer_token_it_is_401(self, ingest, topics, kafka_bootstrap, authorization):
        headers = {"Authorization": authorization} if authorization else {}
        answer = await ingest.post(ARF_PATH, content=(ARF / "abuse.eml").read_bytes(), headers=headers)
        assert answer.status_code == 401
        assert await read_all(kafka_bootstrap, topics.input, lambda r: False, timeout=0.5) == []


# --- the broker goes away mid-load -------------------------------------------------------------

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A dedicated Tansu whose log is in S3 (a local moto_server), so it survives SIGKILL."""
    if not MOTO_SERVER.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]==5.2.5')")
    port = free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        moto = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    broker = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.put(f"{endpoint}/tansu", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert moto.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
        env = {
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        broker = EmbeddedBroker(storage="s3://tansu/", env=env).start()
        yield broker
    finally:
        if broker is not None:
            broker.stop()
        moto.kill()
        moto.wait()


@pytest.mark.integration  # a broker of its own, stopped on purpose
@pytest.mark.timeout(120)
async def test_while_the_broker_is_down_answers_are_503_in_time_and_no_acked_request_is_lost(
    persistent_broker: EmbeddedBroker,
) -> None:
    """Steady signed traffic; SIGKILL the broker, restart it: 503s within the produce timeout while it
    is away, and every request answered 2xx is in the topic afterwards."""
    broker = BrokerInfo(persistent_broker.bootstrap_servers, "tansu")
    topics = Topics()
    await create_topics(broker.bootstrap_servers, topics)
    answers: dict[str, tuple[int, float]] = {}
    async with running_ingest(broker, topics, produce_timeout=2.0) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=15) as client:

            async def post(message_id: str) -> None:
                body = webhook(f"camp_{len(answers) % 7}", message_id)
                started = time.monotonic()
                answer = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
                answers[message_id] = (answer.status_code, time.monotonic() - started)

            async def load(seconds: float) -> None:
                pending: set[asyncio.Task] = set()
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    pending.add(asyncio.create_task(post(uuid.uuid4().hex)))
                    await asyncio.sleep(0.01)
                await asyncio.gather(*pending)

            before = asyncio.create_task(load(1.0))
            await asyncio.sleep(0.5)
            persistent_broker.kill()  # mid-load
            await before
            await load(3.0)  # during the outage
            persistent_broker.start()
            deadline = time.monotonic() + 30
            while sum(status == 200 for status, _ in answers.values()) < 20 or not service.health.ready()[0]:
                await load(0.5)  # after: until the ingest produces again
                assert time.monotonic() < deadline, "no 2xx after the broker came back"
            await load(1.0)

    statuses = {status for status, _ in answers.values()}
    assert statuses <= {200, 503}, statuses
    assert 503 in statuses, "premise: some requests arrived while the broker was away"
    assert max(elapsed for status, elapsed in answers.values() if status == 503) < 10.0  # Leadterra's budget
    acked = {message_id for message_id, (status, _) in answers.items() if status == 200}
    records = await read_all(broker.bootstrap_servers, topics.input, lambda r: acked <= set(message_ids(r)), 30.0)
    missing = acked - set(message_ids(records))
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests are not in the topic"
