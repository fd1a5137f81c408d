"""Seeded synthetic Leadterra traffic: healthy campaigns, and some that turn bad at a known moment.

The demo, the benchmarks and the tests all draw their traffic from here, so "which campaigns went
bad, and when" is known exactly and can be checked against what the guard paused.
"""

from __future__ import annotations

import heapq
import itertools
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Literal

import msgspec

BadKind = Literal["bounces", "complaints"]

# Roughly a B2B cold list: consumer mailboxes plus company domains.
_PROVIDERS = (
    ("gmail.com", 0.40),
    ("outlook.com", 0.13),
    ("hotmail.com", 0.05),
    ("yahoo.com", 0.08),
    ("icloud.com", 0.04),
)
_COMPANY_DOMAINS = tuple(
    f"{name}.com" for name in ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
)
HARD_BOUNCE_REASONS = (
    "550 5.1.1 The email account that you tried to reach does not exist",
    "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    "553 5.1.3 Invalid recipient address syntax",
    "550 5.7.1 Recipient address rejected: Access denied",
)
SOFT_BOUNCE_REASONS = (
    "452 4.2.2 The recipient's inbox is out of storage space",
    "421 4.7.0 Try again later, closing connection",
    "451 4.4.2 Timeout - closing connection",
)


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-send probabilities of each outcome."""

    hard_bounce: float
    soft_bounce: float
    complaint: float
    unsubscribe: float


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    campaign_id: str
    sends: int
    start: float
    duration: float
    rates: Rates
    turns_at: float | None = None  # event time the campaign goes bad (None: healthy throughout)
    bad_rates: Rates | None = None
    bad_kind: BadKind | None = None
    sender: str | None = None  # the address its mail is sent from (`data.from`), for rules over a sender or domain


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: bytes
    time: float


@dataclass(frozen=True)
class Traffic:
    """The campaigns and their events, sorted by event time."""

    campaigns: tuple[CampaignSpec, ...]
    records: tuple[Record, ...]

    @property
    def bad(self) -> dict[str, float]:
        """Campaigns that turn bad -> the event time they turn."""
        return {c.campaign_id: c.turns_at for c in self.campaigns if c.turns_at is not None}

    @property
    def healthy(self) -> list[str]:
        return [c.campaign_id for c in self.campaigns if c.turns_at is None]


def healthy_rates(rng: random.Random) -> Rates:
    """Healthy B2B sending: 0.5-2% hard bounces, 0.02-0.08% complaints."""
    return Rates(
        rng.uniform(0.005, 0.02), rng.uniform(0.005, 0.02), rng.uniform(0.0002, 0.0008), rng.uniform(0.002, 0.01)
    )


def bad_rates(rng: random.Random, kind: BadKind, healthy: Rates) -> Rates:
    """A stale list (8-15% hard bounces) or an offensive template (0.3-1% complaints)."""
    if kind == "bounces":
        return Rates(rng.uniform(0.08, 0.15), healthy.soft_bounce, healthy.complaint, healthy.unsubscribe)
    return Rates(healthy.hard_bounce, healthy.soft_bounce, rng.uniform(0.003, 0.01), healthy.unsubscribe * 3)


def plan(
    seed: int = 0,
    campaigns: int = 20,
    bad: int = 3,
    *,
    start: float = 1_767_225_600.0,  # 2026-01-01T00:00:00Z
    duration: float = 7200.0,
    sends: tuple[int, int] = (400, 3000),
    bad_kinds: tuple[BadKind, ...] = ("bounces", "complaints"),
    senders: int = 0,
) -> list[CampaignSpec]:
    """Which campaigns exist, how much they send, and which turn bad when; with `senders`, the campaigns send
    from that many domains in turn (`team@sender<N>.example`), else their events name no sender."""
    if not 0 <= bad <= campaigns:
        raise ValueError("bad must be between 0 and the number of campaigns")
    rng = random.Random(seed)
    bad_ids = set(rng.sample(range(campaigns), bad))
    specs = []
    for index in range(campaigns):
        campaign_id = f"camp_{seed:x}{index:05d}"
        offset = rng.uniform(0, duration * 0.25)
        length = duration - offset
        rates = healthy_rates(rng)
        count = rng.randint(*sends)
        sender = f"team@sender{index % senders}.example" if senders else None
        if index in bad_ids:
            kind = bad_kinds[index % len(bad_kinds)]
            turns_at = start + offset + length * rng.uniform(0.2, 0.5)
            specs.append(
                CampaignSpec(
                    campaign_id,
                    count,
                    start + offset,
                    length,
                    rates,
                    turns_at,
                    bad_rates(rng, kind, rates),
                    kind,
                    sender,
                )
            )
        else:
            specs.append(CampaignSpec(campaign_id, count, start + offset, length, rates, sender=sender))
    return specs


def generate(seed: int = 0, campaigns: int = 20, bad: int = 3, **options: object) -> Traffic:
    """Plan the campaigns and draw their events (deterministic for a seed), all held in memory."""
    specs = plan(seed, campaigns, bad, **options)  # type: ignore[arg-type]
    return Traffic(tuple(specs), tuple(stream(specs, seed)))


def stream(specs: list[CampaignSpec], seed: int = 0, slice_events: int = 50_000) -> Iterator[Record]:
    """The planned campaigns' events in event-time order, drawn as they are needed.

    The same records, in the same order, as `generate`, but memory grows with the number of
    campaigns, not of events: one lazy stream per campaign, in time order, taken a slice of event
    time at a time. A slice holds about `slice_events` events (50,000: some 20 MB of records):
    every campaign's events before its end, in plan order, then sorted by time (stable: equal times
    keep the campaign order, as one sort of everything does). Drawing a few dozen events of a
    campaign at a go, rather than one event per campaign in turn (a heap merge), keeps its state in
    the CPU caches: at thousands of campaigns that is half again the speed.
    """
    streams = [_campaign_events(spec, random.Random(f"{seed}/{number}")) for number, spec in enumerate(specs)]
    heads: list[Record | None] = [next(events) for events in streams]  # a campaign has at least its start
    first, last = min(spec.start for spec in specs), max(spec.start + spec.duration for spec in specs)
    per_slice = max(slice_events, 4 * len(specs))  # a few events per campaign and visit, at least
    step = max((last - first) * per_slice / expected_count(specs), 1e-3)
    live, end = list(range(len(streams))), first
    while live:
        end += step
        batch: list[Record] = []
        going: list[int] = []
        for number in live:
            head, events = heads[number], streams[number]
            while head is not None and head.time < end:
                batch.append(head)
                head = next(events, None)
            heads[number] = head
            if head is not None:
                going.append(number)
        live = going
        batch.sort(key=_time)
        yield from batch


_time = attrgetter("time")


def expected_count(specs: list[CampaignSpec]) -> int:
    """About how many events `stream` yields for these campaigns, from the plan alone (no drawing)."""
    return round(sum(_expected_events(spec) for spec in specs))


def _expected_events(spec: CampaignSpec) -> float:
    after = 0.0 if spec.turns_at is None else (spec.start + spec.duration - spec.turns_at) / spec.duration
    per_send = 1.0
    for rates, share in ((spec.rates, 1.0 - after), (spec.bad_rates, after)):
        if rates is None or share == 0.0:
            continue
        bounced = rates.hard_bounce + rates.soft_bounce
        follow_ups = (
            rates.hard_bounce * _fits(spec.duration, *_HARD_BOUNCE_DELAY)
            + rates.soft_bounce * _fits(spec.duration, *_SOFT_BOUNCE_DELAY)
            + (1 - bounced) * rates.complaint * _fits(spec.duration, *_COMPLAINT_DELAY)
            + (1 - bounced)
            * (1 - rates.complaint * _fits(spec.duration, *_COMPLAINT_DELAY))
            * rates.unsubscribe
            * _fits(spec.duration, *_REPLY_DELAY)
        )
        per_send += share * follow_ups
    return 1 + spec.sends * per_send


def _fits(length: float, low: float, high: float) -> float:
    """The chance that a follow-up `low`..`high` seconds after a send uniform over `length` lands within it."""
    if high <= length:
        return 1 - (low + high) / (2 * length)
    if low >= length:
        return 0.0
    return (length - low) ** 2 / (2 * length * (high - low))


_encode = msgspec.json.Encoder().encode


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sent_from(event: str, campaign_id: str, at: float, data: dict[str, object], sender: str | None) -> Record:
    """One record of the campaign's, sent from `sender` when it has one."""
    data["campaignId"] = campaign_id
    if sender is not None:
        data["from"] = sender
    return Record(campaign_id, _encode({"event": event, "timestamp": _iso(at), "data": data}), at)


def _domain(rng: random.Random) -> str:
    draw = rng.random()
    for domain, share in _PROVIDERS:
        if draw < share:
            return domain
        draw -= share
    return rng.choice(_COMPANY_DOMAINS)


# Seconds from a send to its follow-up event.
_HARD_BOUNCE_DELAY = (2.0, 90.0)
_SOFT_BOUNCE_DELAY = (60.0, 900.0)
_COMPLAINT_DELAY = (30.0, 1800.0)
_REPLY_DELAY = (120.0, 3600.0)


def _campaign_events(spec: CampaignSpec, rng: random.Random) -> Iterator[Record]:
    """One campaign's events in time order; equal times in the order they were drawn.

    Sends are drawn in time order; a follow-up (bounce, complaint, reply) waits in a small heap until
    the sends have passed its time: whatever the heap holds up to the floor of later draws can go.
    """
    pending: list[tuple[float, int, Record]] = []
    drawn = itertools.count()
    for floor, record in _drawn_events(spec, rng):
        if record.time > floor:  # a follow-up: later than its send, so it waits
            heapq.heappush(pending, (record.time, next(drawn), record))
            continue
        while pending and pending[0][0] <= floor:  # drawn earlier, so first on a tie
            yield heapq.heappop(pending)[2]
        yield record
    while pending:
        yield heapq.heappop(pending)[2]


def _drawn_events(spec: CampaignSpec, rng: random.Random) -> Iterator[tuple[float, Record]]:
    """One campaign's events in the order they are drawn (each send, then its follow-up if any), each with
    the floor of what is drawn after it: the time of the latest send, since sends are drawn sorted."""
    end = spec.start + spec.duration
    campaign_id = spec.campaign_id

    def record(event: str, campaign_id: str, at: float, data: dict[str, object]) -> Record:
        return _sent_from(event, campaign_id, at, data, spec.sender)

    yield spec.start, record("campaign.started", campaign_id, spec.start, {})
    times = array("d", sorted(rng.uniform(spec.start, end) for _ in range(spec.sends)))
    for number, at in enumerate(times):
        rates = spec.bad_rates if spec.turns_at is not None and at >= spec.turns_at else spec.rates
        assert rates is not None
        message_id = f"msg_{campaign_id}_{number}"
        recipient = f"lead{number}@{_domain(rng)}"
        yield (
            at,
            record(
                "message.sent", campaign_id, at, {"messageId": message_id, "recipient": recipient, "sequenceStep": 1}
            ),
        )
        draw = rng.random()
        if draw < rates.hard_bounce:
            bounce_at, data = (
                at + rng.uniform(*_HARD_BOUNCE_DELAY),
                {"bounceType": "hard", "bounceReason": rng.choice(HARD_BOUNCE_REASONS)},
            )
        elif draw < rates.hard_bounce + rates.soft_bounce:
            bounce_at, data = (
                at + rng.uniform(*_SOFT_BOUNCE_DELAY),
                {"bounceType": "soft", "bounceReason": rng.choice(SOFT_BOUNCE_REASONS)},
            )
        else:
            bounce_at = None
        if bounce_at is not None:
            if bounce_at <= end:
                yield (
                    at,
                    record(
                        "message.bounced",
                        campaign_id,
                        bounce_at,
                        {"messageId": message_id, "recipient": recipient, **data},
                    ),
                )
            continue
        if rng.random() < rates.complaint and (complained_at := at + rng.uniform(*_COMPLAINT_DELAY)) <= end:
            yield (
                at,
                record(
                    "message.complained", campaign_id, complained_at, {"messageId": message_id, "recipient": recipient}
                ),
            )
        elif rng.random() < rates.unsubscribe and (replied_at := at + rng.uniform(*_REPLY_DELAY)) <= end:
            reply = {"id": f"rpl_{campaign_id}_{number}", "classification": "unsubscribe", "campaignId": campaign_id}
            yield at, record("reply.received", campaign_id, replied_at, {"messageId": message_id, "reply": reply})
