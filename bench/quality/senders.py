"""Many small campaigns on one sending domain: a stale list split over campaigns too small for their own rules
to judge most of them, together over the provider's line, beside healthy domains.

Workload (seeded): sending domains, each with 40-100 campaigns of 30-190 sends (log-uniform) over the domain's 1
or 2 business days (8 hours a day). Each campaign sends from one of its domain's 3-10 mailboxes
(`sender_account_id`; `sender_domain` is the domain of `data.from`), from a random business hour of the domain's
days over 1-8 hours, in bursts (hourly volumes drawn from a gamma distribution, as in campaigns.py), so the
campaigns of a domain interleave in event time. Each campaign's rates are drawn as a healthy campaign's in
campaigns.py: 0.5-2% hard bounces, 0.02-0.08% complaints, 1-3% soft bounces, 0.2-1% unsubscribes, 40% Gmail
recipients; outcomes arrive as there (bounces 2-90 s after their send, complaints 5 minutes to 2 days, each
quoting its send's message id). Healthy domains stay so. A burning domain turns at a random send between 20% and
80% of its pooled volume: from that send's time every campaign of the domain sends to a stale list at its own
8-15% hard bounces (one bought or scraped list split over the campaigns), those that start later included.

Each domain streams through one engine of campaigns and one of scopes beside it (`guard.engine.decide` with
`scopes_beside`, as `guard replay` runs them). A paused campaign starts no new send (its mail in flight still
bounces); the others of its domain go on. Scored per rule set:

- per burning domain, its first pause by a scope rule after its turn (caught), before it (early) or never
  (missed); the delay from the turn to that pause in the domain's pooled sends made after the turn, and in
  minutes of event time;
- the share of healthy domains with any campaign paused by a scope rule (and by any rule);
- whether every campaign of a caught domain that still had mail to send after the scope pause was paused,
  and the sends the domain made after its scope pause;
- the burning campaigns (those with sends after the turn) paused by the campaign rules on their own.

The bound: a domain's pooled sends are Bernoulli trials at its pooled rates (sends-weighted over its campaigns:
randomly interleaved, each send is a draw from the mixture), so the optimal CUSUM's delay at a false-alarm rate
(bounds.py) applies to them as to one campaign's sends, at the ARL0 that pauses the measured share of healthy
domains, sized by their pooled sends.

    python -m bench.quality --only senders [--healthy-domains 400] [--burning-domains 100] [--seed 1] [--workers 1]
"""

from __future__ import annotations

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

from bench.quality.bounds import average_run_to_false_alarm, optimal_delay
from bench.quality.campaigns import DAY, HOUR, Profile
from guard.contracts.events import Event, Signal
from guard.engine import Engine, decide, scopes_beside
from guard.rules import Rule, RuleSet
from guard.rules.loader import parse_rules, read_rule_file

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = ROOT / "rules" / "default.yaml"
DOMAIN_RULES = ROOT / "rules" / "domains" / "sender-domain.yaml"
SENDER_RULE_SETS: dict[str, tuple[Path, ...]] = {
    "sender-domain.yaml beside default.yaml": (DEFAULT_RULES, DOMAIN_RULES),
    "default.yaml alone": (DEFAULT_RULES,),
}
HEALTHY_AT_MOST = 0.02  # the worst healthy list, as the campaign rules assume


@dataclass(frozen=True, slots=True)
class Domain:
    """A sending domain as drawn: `plan` expands it into its campaigns, deterministically."""

    name: str
    seed: int
    burning: bool


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    sender: str  # the mailbox it sends from
    seed: int  # of its outcomes
    times: tuple[float, ...]  # its send times, in order
    healthy: Profile
    bad: Profile | None = None  # its rates from the domain's turn on (burning domains)


@dataclass(frozen=True, slots=True)
class Plan:
    """A domain's campaigns, and when it turns (the time of its turning send; None: healthy)."""

    name: str
    campaigns: tuple[Campaign, ...]
    turn: float | None = None


@dataclass(frozen=True, slots=True)
class DomainOutcome:
    name: str
    burning: bool
    campaigns: int
    sends: int  # planned over all its campaigns
    healthy_rate: float  # pooled hard-bounce rate before the turn (sends-weighted)
    bad_rate: float | None  # pooled hard-bounce rate after the turn
    planned_after_turn: int
    turn: float | None
    scope_paused_at: float | None = None  # its first pause by a scope rule
    scope_rule: str | None = None
    delay: int | None = None  # pooled sends made from the turn until that pause
    made_after_turn: int = 0  # pooled sends made from the turn on, in all
    made_after_scope_pause: int = 0
    still_sending: int = 0  # campaigns with sends planned after the scope pause
    still_sending_paused: int = 0  # ...of which paused by their first send after it
    scope_firings: int = 0  # the scope rules' decisions for the domain (each turned into one per campaign)
    hour_before: int = 0  # pooled sends planned in the hour before the turn
    bad_campaigns: int = 0  # campaigns with sends planned from the turn on
    bad_paused_alone: int = 0  # ...of which paused after the turn by a campaign rule before any scope rule
    paused_by_scope: int = 0  # campaigns paused by a scope rule
    paused: int = 0  # campaigns paused by any rule

    @property
    def caught(self) -> bool:
        return self.turn is not None and self.scope_paused_at is not None and self.scope_paused_at >= self.turn

    @property
    def early(self) -> bool:
        return self.turn is not None and self.scope_paused_at is not None and self.scope_paused_at < self.turn

    @property
    def minutes(self) -> float | None:
        if not self.caught:
            return None
        assert self.scope_paused_at is not None and self.turn is not None
        return (self.scope_paused_at - self.turn) / 60


def domains(healthy: int, burning: int, seed: int) -> list[Domain]:
    """The domains, burning ones spread among the healthy."""
    rng = random.Random(seed)
    total = healthy + burning
    burning_at = set(rng.sample(range(total), burning))
    return [Domain(f"d{number:04d}.example", rng.randrange(2**31), number in burning_at) for number in range(total)]


def _profile(rng: random.Random) -> Profile:
    """A healthy campaign's rates, drawn as in campaigns.specs."""
    return Profile(
        rng.uniform(0.005, 0.02), rng.uniform(0.01, 0.03), rng.uniform(0.0002, 0.0008), rng.uniform(0.002, 0.01)
    )


def _at(hour: int, rng: random.Random) -> float:
    """A moment in the `hour`th business hour (8 a day, from 8:00)."""
    return (hour // 8) * DAY + 8 * HOUR + (hour % 8) * HOUR + rng.uniform(0, HOUR)


def plan(domain: Domain) -> Plan:
    rng = random.Random(domain.seed)
    hours = 8 * rng.choice((1, 2))
    senders = [f"{domain.name}/box{number}" for number in range(rng.randint(3, 10))]
    drawn = []
    for number in range(rng.randint(40, 100)):
        sends = int(math.exp(rng.uniform(math.log(30), math.log(190))))
        start = rng.randrange(hours)
        span = min(rng.randint(1, 8), hours - start)
        burstiness = rng.uniform(0.3, 3.0)
        weights = [rng.gammavariate(burstiness, 1.0) for _ in range(span)]
        slots = rng.choices(range(start, start + span), weights=weights, k=sends)
        times = tuple(sorted(_at(slot, rng) for slot in slots))
        healthy = _profile(rng)
        bad = Profile(rng.uniform(0.08, 0.15), healthy.soft, healthy.complaint, healthy.unsubscribe)
        name, sender = f"{domain.name}-c{number:03d}", rng.choice(senders)
        drawn.append(Campaign(name, sender, rng.randrange(2**31), times, healthy, bad if domain.burning else None))
    if not domain.burning:
        return Plan(domain.name, tuple(drawn))
    pooled = sorted(at for campaign in drawn for at in campaign.times)
    return Plan(domain.name, tuple(drawn), pooled[int(len(pooled) * rng.uniform(0.2, 0.8))])


def _events(domain: str, campaign: Campaign, turn: float | None) -> list[tuple[float, int, float, Event]]:
    """Every event of a campaign: (event time, order, its send's time, event), as campaigns.events draws them."""
    rng = random.Random(campaign.seed)
    cid, sender, result = campaign.campaign_id, campaign.sender, []
    for number, at in enumerate(campaign.times):
        profile = campaign.bad if campaign.bad is not None and turn is not None and at >= turn else campaign.healthy
        recipient = "gmail.com" if rng.random() < 0.4 else "outlook.com"
        mid, order = f"{cid}-{number}", number * 4
        result.append(
            (at, order, at, Event(Signal.SENT, cid, at, mid, recipient, None, None, None, sender, None, domain))
        )
        draw = rng.random()
        if draw < profile.hard:
            later = at + rng.uniform(2, 90)
            event = Event(Signal.BOUNCED, cid, later, mid, recipient, "hard", "5.1.1", None, sender, None, domain)
            result.append((later, order + 1, at, event))
        elif draw < profile.hard + profile.soft:
            later = at + rng.uniform(60, 900)
            event = Event(Signal.BOUNCED, cid, later, mid, recipient, "soft", "4.2.2", None, sender, None, domain)
            result.append((later, order + 1, at, event))
        elif rng.random() < profile.complaint:
            later = at + min(2 * DAY, max(300.0, rng.lognormvariate(math.log(2 * HOUR), 1.2)))
            event = Event(Signal.COMPLAINED, cid, later, mid, recipient, None, None, None, sender, None, domain)
            result.append((later, order + 2, at, event))
        elif rng.random() < profile.unsubscribe:
            later = at + rng.uniform(HOUR, DAY)
            event = Event(Signal.UNSUBSCRIBED, cid, later, mid, recipient, None, None, None, sender, None, domain)
            result.append((later, order + 3, at, event))
    return result


def _pooled_rate(pairs: list[tuple[int, float]]) -> float:
    sends = sum(n for n, _ in pairs)
    return sum(n * rate for n, rate in pairs) / sends if sends else 0.0


def simulate(domain: Plan, rules: RuleSet) -> DomainOutcome:
    """Stream the domain's campaigns, interleaved in event time, through an engine of campaigns and one of
    scopes beside it; a paused campaign starts no new send."""
    turn = domain.turn
    merged: list[tuple[float, int, int, float, Event]] = []
    for number, campaign in enumerate(domain.campaigns):
        merged += [(at, number, order, sent, event) for at, order, sent, event in _events(domain.name, campaign, turn)]
    heapq.heapify(merged)
    paused: dict[str, float] = {}  # campaign -> when its first pause fired
    by_scope: set[str] = set()
    made_after_turn = made_after_pause = 0
    scope_paused_at: float | None = None
    scope_rule: str | None = None
    delay: int | None = None
    bad_paused_alone = 0
    firings: set[str | None] = set()

    def stream() -> Iterator[Event]:
        nonlocal made_after_turn, made_after_pause
        while merged:
            _, _, _, sent, event = heapq.heappop(merged)
            stopped = paused.get(event.campaign_id)
            if stopped is not None and sent > stopped:
                continue  # never sent: its campaign was paused before
            if event.signal is Signal.SENT:
                made_after_turn += turn is not None and sent >= turn
                made_after_pause += scope_paused_at is not None and sent > scope_paused_at
            yield event

    engine = Engine(rules)
    for _, decisions in decide(engine, stream(), scopes_beside(rules, engine)):
        for decision in decisions:
            if decision.action != "pause":
                continue
            if decision.scope is not None:
                by_scope.add(decision.campaign_id)
                firings.add(decision.scope_decision_id)
                if scope_paused_at is None:
                    scope_paused_at, scope_rule, delay = decision.fired_at, decision.rule.name, made_after_turn
            if decision.campaign_id not in paused:
                paused[decision.campaign_id] = decision.fired_at
                if (
                    decision.scope is None
                    and turn is not None
                    and decision.fired_at >= turn
                    and scope_paused_at is None
                ):
                    bad_paused_alone += 1
    # each campaign with mail to send after the scope pause, and whether it was paused by its first send after it
    with_the_domain = []
    if scope_paused_at is not None:
        for c in domain.campaigns:
            later = bisect.bisect_right(c.times, scope_paused_at)
            if later < len(c.times):
                with_the_domain.append(c.campaign_id in paused and paused[c.campaign_id] <= c.times[later])
    bad = [c for c in domain.campaigns if turn is not None and c.times and c.times[-1] >= turn]
    return DomainOutcome(
        name=domain.name,
        burning=turn is not None,
        campaigns=len(domain.campaigns),
        sends=sum(len(c.times) for c in domain.campaigns),
        healthy_rate=_pooled_rate(
            [(sum(1 for at in c.times if turn is None or at < turn), c.healthy.hard) for c in domain.campaigns]
        ),
        bad_rate=None
        if turn is None
        else _pooled_rate(
            [
                (sum(1 for at in c.times if at >= turn), c.bad.hard if c.bad else c.healthy.hard)
                for c in domain.campaigns
            ]
        ),
        planned_after_turn=0 if turn is None else sum(1 for c in domain.campaigns for at in c.times if at >= turn),
        turn=turn,
        scope_paused_at=scope_paused_at,
        scope_rule=scope_rule,
        delay=delay,
        made_after_turn=made_after_turn,
        made_after_scope_pause=made_after_pause,
        still_sending=len(with_the_domain),
        still_sending_paused=sum(with_the_domain),
        scope_firings=len(firings),
        hour_before=0
        if turn is None
        else sum(1 for c in domain.campaigns for at in c.times if turn - HOUR <= at < turn),
        bad_campaigns=len(bad),
        bad_paused_alone=bad_paused_alone,
        paused_by_scope=len(by_scope),
        paused=len(paused),
    )


def load(paths: tuple[Path, ...]) -> RuleSet:
    """The rule files as one rule set, as the guard loads a directory holding them."""
    return parse_rules([(str(path), read_rule_file(path)) for path in paths])


_rules: RuleSet | None = None


def _load(paths: tuple[Path, ...]) -> None:
    global _rules
    _rules = load(paths)


def _simulate(domain: Domain) -> DomainOutcome:
    assert _rules is not None
    return simulate(plan(domain), _rules)


@dataclass(frozen=True)
class SenderScore:
    name: str
    outcomes: list[DomainOutcome]
    seconds: float = 0.0

    @property
    def burning(self) -> list[DomainOutcome]:
        return [o for o in self.outcomes if o.burning]

    @property
    def healthy(self) -> list[DomainOutcome]:
        return [o for o in self.outcomes if not o.burning]

    @property
    def caught(self) -> list[DomainOutcome]:
        return [o for o in self.burning if o.caught]

    @property
    def early(self) -> int:
        return sum(o.early for o in self.burning)

    @property
    def missed(self) -> int:
        return sum(o.scope_paused_at is None for o in self.burning)

    @property
    def delays(self) -> list[int]:
        return [o.delay for o in self.caught if o.delay is not None]

    @property
    def minutes(self) -> list[float]:
        return [o.minutes for o in self.caught if o.minutes is not None]

    @property
    def healthy_scope_paused(self) -> int:
        return sum(o.paused_by_scope > 0 for o in self.healthy)

    @property
    def healthy_paused(self) -> int:
        return sum(o.paused > 0 for o in self.healthy)

    @property
    def healthy_share(self) -> float:
        """Healthy domains with any campaign paused by a scope rule."""
        return self.healthy_scope_paused / len(self.healthy) if self.healthy else 0.0

    @property
    def complete(self) -> int:
        """Caught domains whose every campaign with mail to send after the scope pause was paused."""
        return sum(o.still_sending_paused == o.still_sending for o in self.caught)


def score_senders(name: str, paths: tuple[Path, ...], domains: list[Domain], workers: int) -> SenderScore:
    started = time.perf_counter()
    if workers <= 1:
        _load(paths)
        outcomes = [_simulate(domain) for domain in domains]
    else:
        with multiprocessing.Pool(workers, initializer=_load, initargs=(paths,)) as pool:
            outcomes = pool.map(_simulate, domains, chunksize=4)
    return SenderScore(name, outcomes, time.perf_counter() - started)


def pooled_bound(
    outcomes: list[DomainOutcome], share: float, healthy_rate: float | None, arl: float | None = None
) -> float | None:
    """The median over burning domains of the optimal CUSUM's delay on their pooled sends, at the ARL0 that
    pauses `share` of the healthy domains (sized by their pooled sends) or at `arl` when given, for the domains
    sending at least that long after their turn: knowing each domain's pooled healthy rate (`healthy_rate`
    None), or only that it is at most `healthy_rate`."""
    arl = arl or average_run_to_false_alarm([o.sends for o in outcomes if not o.burning], share)
    delays = []
    for outcome in outcomes:
        if outcome.bad_rate is None:
            continue
        delay = optimal_delay(outcome.healthy_rate if healthy_rate is None else healthy_rate, outcome.bad_rate, arl)
        if outcome.planned_after_turn >= delay:
            delays.append(delay)
    return statistics.median(delays) if delays else None


def budgeted_cusum(paths: tuple[Path, ...]) -> Rule | None:
    """The first scope rule of the files that pauses on a cusum: its false-alarm budget is stated for a
    scope's whole life (no campaign's start restarts a scope's statistic), far beyond this workload's days."""
    return next((r for r in load(paths).rules if r.scope != "campaign" and r.cusum and r.action == "pause"), None)


def _budget_line(outcomes: list[DomainOutcome], rule: Rule | None) -> list[str]:
    """The bound at the false-alarm budget `rule` (a scope cusum) was built for, as a line of the report."""
    if rule is None or rule.cusum is None:
        return []
    cusum = rule.cusum
    arl = cusum.campaign_size / -math.log1p(-cusum.false_alarms)
    return [
        f"- at {rule.name}'s own budget, {cusum.false_alarms:.0%} of domains of {cusum.campaign_size:,} sends at "
        f"{cusum.healthy:.0%} (an average run to a false alarm of {arl:.3g} sends), the bound is "
        f"{_fmt(pooled_bound(outcomes, 0, None, arl))} sends knowing each domain's pooled healthy rate, "
        f"{_fmt(pooled_bound(outcomes, 0, HEALTHY_AT_MOST, arl))} knowing only that it is at most {HEALTHY_AT_MOST:.0%}"
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _median(values: list[float] | list[int]) -> float | None:
    return statistics.median(values) if values else None


def _p90(values: list[float] | list[int]) -> float | None:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]) if ordered else None


def senders_table(scores: list[SenderScore]) -> str:
    lines = [
        "| rule set | burning domains paused after turn | missed | paused before turn "
        "| delay median (pooled sends) | delay p90 | delay median (minutes) | healthy domains paused by a scope rule "
        "| healthy domains paused by any rule | caught domains with every campaign paused "
        "| burning campaigns paused alone | pooled sends after turn (median) |",
        "|" + "---|" * 12,
    ]
    for s in scores:
        burning, healthy = s.burning, s.healthy
        bad = sum(o.bad_campaigns for o in burning)
        alone = sum(o.bad_paused_alone for o in burning)
        lines.append(
            f"| {s.name} | {len(s.caught)}/{len(burning)} | {s.missed} | {s.early} | {_fmt(_median(s.delays))} "
            f"| {_fmt(_p90(s.delays))} | {_fmt(_median(s.minutes), 1)} "
            f"| {s.healthy_scope_paused}/{len(healthy)} ({s.healthy_share:.2%}) "
            f"| {s.healthy_paused}/{len(healthy)} | {s.complete}/{len(s.caught)} | {alone}/{bad} "
            f"| {_fmt(_median([o.made_after_turn for o in burning]))} |"
        )
    return "\n".join(lines)


def senders_section(
    scores: list[SenderScore], command: str, seed: int, spliced: bool, cusum: Rule | None = None
) -> str:
    """bench/QUALITY.md's section on the scenario: the table, the bound, and what the numbers say."""
    scoped, alone = scores[0], scores[-1]
    outcomes, burning, healthy, caught = scoped.outcomes, scoped.burning, scoped.healthy, scoped.caught
    floor = 0.5 / len(healthy) if healthy else 0.0
    share = max(scoped.healthy_share, floor)
    own, fixed = pooled_bound(outcomes, share, None), pooled_bound(outcomes, share, HEALTHY_AT_MOST)
    median = _median(scoped.delays)
    ratio = median / own if median is not None and own else None
    first: dict[str, int] = {}
    for o in caught:
        if o.scope_rule is not None:
            first[o.scope_rule] = first.get(o.scope_rule, 0) + 1
    leaks = [o for o in caught if o.still_sending_paused < o.still_sending]
    missed = [o.planned_after_turn for o in burning if o.scope_paused_at is None]
    pairs = [(o.hour_before, o.delay) for o in caught if o.delay is not None]
    related = (
        statistics.correlation([x for x, _ in pairs], [y for _, y in pairs])
        if len(pairs) > 2 and len({x for x, _ in pairs}) > 1 and len({y for _, y in pairs}) > 1
        else None
    )
    how = (
        f"Spliced into this file by `{command}`; the sections above are from the full run, unchanged."
        if spliced
        else f"Generated by `{command}` with the sections above."
    )
    bad_campaigns = sum(o.bad_campaigns for o in burning)
    lines = [
        "## Many small campaigns on one sending domain",
        "",
        f"{how} The workload is in bench/quality/senders.py's docstring: {len(outcomes)} sending domains "
        f"({len(burning)} burning, {len(healthy)} healthy), {sum(o.campaigns for o in outcomes):,} campaigns of "
        f"30-190 sends ({bad_campaigns:,} of burning domains sending "
        f"after their turn), {sum(o.sends for o in outcomes):,} sends planned, seed {seed}. Scored with "
        "rules/domains/sender-domain.yaml beside rules/default.yaml, and with rules/default.yaml alone. A scope "
        "pause is a pause decision of a rule with `scope: sender_domain`; a burning domain is caught when its first "
        "one comes after its turn. Delays count the domain's pooled sends made from its turn to that pause. A "
        "caught domain has every campaign paused when each of its campaigns with mail to send after the scope "
        "pause was paused by its first send after it. Burning campaigns paused alone: paused after the turn by a "
        "campaign rule, before any scope pause.",
        "",
        senders_table(scores),
        "",
        f"- rules that paused the caught domains first: "
        f"{', '.join(f'{rule} {n}' for rule, n in sorted(first.items())) or 'none'}",
        f"- the bound for the pooled rate, at {share:.2%} of healthy domains paused"
        f"{f' (none was: taken as half a domain in {len(healthy)})' if scoped.healthy_scope_paused == 0 else ''}: "
        f"the optimal CUSUM on a domain's pooled sends needs a median of {_fmt(own)} sends after the turn knowing "
        f"each domain's pooled healthy rate, {_fmt(fixed)} knowing only that it is at most {HEALTHY_AT_MOST:.0%}; "
        f"the scope rules take {_fmt(median)} ({'x' + format(ratio, '.2f') if ratio else '-'} the first)",
        *_budget_line(outcomes, cusum),
        f"- in event time, a median of {_fmt(_median(scoped.minutes), 1)} minutes from the turn to the scope pause; "
        "the delay in sends against the domain's pooled sends in the hour before the turn (a window's rate is "
        f"diluted by them, a cusum's statistic is not): correlation {_fmt(related, 2)}",
        f"- after the scope pause: a median of {_fmt(_median([o.made_after_scope_pause for o in caught]))} pooled "
        f"sends made by a caught domain; {len(leaks)} of {len(caught)} caught domains had campaigns that were not "
        "paused by their first send after it"
        + (
            f" ({sum(o.still_sending - o.still_sending_paused for o in leaks)} campaigns; those domains made "
            f"{sum(o.made_after_scope_pause for o in leaks):,} sends after their scope pause, and the scope rules "
            f"fired again for {sum(o.scope_firings > 1 for o in leaks)} of them). A campaign joining while the rule "
            "fires is paused at its first send; once the rule has stopped firing (its `keep_firing_for` over), a "
            "campaign that starts sends until the rule fires anew, which its cooldown delays"
            if leaks
            else ""
        ),
        f"- missed burning domains: {len(missed)}"
        + (f", with a median of {_fmt(_median(missed))} pooled sends planned after their turn" if missed else ""),
        f"- {alone.name}: {sum(o.bad_paused_alone for o in alone.burning)} of "
        f"{sum(o.bad_campaigns for o in alone.burning)} burning campaigns paused, each on its own evidence, and no "
        f"domain stopped; a median of {_fmt(_median([o.made_after_turn for o in alone.burning]))} pooled sends made "
        f"after the turn per burning domain, against {_fmt(_median([o.made_after_turn for o in burning]))} with the "
        "domain rules",
    ]
    return "\n".join(lines) + "\n"


def splice(report: str, section: str) -> str:
    """The report with its section on this scenario replaced by `section` (or `section` appended), the rest as
    it was."""
    heading = section.splitlines()[0]
    start = report.find(heading + "\n")
    if start < 0:
        return report.rstrip("\n") + "\n\n" + section
    end = report.find("\n## ", start + len(heading))
    return report[:start] + section + ("" if end < 0 else report[end:])
