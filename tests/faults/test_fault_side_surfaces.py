"""Fail toward the pause (DESIGN promise 8), proven on the running guard: every side surface misbehaves at once
and every bad campaign is still paused.

One `guard run` per case, on the session's broker, with the documented settings. Before it starts, the topics it
reads besides its input hold what an adversary (anyone who can write them) or a torn disk would put there:
- the control topic: a zone-less exemption from year 1, one whose key and id differ, garbage bytes, a value near
  the broker's size limit, and one valid exemption (it must still exempt);
- the audit topic: records that are no audit event, one of them huge;
- the state topic: a whole checkpoint whose offset is -1, a manifest naming 300 million chunks, garbage;
and the notification receiver errs, hangs or answers an endless body. Then bad campaigns spread over every
partition: each is paused exactly once (the exempted one is audited `exempted`), no decision crashes, and /livez
and /readyz say what is true (live and ready: nothing stops the guard from protecting).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from pydantic import ValidationError

from guard.contracts.audit import read_audit
from guard.engine import Engine
from guard.engine.snapshot import FORMAT, rules_version, snapshot
from guard.rules import load_rules
from guard.runtime.checkpoint_records import Manifest, partition_key, records
from guard.testing.events import bounced, sent

BAD = [f"camp_bad_{n}" for n in range(6)]
EXEMPT, MISMATCHED, UNRELATED = "camp_exempt", "camp_mismatched", "camp_unrelated"


def bad_campaign(campaign: str, start: float) -> list[tuple[str, bytes]]:
    """200 sends then 15 hard bounces: the fault rules' 6% hard-bounce line is crossed."""
    return [(campaign, sent(campaign, start + i)) for i in range(200)] + [
        (campaign, bounced(campaign, start + 200 + i)) for i in range(15)
    ]


def exemption(id_: str, campaigns: str, expires_at: str, created_at: str | None = None) -> bytes:
    created_at = created_at or iso(time.time() - 60)
    record = {"id": id_, "campaigns": campaigns, "rule": None, "reason": "seed list", "by": "ops"}
    return json.dumps(record | {"created_at": created_at, "expires_at": expires_at}).encode()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def control_records() -> list[tuple[bytes, bytes]]:
    return [
        # zone-less, year 1: evaluating it used to crash every decision of every campaign
        (b"exemption/ex_00000000aa01", exemption("ex_00000000aa01", f"{UNRELATED}*", "0001-01-01T00:00:00")),
        # a zone-less and a zoned record covering one campaign together broke max()
        (b"exemption/ex_00000000aa02", exemption("ex_00000000aa02", f"{UNRELATED}*", "2999-01-01T00:00:00")),
        # its key says one id, its value another: it would survive its own revocation
        (b"exemption/ex_00000000aa03", exemption("ex_00000000aa04", MISMATCHED, iso(time.time() + 86400))),
        (b"exemption/ex_00000000aa05", b"\xff\x00 not json"),
        (b"exemption/ex_00000000aa06", json.dumps({"id": "ex_00000000aa06", "reason": "x" * 900_000}).encode()),
        # a valid one among them still exempts
        (b"exemption/ex_00000000aa07", exemption("ex_00000000aa07", EXEMPT, iso(time.time() + 86400))),
    ]


def audit_records() -> list[tuple[bytes, bytes]]:
    return [(b"camp_x", b"not an audit event"), (b"camp_x", b'{"outcome": "paused"}'), (b"camp_x", b"[" * 900_000)]


def state_records(kit, topics) -> list[tuple[bytes, bytes]]:
    """Checkpoints of partitions 0-2 of the input, forged as described above."""
    rules = load_rules(kit.rules)
    data = snapshot(Engine(rules), rules)
    version = rules_version(rules)
    tp = [TopicPartition(topics.input, p) for p in range(3)]
    whole_but_offset = records(topics.group, tp[0], data, -1, version, FORMAT, 0)
    *chunks, (key, value) = records(topics.group, tp[1], data, 0, version, FORMAT, 0)
    fields = msgspec.msgpack.decode(value)  # the manifest as its array of fields, forged below any check
    fields[list(Manifest.__struct_fields__).index("chunks")] = 300_000_000
    garbage = [(partition_key(topics.group, tp[2]).encode(), b"\x93\xff garbage")]
    return [*whole_but_offset, *chunks, (key, msgspec.msgpack.encode(fields)), *garbage]


class Receiver:
    """A notification receiver on 127.0.0.1 that misbehaves as told: `error` (500), `hang`, `endless` (200 and a
    body that never ends)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.requests = kind, 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.kind == "error":
            return web.Response(status=500, text="down")
        if self.kind == "hang":
            await asyncio.sleep(3600)
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        while True:  # until the client goes away
            await response.write(chunk)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture(params=["error", "hang", "endless"])
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    async with Receiver(request.param) as server:
        yield server


@pytest.mark.timeout(110)
async def test_every_side_surface_failing_at_once_stops_no_pause(kit, standin, receiver, report_row) -> None:
    for campaign in [*BAD, EXEMPT, MISMATCHED]:
        standin.add_campaign(campaign)
    topics = await kit.topics()
    control = f"{topics.input}-control"
    async with kit.producer() as producer:
        await producer.send_all(topics.audit, audit_records())
        await producer.send_all(topics.state, state_records(kit, topics))
    env = kit.env(
        topics,
        standin,
        GUARD_CONTROL_TOPIC=control,
        GUARD_CHECKPOINT_INTERVAL="1",
        GUARD_SLACK_WEBHOOK_URL=receiver.url,
        GUARD_NOTIFY_DEADLINE="3",
    )
    guard = kit.guard(env)
    await guard.wait_ready(40)
    async with kit.producer() as producer:  # the guard made its control topic; an adversary writes to it
        await producer.send_all(control, control_records())
    await asyncio.sleep(2)  # followed within about a second
    start = time.time() - 900
    async with kit.producer() as producer:
        for campaign in [*BAD, EXEMPT, MISMATCHED]:
            await producer.send_all(topics.input, bad_campaign(campaign, start))
    paused = [*BAD, MISMATCHED]
    try:
        await kit.wait_until(
            lambda: all(standin.pause_requests(c) for c in paused), 40, 0.2, "every bad campaign paused"
        )
        metrics = await guard.metrics()
        livez, readyz = await guard.status("/livez"), await guard.status("/readyz")
        await kit.wait_until(lambda: _audited(kit, topics, EXEMPT, "exempted"), 20, 0.5, "the exemption audited")
        rss_mib = guard.rss_kib() / 1024
    finally:
        report_row(
            f"side surfaces at once, receiver {receiver.kind}",
            "forged control, audit and state records (year-1 and key/id-mismatched exemptions, garbage, 900 KB "
            f"values, a checkpoint at offset -1, 300M chunks); the notification receiver: {receiver.kind}",
            f"{sum(bool(standin.pause_requests(c)) for c in paused)}/{len(paused)} bad campaigns paused; "
            f"{len(standin.pause_requests(EXEMPT))} calls for the exempted one",
        )
    assert {len(standin.pause_requests(c)) for c in paused} == {1}
    assert not standin.pause_requests(EXEMPT)
    assert metrics("guard_decision_errors_total") == 0
    assert (livez, readyz) == (200, 200)
    assert guard.running
    assert rss_mib < 600, f"the guard grew to {rss_mib:.0f} MiB"
    if receiver.kind in ("error", "hang"):
        await kit.wait_until(lambda: _audited(kit, topics, None, "notify_failed"), 30, 0.5, "notify_failed audited")


async def _audited(kit, topics, campaign: str | None, outcome: str) -> bool:
    """The audit topic holds an event of `outcome` (for `campaign`, if given); the forged records are skipped."""
    for record in await kit.read_all(kit.bootstrap, topics.audit):
        try:
            event = read_audit(record.value)
        except ValidationError:
            continue
        if event.outcome == outcome and campaign in (None, event.campaign_id):
            return True
    return False
