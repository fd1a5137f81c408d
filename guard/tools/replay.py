"""`guard replay`: run the rules over a history and report what they would have done, without
calling any API. The same Engine as `guard run`; decisions come out sorted and deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import math
import queue
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC
from functools import partial
from pathlib import Path

from guard.actions.audit import audit_event
from guard.contracts.events import Event, in_workspace
from guard.engine import Decision, Engine, decide, decode_records, scopes_beside
from guard.engine.engine import DEFAULT_DEDUPE_HORIZON
from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.engine.kinds import PYTHON, Kinds
from guard.rules import RuleSet
from guard.runtime.kafka import PROBE_SECONDS, reach
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import read_topic
from guard.tools.outcomes import compared, outcome_of

_REPLAY_SOURCE = "this replay (--workspace, GUARD_TOPIC_WORKSPACES)"
# A line's record time when replaying files: none, so a line without a timestamp is malformed.
NO_RECORD_TIME = math.nan


@dataclass
class ReplayResult:
    decisions: list[Decision] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def jsonl_records(source: str) -> Iterator[tuple[bytes, float]]:
    """Lines of a JSONL source: a path (gzip detected by its magic bytes) or '-' for stdin."""
    with contextlib.ExitStack() as stack:
        raw = sys.stdin.buffer if source == "-" else stack.enter_context(open(source, "rb"))
        stream = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw  # type: ignore[arg-type]
        if stream.peek(2)[:2] == b"\x1f\x8b":
            stream = stack.enter_context(gzip.GzipFile(fileobj=stream))  # type: ignore[assignment]
        for line in stream:
            line = line.strip()
            if line:
                yield line, NO_RECORD_TIME


def replay(
    records: Iterable[tuple[bytes, float]],
    rules: RuleSet,
    *,
    on_event: Callable[[Engine, Event], None] | None = None,
    progress: Callable[[int], None] | None = None,
    dedupe_horizon: float = DEFAULT_DEDUPE_HORIZON,
    resume_grace: float = DEFAULT_RESUME_GRACE,
    since: float | None = None,
    until: float | None = None,
    workspace: str | None = None,
    kinds: Kinds = PYTHON,
) -> ReplayResult:
    """Feed (value, record time) pairs through one Engine (and the rules over scopes through one engine of scopes
    beside it: guard.engine.scopes); `on_event(engine, event)` may read the
    engine after each counted event (the report's timelines do). The engine settings are the live
    guard's (GUARD_DEDUPE_HORIZON, GUARD_RESUME_GRACE, and GUARD_ENGINE's series as `kinds`). Events
    outside [since, until] (event time) are skipped, as if the history began and ended there. With
    `workspace`, events that name no workspace are in it, and those naming another are malformed, as
    `guard run` does with a topic of GUARD_TOPIC_WORKSPACES."""
    engine = Engine(rules, dedupe_horizon, resume_grace, kinds=kinds)
    result = ReplayResult()
    counts = result.counts
    assign = None if workspace is None else partial(in_workspace, workspace_id=workspace, source=_REPLAY_SOURCE)

    def within(events: Iterable[Event]) -> Iterator[Event]:
        for event in events:
            if (since is not None and event.time < since) or (until is not None and event.time > until):
                counts["outside"] += 1
            else:
                counts["events"] += 1
                yield event

    scopes = scopes_beside(rules, engine)  # rules over a sender, domain or workspace, counted beside it
    for event, decisions in decide(
        engine, within(decode_records(_reporting(records, progress), counts, assign, kinds.decode)), scopes
    ):
        result.decisions.extend(decisions)
        if on_event is not None:
            on_event(engine, event)
    counts["duplicates"], counts["late"] = engine.stats.duplicates, engine.stats.late
    result.decisions.sort(key=lambda d: (d.fired_at, d.campaign_id, d.rule.name))
    return result


def _reporting(
    records: Iterable[tuple[bytes, float]], progress: Callable[[int], None] | None
) -> Iterable[tuple[bytes, float]]:
    """The records, calling `progress(10_000)` every 10,000 of them."""
    if progress is None:
        return records

    def reported() -> Iterator[tuple[bytes, float]]:
        for number, record in enumerate(records, 1):
            if number % 10_000 == 0:
                progress(10_000)
            yield record

    return reported()


def decisions_json(decisions: Iterable[Decision]) -> str:
    """JSON lines in the audit event shape (outcome `fired`), byte-identical across runs."""
    lines = []
    for decision in decisions:
        event = audit_event(decision, "fired", decided_at=decision.fired_at, dry_run=True)
        lines.append(json.dumps(event.model_dump(mode="json"), sort_keys=True, separators=(",", ":")))
    return "".join(line + "\n" for line in lines)


def decisions_table(decisions: list[Decision]) -> str:
    """A readable table: campaign, rule, action and what became of it (paused: a pause call;
    already_paused: covered by another rule's pause moments before, no call; recorded: an alert),
    fired at, the value, the value compared with the threshold (the Wilson lower bound where the
    rule sets `confidence`), the threshold, the evidence and where it starts, and the episode
    judged (since the campaign's start or resume; `-`: all of its history seen)."""
    from datetime import datetime

    def utc(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")

    header = (
        "CAMPAIGN", "RULE", "ACTION", "OUTCOME", "FIRED AT (UTC)", "VALUE", "COMPARED", "THRESHOLD", "EVIDENCE",
        "FROM", "EPISODE",
    )  # fmt: skip
    scoped = any(d.scope is not None for d in decisions)  # the scope whose evidence it is, for rules over one
    header += ("SCOPE",) if scoped else ()
    rows = [header]
    for d in decisions:
        began, since = d.episode_began, d.episode_from
        episode = f"{began} {utc(since)}" if began is not None and since is not None else "-"
        bound = bound_label(d)
        rows.append(
            (
                d.campaign_id,
                d.rule.name,
                d.rule.action,
                outcome_of(d),
                utc(d.fired_at),
                *value_compared_threshold_evidence(d, bound),
                utc(d.evidence_from),
                episode,
                *((d.scope or "-",) if scoped else ()),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "".join(line + "\n" for line in lines)


def outcome_counts(decisions: Iterable[Decision]) -> str:
    """`3 pause calls, 7 already paused, 2 alerts`: what the decisions would have done."""
    counts = Counter(outcome_of(d) for d in decisions)
    return (
        f"{counts['paused']} pause calls, {counts['already_paused']} already paused "
        f"(covered by an earlier pause, no call), {counts['recorded']} alerts"
    )


def bound_label(d: Decision) -> str:
    """` (95% bound)` after a compared value that is the Wilson bound, else nothing."""
    return f" ({d.rule.confidence:.1%} bound)".replace(".0% bound", "% bound") if d.lower_bound is not None else ""


def value_compared_threshold_evidence(d: Decision, bound: str) -> tuple[str, str, str, str]:
    """A rate as percentages, a count as numbers, a cusum as its statistic against its alarm level
    (nats) with the `of`/`per` events since it last rose from zero; the compared value is the
    Wilson bound where the rule has `confidence`."""
    if d.rule.cusum is not None:
        statistic = f"{d.value:.2f}"
        return statistic, statistic, f"{d.rule.level:.2f} (cusum)", f"{d.numerator}/{d.denominator} since rise"
    if d.denominator is not None:
        return f"{d.value:.2%}", f"{compared(d):.2%}{bound}", f"{d.rule.level:.2%}", f"{d.numerator}/{d.denominator}"
    return f"{d.value:g}", f"{d.value:g}", f"{d.rule.level:g}", f"{d.numerator} events"


_SPOOL_HEADER = struct.Struct("<Id")  # value length, record time


def spool(records: Iterable[tuple[bytes, float]], path: Path) -> Iterator[tuple[bytes, float]]:
    """Pass records through while keeping an exact copy, so a one-shot source can be read twice."""
    with open(path, "wb") as copy:
        for value, record_time in records:
            copy.write(_SPOOL_HEADER.pack(len(value), record_time))
            copy.write(value)
            yield value, record_time


def read_spool(path: Path) -> Iterator[tuple[bytes, float]]:
    with open(path, "rb") as copy:
        while header := copy.read(_SPOOL_HEADER.size):
            length, record_time = _SPOOL_HEADER.unpack(header)
            yield copy.read(length), record_time


def kafka_records(
    settings: KafkaSettings, topic: str, since_ms: int, until_ms: int | None
) -> Iterator[tuple[bytes, float]]:
    """Records of every partition of `topic` with record time in [since, until], read up to the end
    the topic had when reading started. A thread runs the consumer; a bounded queue feeds the caller."""
    batches: queue.Queue[list[tuple[bytes, float]] | BaseException | None] = queue.Queue(maxsize=8)

    async def read() -> None:
        await reach(settings, PROBE_SECONDS)  # a broker that refuses or never answers: one line within seconds
        async with aclosing(read_topic(settings, topic, since_ms, until_ms)) as reader:
            async for records in reader:
                batches.put([(record.value, record.timestamp / 1000) for record in records if record.value is not None])

    def run() -> None:
        try:
            asyncio.run(read())
            batches.put(None)
        except BaseException as error:  # handed to the caller's thread
            batches.put(error)

    reader = threading.Thread(target=run, name="replay-reader", daemon=True)
    reader.start()
    while (batch := batches.get()) is not None:
        if isinstance(batch, BaseException):
            raise batch
        yield from batch
    reader.join()
