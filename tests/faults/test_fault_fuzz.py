"""Case 5: 10,000 fuzzed malformed messages interleaved with a good stream, on the real process.

Each fuzzed message is made to break the input contract (DESIGN.md) in one way, and its expected
fate follows from the contract: dead-lettered (bad JSON, wrong types, huge ids, missing ids,
timestamps far in the future or before 1970, invalid UTF-8 in a field the guard reads, empty values,
tombstones, nested garbage, addresses over 320 characters, control or bidi characters in ids and
addresses) or ignored (unknown event names). Besides, a few hundred *odd but valid* messages
(timestamps the contract says to replace by the record time, huge free text, unknown fields) go to
campaigns of their own: they must be counted, not dead-lettered.
And a few hostile ones, gzip-compressed, amid the good stream (see `hostile`): forged clocks 30
days ahead count at the partition's clock, and 3 MiB values are read without harm.

The stream is produced while the guard is still joining its group and positioning its partitions,
which is when aiokafka has been seen to deliver a partition's first records again (the guard skips
offsets it has handled: `redelivered`).

Asserted: the process never crashes; every record is counted once; the dead-letter topic holds exactly the dead-lettered ones
(same bytes, `guard.error` and `guard.source` headers); dead-lettered + ignored (from /metrics) =
10,000; the good stream's decisions are exactly those of an offline run over the good records only.

Nesting stays within 600 levels here: deeper nesting crashes the guard (see test_fault_bugs.py).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest

from guard.contracts.events import IgnoredEvent, MalformedEvent, decode
from guard.tools.generate import generate

BAD = 10_000
ODD = 400
SEED = 5

Fuzz = tuple[str, bytes | None]  # (expected fate: "dead" | "ignored" | "odd", value)


def _dump(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


class Fuzzer:
    """Seeded generators of contract-breaking values, one per kind of breakage."""

    def __init__(self, rng: random.Random, campaigns: list[str], now: float) -> None:
        self.rng, self.campaigns, self.now = rng, campaigns, now
        self.serial = 0
        self.dead: list[Callable[[], bytes | None]] = [
            self.truncated,
            self.random_bytes,
            self.not_an_object,
            self.wrong_type,
            self.huge_id,
            self.missing_id,
            self.future_timestamp,
            self.invalid_utf8,
            self.empty,
            self.nested_garbage,
            self.trailing_garbage,
            self.out_of_range_timestamp,
            self.overlong_address,
            self.control_character,
        ]

    # ---------------------------------------------------------------- helpers

    def campaign(self) -> str:
        return self.rng.choice(self.campaigns)

    def message_id(self) -> str:
        self.serial += 1
        return f"fuzz_{self.serial}"

    def iso(self, at: float | None = None) -> str:
        at = self.now - self.rng.uniform(0, 7000) if at is None else at
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))

    def envelope(self, event: str | None = None, **data: object) -> dict:
        event = event or self.rng.choice(["message.sent", "message.bounced", "message.complained"])
        data.setdefault("campaignId", self.campaign())
        data.setdefault("messageId", self.message_id())
        if event == "message.bounced":
            data.setdefault("bounceType", "hard")
            data.setdefault("bounceReason", "550 5.1.1 user unknown")
        return {"event": event, "timestamp": self.iso(), "data": data}

    def garbage(self, depth: int | None = None) -> object:
        """Nested lists and objects of junk, up to `depth` levels (600 at most: see the module doc)."""
        depth = self.rng.randint(1, 600) if depth is None else depth
        value: object = self.rng.choice([1, "x", None, True, 1.5, [], {}])
        for _ in range(depth):
            value = [value, self.rng.randint(0, 9)] if self.rng.random() < 0.5 else {"k": value, "n": None}
        return value

    # ---------------------------------------------------------------- dead-lettered

    def truncated(self) -> bytes:
        full = _dump(self.envelope())
        return full[: self.rng.randrange(0, len(full) - 1)]

    def random_bytes(self) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 300)))

    def not_an_object(self) -> bytes:
        return self.rng.choice(
            [b"null", b"true", b"17", b"-1e308", b'"message.sent"', b"[]", _dump([self.envelope()]), b"[1,2,3]"]
        )

    def wrong_type(self) -> bytes:
        envelope = self.envelope()
        data = envelope["data"]
        field, values = self.rng.choice(
            [
                ("event", [17, None, ["message.sent"], {"name": "message.sent"}, True, 1.5]),
                ("data", ["camp_a", 3, [data], None, True]),
                ("campaignId", [123, ["camp_a"], {"id": "camp_a"}, True, 1.5, None]),
                ("messageId", [5, ["m"], {"id": 1}, 2.5]),
                ("bounceType", [1, ["hard"], "permanent", "HARD", "medium", ""]),
                ("sequenceStep", ["1", 1.5, [1], {"n": 1}]),
                ("recipient", [5, ["a@b.c"], {"to": "a@b.c"}]),
                ("reply", ["unsubscribe", 1, ["x"]]),
                ("workspaceId", [1, ["w"]]),
                ("senderAccountId", [{"id": 1}, 2]),
            ]
        )
        value = self.rng.choice(values)
        if field in ("event", "data"):
            envelope[field] = value
        elif field == "bounceType":
            envelope["event"] = "message.bounced"
            data["bounceType"] = value
        elif field == "reply":
            envelope["event"] = "reply.received"
            data["reply"] = value
        else:
            data[field] = value
            if field == "campaignId" and value is None:
                data.pop("campaignId")  # null is "missing": also malformed
        return _dump(envelope)

    def huge_id(self) -> bytes:
        size = (
            self.rng.choice([257, 1000, 10_000, 100_000, 400_000])
            if self.rng.random() < 0.01
            else 257 + self.rng.randrange(3000)
        )
        field = self.rng.choice(["campaignId", "messageId", "replyId"])
        if field == "replyId":
            return _dump(
                {
                    "event": "reply.received",
                    "timestamp": self.iso(),
                    "data": {
                        "campaignId": self.campaign(),
                        "reply": {"id": "r" * size, "classification": "unsubscribe"},
                    },
                }
            )
        return _dump(self.envelope(**{field: "c" * size}))

    def missing_id(self) -> bytes:
        envelope = self.envelope()
        choice = self.rng.randrange(6)
        if choice == 0:
            envelope["data"].pop("campaignId")
        elif choice == 1:
            envelope["data"]["campaignId"] = ""
        elif choice == 2:
            envelope["data"] = {}
        elif choice == 3:
            envelope.pop("event")
        elif choice == 4:
            envelope.pop("data")
        else:
            envelope = {"event": "reply.received", "timestamp": self.iso(), "data": {"campaignId": self.campaign()}}
        return _dump(envelope)

    def future_timestamp(self) -> bytes:
        envelope = self.envelope()
        if self.rng.random() < 0.1:  # a number too large for a float
            return b'{"event":"message.sent","timestamp":1e400,"data":' + _dump(envelope["data"]) + b"}"
        envelope["timestamp"] = self.rng.choice(
            [
                "9999-12-31T23:59:59Z",
                f"{self.rng.randint(2100, 9999)}-01-01T00:00:00Z",
                self.iso(self.now + self.rng.uniform(2, 48) * 3600),  # more than an hour ahead of the record
            ]
        )
        return _dump(envelope)

    def invalid_utf8(self) -> bytes:
        """Invalid UTF-8 in a field the guard reads (in a field it skips, it is accepted: see the doc)."""
        bad = self.rng.choice([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        field = self.rng.choice(["campaignId", "messageId", "event", "timestamp", "raw"])
        if field == "raw":
            return bad + _dump(self.envelope())
        marker = "\u2603"  # a snowman marks the spot, then becomes the invalid bytes
        envelope = self.envelope()
        if field == "event":
            envelope["event"] = "message." + marker
        elif field == "timestamp":
            envelope["timestamp"] = marker
        else:
            envelope["data"][field] = "camp_" + marker
        return _dump(envelope).replace(marker.encode(), bad)

    def empty(self) -> bytes | None:
        return self.rng.choice([b"", b" ", b"\n", b"\x00", None, b"{}", b'{"data": {}}'])

    def nested_garbage(self) -> bytes:
        choice = self.rng.randrange(4)
        if choice == 0:
            return _dump(self.garbage())
        if choice == 1:
            return _dump({"event": "message.sent", "timestamp": self.iso(), "data": self.garbage()})
        envelope = self.envelope()
        envelope["data"]["campaignId" if choice == 2 else "messageId"] = self.garbage()
        return _dump(envelope)

    def trailing_garbage(self) -> bytes:
        full = _dump(self.envelope())
        return self.rng.choice([full + b" x", full + full, b"\xef\xbb\xbf" + full, full[:-1] + b",}", full + b"\x00"])

    # ---------------------------------------------------------------- ignored and odd

    def ignored(self) -> bytes:
        name = self.rng.choice(
            [
                "message.opened",
                "message.clicked",
                "campaign.deleted",
                "MESSAGE.SENT",
                "message.sent ",
                " message.bounced",
                "",
                "message.complained.v2",
                "\u6d88\u606f.\u53d1\u9001",
                "x" * self.rng.randint(1, 5000),
            ]
        )
        envelope: dict[str, object] = {"event": name}
        if self.rng.random() < 0.8:
            envelope["data"] = self.rng.choice([{"campaignId": self.campaign()}, "junk", 5, None, self.garbage(5)])
        if self.rng.random() < 0.5:
            envelope["timestamp"] = self.rng.choice([self.iso(), "9999-01-01T00:00:00Z", -1, "soon"])
        return _dump(envelope)

    def odd(self, campaign: str) -> bytes:
        """Valid by the contract, however odd: counted, for a campaign of its own."""
        envelope = self.envelope("message.sent", campaignId=campaign)
        choice = self.rng.randrange(6)
        if choice == 0:
            envelope["timestamp"] = self.rng.choice([-1, -1e18, 0, "", None, {}, [], "soon", "NaN"])  # record time
        elif choice == 1:
            envelope["timestamp"] = self.rng.choice(["-0001-01-01T00:00:00Z", "+10000-01-01T00:00:00Z"])  # unparseable
        elif choice == 2:
            envelope["data"]["bounceReason"] = "x" * self.rng.randint(1000, 50_000)  # free text: searched, not kept
        elif choice == 3:
            envelope["data"]["sequenceStep"] = self.rng.choice([10**30, -5, 0])
        elif choice == 4:
            envelope["data"]["junk"] = self.garbage(self.rng.randint(1, 200))
            envelope["extra"] = self.garbage(self.rng.randint(1, 200))
        else:
            envelope.pop("timestamp")  # missing: record time
        return _dump(envelope)

    # an event time an audit event cannot write, and strings the guard would keep or log unbounded or forged

    def out_of_range_timestamp(self) -> bytes:
        stamp = self.rng.choice(["0001-01-01T00:00:00Z", "1900-01-01T00:00:00+14:00", "0001-01-01T00:00:00+23:59"])
        return _dump(self.envelope("message.sent", campaignId=self.campaign()) | {"timestamp": stamp})

    def overlong_address(self) -> bytes:
        envelope = self.envelope("message.sent", campaignId=self.campaign())
        envelope["data"]["recipient"] = "lead@" + "d" * self.rng.randint(1000, 50_000) + ".com"
        return _dump(envelope)

    def control_character(self) -> bytes:
        envelope = self.envelope("message.sent", campaignId=self.campaign())
        field, value = self.rng.choice([("recipient", "lead\u0000@gmail.com"), ("messageId", "m\u202e1")])
        envelope["data"][field] = value
        return _dump(envelope)


def fuzz(seed: int, campaigns: list[str], now: float) -> list[Fuzz]:
    rng = random.Random(f"faults/fuzz/{seed}")
    fuzzer = Fuzzer(rng, campaigns, now)
    out: list[Fuzz] = []
    for _ in range(BAD):
        if rng.random() < 0.12:
            out.append(("ignored", fuzzer.ignored()))
        else:
            out.append(("dead", rng.choice(fuzzer.dead)()))
    out += [("odd", fuzzer.odd(f"camp_fuzz_{n % 20:02d}")) for n in range(ODD)]
    return out


DAY = 86_400.0
Hostile = tuple[str, bytes, float]  # (campaign, value, record time): produced gzip-compressed


def hostile(now: float) -> list[Hostile]:
    """Valid envelopes with hostile clocks and sizes, on campaigns of their own: event time and
    record time both 30 days ahead (the decoder's limit is against the record time: taken, then
    counted at the partition's clock), far past, year-0-ish (00:00 of year 1 at +23:59), and
    3 MiB values that gzip shrinks to a few KB (the broker takes them; the guard reads 3 MiB)."""

    def sent(campaign: str, stamp: str, **data: object) -> bytes:
        return _dump({"event": "message.sent", "timestamp": stamp, "data": {"campaignId": campaign, **data}})

    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 30 * DAY))
    return [
        *((f"camp_hostile_future_{n}", sent(f"camp_hostile_future_{n}", future), now + 30 * DAY) for n in range(2)),
        *((f"camp_hostile_past_{n}", sent(f"camp_hostile_past_{n}", "1900-01-01T00:00:00Z"), now) for n in range(2)),
        ("camp_hostile_year0", sent("camp_hostile_year0", "0001-01-01T00:00:00+23:59"), now),
        *(
            (f"camp_hostile_big_{n}", sent(f"camp_hostile_big_{n}", "2026-01-01T00:00:00Z", note="x" * 3 * 2**20), now)
            for n in range(2)
        ),
        # poison pills: malformed and too big to dead-letter whole (over the producer's 1 MiB request)
        *((f"camp_hostile_poison_{n}", b"{" + b"%d" % n * 2 * 2**20, now) for n in range(2)),
    ]


def fate(value: bytes | None, record_time: float) -> str:
    try:
        decode(value, record_time)
    except MalformedEvent:
        return "dead"
    except IgnoredEvent:
        return "ignored"
    return "odd"


@pytest.mark.timeout(150)
async def test_ten_thousand_malformed_messages_change_nothing(kit, standin, report_row) -> None:
    now = time.time()
    traffic = generate(
        SEED, campaigns=12, bad=3, start=now - 7200, duration=7000, sends=(500, 900), bad_kinds=("bounces",)
    )
    good = traffic.records
    expected = kit.expected(good, kit.NO_RESUMES)  # two hours in a burst: every decision stays current
    assert set(expected.pauses_by_campaign()) == set(traffic.bad), "premise: exactly the bad campaigns fire"
    fuzzed = fuzz(SEED, [c.campaign_id for c in traffic.campaigns], now)
    wrong = [(kind, value[:80] if value else value) for kind, value in fuzzed if fate(value, now) != kind]
    assert not wrong, f"the offline decoder disagrees with the contract on {len(wrong)} messages: {wrong[:5]}"
    kinds = Counter(kind for kind, _ in fuzzed)

    rng = random.Random(f"faults/fuzz/mix/{SEED}")
    keys = [c.campaign_id.encode() for c in traffic.campaigns]
    slots = sorted((rng.randint(0, len(good)), n) for n in range(len(fuzzed)))  # where each fuzzed one goes
    items: list[tuple[bytes | None, bytes | None]] = []
    position = 0
    for slot, n in slots:
        items += [(r.key.encode(), r.value) for r in good[position:slot]]
        position = max(position, slot)
        kind, value = fuzzed[n]
        if kind == "odd":
            key: bytes | None = json.loads(value)["data"]["campaignId"].encode()  # type: ignore[arg-type]
        else:
            key = rng.choice([*keys, None, b"\xff\xfe", b"k" * 2000])
            if value is None and key is None:  # a tombstone needs a key
                key = keys[0]
        items.append((key, value))
    items += [(r.key.encode(), r.value) for r in good[position:]]
    assert len(items) == len(good) + len(fuzzed)

    for spec in traffic.campaigns:
        standin.add_campaign(spec.campaign_id)
    # record times 30 days ahead: Apache Kafka 4 refuses them unless the topic allows it (docs/brokers.md)
    topics = await kit.topics(configs={"message.timestamp.after.max.ms": str(2**63 - 1)})
    # 400 KB values make some batches slow on a loaded 2-core CI: a 2 s session could expire
    # mid-run and a rebalance would count replayed records as `replayed`, not `counted`
    guard = kit.guard(
        kit.env(
            topics,
            standin,
            KAFKA_SESSION_TIMEOUT_MS=10000,
            KAFKA_HEARTBEAT_INTERVAL_MS=1000,
            GUARD_RESUME_GRACE=kit.NO_RESUMES,
        )
    )
    started = time.monotonic()  # no wait for readiness: the stream arrives while the guard joins
    hostiles = hostile(now)
    hostile_fates = Counter(fate(value, at) for _, value, at in hostiles)
    middle = len(items) // 2
    async with (
        kit.producer(max_request_size=2 * 1024 * 1024) as producer,
        kit.producer(compression_type="gzip", max_request_size=4 * 2**20) as gzipped,
    ):
        await producer.send_all(topics.input, items[:middle])
        for n, (campaign, value, at) in enumerate(hostiles):  # each among good records
            await gzipped.client.send_and_wait(
                topics.input, key=campaign.encode(), value=value, timestamp_ms=int(at * 1000)
            )
            await producer.send_all(topics.input, items[middle + 20 * n : middle + 20 * (n + 1)])
        await producer.send_all(topics.input, items[middle + 20 * len(hostiles) :])
    await guard.wait_ready()
    total = len(items) + len(hostiles)

    last: list = []  # the latest /metrics scrape, for the message on a timeout

    async def consumed() -> bool:
        assert guard.running, f"the guard crashed:\n{guard.log_tail()}"
        last[:] = [await guard.metrics()]
        return (
            last[0].records("counted", "ignored", "dead_lettered") == total and last[0]("guard_inflight_actions") == 0
        )

    try:
        await kit.wait_until(consumed, 90, 0.25, "every record consumed")
    except TimeoutError as error:
        outcomes = {
            dict(labels)["outcome"]: v for (name, labels), v in last[0].samples.items() if name == "guard_records_total"
        }
        events = [
            line for line in guard.log_tail(10**7).splitlines() if '"level": "info"' not in line or "partition" in line
        ]
        in_topic = await kit.read_all(kit.bootstrap, topics.input)
        raise AssertionError(
            f"{error}: {len(items)} produced, {len(in_topic)} in the topic "
            f"({len(set((r.partition, r.offset) for r in in_topic))} distinct offsets, "
            f"{len(in_topic) - len(set((r.key, r.value) for r in in_topic))} repeated key+value, "
            f"{len(items) - len(set(items))} among those produced), "
            f"records by outcome {outcomes}, in flight "
            f"{last[0]('guard_inflight_actions')}; log lines other than info:\n" + "\n".join(events[-40:])
        ) from error
    seconds = time.monotonic() - started
    metrics = await guard.metrics()
    live = (await guard.status("/livez"), await guard.status("/readyz"))
    rss_mib = guard.rss_kib() / 1024
    dead_letters = await kit.read_all(kit.bootstrap, topics.dlq)
    audit = [json.loads(r.value) for r in await kit.read_all(kit.bootstrap, topics.audit)]
    assert guard.running
    assert await guard.terminate() == 0

    dead_lettered, ignored = metrics.records("dead_lettered"), metrics.records("ignored")
    fired = sorted(e["decision_id"] for e in audit if e["outcome"] == "fired")
    paid = {r.header("Idempotency-Key") for r in standin.pause_requests() if r.status == 200}
    reasons = Counter(dict(r.headers)["guard.error"].decode().split(":")[0][:40] for r in dead_letters)
    report_row(
        "5 fuzz: 10,000 malformed messages",
        f"{kinds['dead']:,} contract-breaking messages (bad JSON, random bytes, wrong types, ids over 256 chars and "
        f"values up to 400 KB, missing ids, timestamps up to year 9999, invalid UTF-8, empty values and tombstones, "
        f"nested garbage up to 600 levels, trailing bytes) + {kinds['ignored']:,} unknown event names, interleaved "
        f"with {len(good):,} good records; + {kinds['odd']} odd-but-valid ones (record-time fallbacks, 50 KB "
        f"bounce reasons, unknown fields) on campaigns of their own; + {len(hostiles)} hostile ones, "
        f"gzip-compressed, among the good ones: event and record time 30 days ahead, year 1900, year-0-ish "
        f"(0001-01-01T00:00:00+23:59), 3 MiB values, 2 MiB malformed ones (poison pills); produced from the guard's "
        f"start, while it joins its group",
        f"no crash ({live[0]}/{live[1]} on /livez,/readyz after); {len(dead_letters):,} dead letters (metric "
        f"{dead_lettered:,.0f}) + {ignored:,.0f} ignored = {len(dead_letters) + ignored:,.0f}; counted "
        f"{metrics.records('counted'):,.0f} = good + odd; {len(fired)} decisions = offline run over the good records "
        f"only; consumed in {seconds:.1f} s from the guard's start; {metrics.records('redelivered'):,.0f} records "
        f"delivered again by the consumer and skipped; top reasons {dict(reasons.most_common(4))}; hostile ones "
        f"{dict(hostile_fates)}, {metrics.records('ahead'):.0f} counted at the partition's clock, "
        f"{metrics('guard_dead_letters_total', result='truncated'):.0f} poison pills dead-lettered cut to 16 KiB; "
        f"campaigns tracked "
        f"{metrics('guard_campaigns_tracked'):.0f} of at most {metrics('guard_campaigns_limit'):,.0f}; RSS {rss_mib:.0f} MiB",
    )
    assert len(dead_letters) == dead_lettered == kinds["dead"] + hostile_fates["dead"]
    assert ignored == kinds["ignored"]
    assert len(dead_letters) + ignored == BAD + hostile_fates["dead"]
    assert metrics.records("counted") == len(good) + kinds["odd"] + hostile_fates["odd"]
    assert metrics.records("ahead") == 2  # the two records 30 days ahead
    assert metrics("guard_campaigns_tracked") <= metrics("guard_campaigns_limit")
    dead_values = [v for kind, v in fuzzed if kind == "dead"] + [v for _, v, at in hostiles if fate(v, at) == "dead"]
    cut = [r for r in dead_letters if dict(r.headers).get("guard.truncated") == b"true"]
    poison = [v for campaign, v, _ in hostiles if campaign.startswith("camp_hostile_poison_")]
    assert sorted(int(dict(r.headers)["guard.source.size"]) for r in cut) == sorted(len(v) for v in poison)
    assert all(any(v.startswith(r.value) for v in poison) and len(r.value) <= 16 * 1024 for r in cut)
    assert Counter(r.value for r in dead_letters if r not in cut) == Counter(v for v in dead_values if v not in poison)
    assert all(dict(r.headers)["guard.error"] for r in dead_letters)
    assert all(dict(r.headers)["guard.source"].startswith(topics.input.encode()) for r in dead_letters)
    assert fired == sorted(d.id for d in expected.decisions)
    assert paid == {d.id for d in expected.pauses}
    assert live == (200, 200)
