"""The labelled synthetic campaigns (the workload in bench/quality/__init__.py): who they are, when
they send, and every event they cause, in event-time order."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from guard.contracts.events import Event, Signal

DAY, HOUR = 86400.0, 3600.0


@dataclass(frozen=True, slots=True)
class Profile:
    hard: float
    soft: float
    complaint: float
    unsubscribe: float


@dataclass(frozen=True, slots=True)
class Spec:
    campaign_id: str
    seed: int
    sends: int
    days: float
    burstiness: float  # gamma shape of hourly volumes: small = bursty
    healthy: Profile
    turn: int | None = None  # index of the first bad send
    kind: str | None = None  # "bounces" or "complaints"
    bad: Profile | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    campaign_id: str
    kind: str | None
    paused_after: int | None  # sends made before the pause took effect
    turn: int | None
    rule: str | None = None  # the rule that paused it


def specs(healthy: int, bad: int, seed: int) -> list[Spec]:
    rng = random.Random(seed)
    result = []
    for number in range(healthy + bad):
        sends = int(math.exp(rng.uniform(math.log(50), math.log(50_000))))
        days = math.exp(rng.uniform(0, math.log(14)))
        base = Profile(
            rng.uniform(0.005, 0.02), rng.uniform(0.01, 0.03), rng.uniform(0.0002, 0.0008), rng.uniform(0.002, 0.01)
        )
        spec = Spec(f"camp_{number:05d}", rng.randrange(2**31), sends, days, rng.uniform(0.3, 3.0), base)
        if number >= healthy:
            kind = "bounces" if number % 2 == 0 else "complaints"
            if kind == "bounces":
                worse = Profile(rng.uniform(0.08, 0.15), base.soft, base.complaint, base.unsubscribe)
            else:
                worse = Profile(base.hard, base.soft, rng.uniform(0.003, 0.01), base.unsubscribe)
            turn = int(sends * rng.uniform(0.2, 0.8))
            spec = Spec(spec.campaign_id, spec.seed, sends, days, spec.burstiness, base, turn, kind, worse)
        result.append(spec)
    return result


def send_times(spec: Spec, rng: random.Random) -> list[float]:
    """Business hours (8 a day), hourly volumes drawn from a gamma distribution (bursts)."""
    hours = max(1, round(spec.days * 8))
    weights = [rng.gammavariate(spec.burstiness, 1.0) for _ in range(hours)]
    slots = rng.choices(range(hours), weights=weights, k=spec.sends)
    return sorted((slot // 8) * DAY + 8 * HOUR + (slot % 8) * HOUR + rng.uniform(0, HOUR) for slot in slots)


def events(spec: Spec) -> tuple[list[float], Iterator[Event]]:
    """The campaign's send times, and all its events in event-time order."""
    rng = random.Random(spec.seed)
    times = send_times(spec, rng)
    heap: list[tuple[float, int, Event]] = []
    cid = spec.campaign_id
    for number, at in enumerate(times):
        profile = spec.bad if spec.turn is not None and number >= spec.turn else spec.healthy
        assert profile is not None
        domain = "gmail.com" if rng.random() < 0.4 else "outlook.com"
        mid = f"{cid}-{number}"  # outcomes quote their send's message id, as Leadterra's do
        heap.append((at, number * 4, Event(Signal.SENT, cid, at, mid, domain)))
        draw = rng.random()
        if draw < profile.hard:
            bounce_at = at + rng.uniform(2, 90)
            heap.append(
                (bounce_at, number * 4 + 1, Event(Signal.BOUNCED, cid, bounce_at, mid, domain, "hard", "5.1.1"))
            )
        elif draw < profile.hard + profile.soft:
            bounce_at = at + rng.uniform(60, 900)
            heap.append(
                (bounce_at, number * 4 + 1, Event(Signal.BOUNCED, cid, bounce_at, mid, domain, "soft", "4.2.2"))
            )
        elif rng.random() < profile.complaint:
            complained_at = at + min(2 * DAY, max(300.0, rng.lognormvariate(math.log(2 * HOUR), 1.2)))
            heap.append((complained_at, number * 4 + 2, Event(Signal.COMPLAINED, cid, complained_at, mid, domain)))
        elif rng.random() < profile.unsubscribe:
            replied_at = at + rng.uniform(HOUR, DAY)
            heap.append((replied_at, number * 4 + 3, Event(Signal.UNSUBSCRIBED, cid, replied_at, mid, domain)))
    heapq.heapify(heap)

    def ordered() -> Iterator[Event]:
        while heap:
            yield heapq.heappop(heap)[2]

    return times, ordered()
