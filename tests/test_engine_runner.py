"""The one decision-runner: records or events through an Engine, skipping what is no event alike everywhere."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from guard.engine import Engine, decide, decode_records, record_decisions
from guard.rules import load_rules
from guard.testing.events import bounced, sent

RULES = Path(__file__).parent.parent / "rules"
START = 1_767_225_600.0


def bouncing(campaign_id: str) -> list[bytes]:
    """A campaign whose sends bounce one in four: the shipped rules pause it."""
    values = []
    for n in range(200):
        values.append(sent(campaign_id, START + n))
        if n % 4 == 0:
            values.append(bounced(campaign_id, START + n + 0.5))
    return values


class TestDecodeRecords:
    def test_records_that_are_no_event_are_counted_not_raised(self) -> None:
        """Bad bytes and a missing time are malformed, an unknown event is ignored; the rest come through in order."""
        records = [
            (sent("camp_a", START), math.nan),
            (b"{not json", START),
            (b'{"event": "message.opened", "data": {"campaignId": "camp_a"}}', START),
            (b'{"event": "message.sent", "data": {"campaignId": "camp_a", "messageId": "m"}}', math.nan),
            (sent("camp_b", START + 1), START),
        ]
        skipped: Counter[str] = Counter()
        events = list(decode_records(records, skipped))
        assert [(event.campaign_id, event.time) for event in events] == [("camp_a", START), ("camp_b", START + 1)]
        assert skipped == Counter(malformed=2, ignored=1)


class TestRecordDecisions:
    def test_each_decision_comes_with_the_position_of_the_record_that_caused_it(self) -> None:
        """Positions count every record, skipped ones included, so they index the input."""
        values = [b"{not json", *bouncing("camp_a")]
        position, decision = next(record_decisions(Engine(load_rules(RULES)), ((v, START) for v in values)))
        assert decision.campaign_id == "camp_a" and decision.action == "pause"
        assert b"message.bounced" in values[position]
        before = list(record_decisions(Engine(load_rules(RULES)), ((v, START) for v in values[:position])))
        through = list(record_decisions(Engine(load_rules(RULES)), ((v, START) for v in values[: position + 1])))
        assert before == [] and [(p, d.id) for p, d in through] == [(position, decision.id)]

    def test_the_same_decisions_as_deciding_decoded_events(self) -> None:
        """Both ways through the engine agree: decode then decide, or decide on records."""
        values = bouncing("camp_a") + bouncing("camp_b")
        by_records = [d.id for _, d in record_decisions(Engine(load_rules(RULES)), ((v, START) for v in values))]
        events = decode_records((v, START) for v in values)
        by_events = [d.id for _, caused in decide(Engine(load_rules(RULES)), events) for d in caused]
        assert by_records == by_events and by_records


class TestDecide:
    def test_lazy_so_a_caller_can_stop_at_the_first_pause(self) -> None:
        """Events after the one that caused the first decision are never counted by the engine."""
        engine = Engine(load_rules(RULES))
        for _event, decisions in decide(engine, decode_records((v, START) for v in bouncing("camp_a"))):
            if decisions:
                break
        counted = engine.stats.events
        assert 0 < counted < len(bouncing("camp_a"))
