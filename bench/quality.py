"""Decision quality: how soon a rule set pauses campaigns that turn bad, and how often it pauses
healthy ones, measured on labelled synthetic campaigns through the guard's own engine.

Workload (seeded): campaigns sending 50 to 50,000 messages (log-uniform) over 1 to 14 days, in
business hours, in bursts (hourly volumes drawn from a gamma distribution). Healthy campaigns:
0.5-2% hard bounces, 0.02-0.08% complaints, 1-3% soft bounces, 0.2-1% unsubscribes, 40% Gmail
recipients. A bad campaign turns, at a random send between 20% and 80% of its volume, into a
stale list (8-15% hard bounces) or an offensive one (0.3-1% complaints), half each. Bounces
arrive 2-90 s after their send, complaints 5 minutes to 2 days after (log-normal, median ~2 h).

Per rule set: bad campaigns paused after their turn, missed, paused before their turn; the
detection delay in sends made after the turn until the pause (median, p90); and the share of
healthy campaigns ever paused. A campaign stops sending when it is paused.

    python -m bench.quality [--healthy 1500] [--bad 500] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import multiprocessing
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from guard.engine import Engine
from guard.events import Event, Signal
from guard.rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parent.parent
RULE_SETS = {
    "shipped (rules/)": ROOT / "rules",
    "Woodpecker-style": ROOT / "bench" / "baselines" / "woodpecker.yaml",
    "AutoEmails-style": ROOT / "bench" / "baselines" / "autoemails.yaml",
    "SES-style": ROOT / "bench" / "baselines" / "ses.yaml",
}
TARGET_DELAY_SENDS = 60
TARGET_HEALTHY_PAUSED = 0.005
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
        heap.append((at, number * 4, Event(Signal.SENT, cid, at, None, domain)))
        draw = rng.random()
        if draw < profile.hard:
            bounce_at = at + rng.uniform(2, 90)
            heap.append(
                (bounce_at, number * 4 + 1, Event(Signal.BOUNCED, cid, bounce_at, None, domain, "hard", "5.1.1"))
            )
        elif draw < profile.hard + profile.soft:
            bounce_at = at + rng.uniform(60, 900)
            heap.append(
                (bounce_at, number * 4 + 1, Event(Signal.BOUNCED, cid, bounce_at, None, domain, "soft", "4.2.2"))
            )
        elif rng.random() < profile.complaint:
            complained_at = at + min(2 * DAY, max(300.0, rng.lognormvariate(math.log(2 * HOUR), 1.2)))
            heap.append((complained_at, number * 4 + 2, Event(Signal.COMPLAINED, cid, complained_at, None, domain)))
        elif rng.random() < profile.unsubscribe:
            replied_at = at + rng.uniform(HOUR, DAY)
            heap.append((replied_at, number * 4 + 3, Event(Signal.UNSUBSCRIBED, cid, replied_at, None, domain)))
    heapq.heapify(heap)

    def ordered() -> Iterator[Event]:
        while heap:
            yield heapq.heappop(heap)[2]

    return times, ordered()


def simulate(spec: Spec, rules: RuleSet) -> Outcome:
    """Stream the campaign through a fresh engine until a pause decision (then it stops sending)."""
    engine = Engine(rules)
    times, stream = events(spec)
    for event in stream:
        for decision in engine.process(event):
            if decision.action == "pause":
                # what was sent up to the decision; in-flight mail is delivered but nothing new starts
                return Outcome(spec.campaign_id, spec.kind, bisect.bisect_right(times, decision.fired_at), spec.turn)
    return Outcome(spec.campaign_id, spec.kind, None, spec.turn)


_rules: RuleSet | None = None


def _load(path: str) -> None:
    global _rules
    _rules = load_rules(path)


def _simulate(spec: Spec) -> Outcome:
    assert _rules is not None
    return simulate(spec, _rules)


@dataclass(frozen=True)
class Score:
    name: str
    bad: int
    caught: int
    missed: int
    early: int
    delays: list[int]
    healthy: int
    healthy_paused: int
    by_kind: dict[str, tuple[int, int, float | None]]  # kind -> (caught, of, median delay)
    seconds: float

    @property
    def median(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    @property
    def p90(self) -> float | None:
        return _quantile(self.delays, 0.9)

    @property
    def healthy_share(self) -> float:
        return self.healthy_paused / self.healthy if self.healthy else 0.0


def _quantile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def score(name: str, path: Path, campaigns: list[Spec], workers: int) -> Score:
    started = time.perf_counter()
    with multiprocessing.Pool(workers, initializer=_load, initargs=(str(path),)) as pool:
        outcomes = pool.map(_simulate, campaigns, chunksize=16)
    delays, kinds = [], {}
    caught = missed = early = healthy_paused = 0
    for outcome in outcomes:
        if outcome.turn is None:
            healthy_paused += outcome.paused_after is not None
            continue
        caught_here = outcome.paused_after is not None and outcome.paused_after > outcome.turn
        kind_caught, kind_total, kind_delays = kinds.get(outcome.kind, (0, 0, []))
        if outcome.paused_after is None:
            missed += 1
        elif not caught_here:
            early += 1
        else:
            caught += 1
            delays.append(outcome.paused_after - outcome.turn)
            kind_delays = [*kind_delays, outcome.paused_after - outcome.turn]
        kinds[outcome.kind] = (kind_caught + caught_here, kind_total + 1, kind_delays)
    bad = sum(1 for spec in campaigns if spec.turn is not None)
    return Score(
        name,
        bad,
        caught,
        missed,
        early,
        delays,
        len(campaigns) - bad,
        healthy_paused,
        {k: (c, n, statistics.median(d) if d else None) for k, (c, n, d) in sorted(kinds.items())},
        time.perf_counter() - started,
    )


def table(scores: list[Score]) -> str:
    header = (
        "| rule set | bad paused after turn | missed | paused before turn | delay median (sends) | delay p90 "
        "| stale lists caught (median) | complaint lists caught (median) | healthy paused |"
    )
    lines = [header, "|" + "---|" * 9]
    for s in scores:
        kinds = []
        for kind in ("bounces", "complaints"):
            caught, total, median = s.by_kind.get(kind, (0, 0, None))
            kinds.append(f"{caught}/{total} ({_fmt(median)})")
        lines.append(
            f"| {s.name} | {s.caught}/{s.bad} | {s.missed} | {s.early} | {_fmt(s.median)} | {_fmt(s.p90)} "
            f"| {kinds[0]} | {kinds[1]} | {s.healthy_paused}/{s.healthy} ({s.healthy_share:.2%}) |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def verdict(scores: list[Score]) -> list[str]:
    shipped, baselines = scores[0], scores[1:]
    lines = [
        f"- target: median delay <= {TARGET_DELAY_SENDS} sends: {_fmt(shipped.median)} "
        f"({'met' if shipped.median is not None and shipped.median <= TARGET_DELAY_SENDS else 'missed'})",
        f"- target: healthy paused < {TARGET_HEALTHY_PAUSED:.1%}: {shipped.healthy_share:.2%} "
        f"({'met' if shipped.healthy_share < TARGET_HEALTHY_PAUSED else 'missed'})",
    ]
    for base in baselines:
        better_delay = base.median is None or (shipped.median is not None and shipped.median <= base.median)
        better_caught = shipped.caught >= base.caught
        better_healthy = shipped.healthy_share <= base.healthy_share
        lines.append(
            f"- vs {base.name}: catches {shipped.caught} vs {base.caught}, median delay {_fmt(shipped.median)} vs "
            f"{_fmt(base.median)}, healthy paused {shipped.healthy_share:.2%} vs {base.healthy_share:.2%}: "
            f"{'better on all' if better_delay and better_caught and better_healthy else 'not better on all'}"
        )
    return lines


GAP = """## Why the targets are hard here

- Sends are what a bounce rule can count. A stale list at 8-15% against healthy lists at up to 2%
  gives about 5-9 bounces in the first 60 bad sends, while a healthy campaign at 2% has thousands
  of sends in which to hit 5-9 bounces among 60 by chance: at 50,000 sends it will. Any detector
  that fires within 60 sends pauses more than 0.5% of healthy campaigns. Exploring the frontier
  (stale lists only, 600 healthy): raw rate over the last 100 sends at 8% caught 87/100 at a median
  of 72 sends but paused 4.5% of healthy ones; a CUSUM (2% vs 8%) reached a median of 62 sends at
  6% healthy paused, and 97 sends at 0.2%. The shipped Wilson bound over the last 150 sends sits
  on that frontier (about 120 sends, ~0.1-0.3% healthy paused).
- Complaint-heavy lists (0.3-1% against healthy 0.02-0.08%) produce one complaint per 100-300
  sends, arriving minutes to two days later: proving them takes thousands of sends, so they
  lift the overall median. AutoEmails- and Woodpecker-style rules ignore complaints altogether.
- Campaigns of 50-200 sends that turn late end before any rule can see enough: most "missed".
- The healthy campaigns paused (3 of 1,500): one by hard-bounce-rate (14 hard bounces in 150
  sends, at the campaign's 20,322nd send), two by gmail-complaint-rate at the end of campaigns of
  45,930 and 36,551 sends (9 in 1,243 and 11 in 2,430 Gmail sends): as sending tails off,
  complaints about the sends of the day before, up to two days late, land on the few sends still
  in the window. A 48 h window, or 99% confidence, still paused 2 (and caught 5-7 fewer complaint
  lists). A denominator that looks back as far as complaints lag would remove it; the rule
  language has one window per rule.
- Better than every baseline on both numbers at once is out of reach against Woodpecker-style
  rules by construction: their 2% line fires early on any list (57% of healthy campaigns, and
  285 bad ones before they turned), so the few bad campaigns they catch after the turn are
  caught within 46 sends. Against AutoEmails-style (188 caught, median 144, 0 healthy paused) and
  SES-style (48 caught, median 1,136, 2 healthy paused) the shipped rules catch more and sooner,
  at the price of 3 healthy campaigns of 1,500 paused (the two above, at the end of their sending,
  and one unlucky 150-send stretch).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=1500)
    parser.add_argument("--bad", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "QUALITY.md")
    args = parser.parse_args(argv)
    campaigns = specs(args.healthy, args.bad, args.seed)
    sends = sum(spec.sends for spec in campaigns)
    print(f"{len(campaigns)} campaigns ({args.bad} turn bad), {sends:,} sends, seed {args.seed}", flush=True)
    scores = []
    for name, path in RULE_SETS.items():
        scores.append(score(name, path, campaigns, args.workers))
        print(f"  {name}: {scores[-1].seconds:.0f} s", flush=True)
    report = "\n".join(
        [
            "# Decision quality",
            "",
            "Generated by `python -m bench.quality` (`make quality`); the workload is in the module docstring.",
            f"{len(campaigns)} campaigns ({args.bad} turn bad, half stale lists, half complaint-heavy), "
            f"{sends:,} sends, seed {args.seed}.",
            "",
            table(scores),
            "",
            *verdict(scores),
            "",
            GAP,
        ]
    )
    print(report)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
