"""The synthetic traffic generator: seeded, realistic, and honest about which campaigns turn."""

from __future__ import annotations

import json
from collections import Counter

from guard.events import Signal, decode
from guard.generate import generate


def decoded(traffic):  # noqa: ANN001, ANN201
    return [decode(record.value, record.time) for record in traffic.records]


class TestGenerator:
    def test_the_same_seed_gives_the_same_bytes(self) -> None:
        """Seeded: tests, benchmarks and the demo can rely on the exact stream."""
        assert generate(seed=5, campaigns=10, bad=2).records == generate(seed=5, campaigns=10, bad=2).records
        assert generate(seed=5, campaigns=10, bad=2).records != generate(seed=6, campaigns=10, bad=2).records

    def test_events_are_in_event_time_order_and_decode(self) -> None:
        """Every record is a valid envelope keyed by its campaign, sorted by time."""
        traffic = generate(seed=1, campaigns=8, bad=2)
        events = decoded(traffic)
        assert [e.time for e in events] == sorted(e.time for e in events)
        assert all(record.key == event.campaign_id for record, event in zip(traffic.records, events, strict=True))

    def test_the_bad_campaigns_are_the_ones_that_turn(self) -> None:
        """Hard bounces jump after the turn for bounce-kind bad campaigns and stay low for healthy ones."""
        traffic = generate(seed=2, campaigns=12, bad=4, bad_kinds=("bounces",), sends=(3000, 4000))
        events = decoded(traffic)
        sends: Counter[tuple[str, bool]] = Counter()
        bounces: Counter[tuple[str, bool]] = Counter()
        for event in events:
            after = event.campaign_id in traffic.bad and event.time >= traffic.bad[event.campaign_id]
            if event.signal is Signal.SENT:
                sends[(event.campaign_id, after)] += 1
            elif event.signal is Signal.BOUNCED and event.bounce_type == "hard":
                bounces[(event.campaign_id, after)] += 1
        assert len(traffic.bad) == 4
        for campaign in traffic.bad:
            assert bounces[(campaign, True)] / sends[(campaign, True)] > 0.06
            assert bounces[(campaign, False)] / sends[(campaign, False)] < 0.03
        for campaign in traffic.healthy:
            assert bounces[(campaign, False)] / sends[(campaign, False)] < 0.03

    def test_recipients_mix_providers_and_bounces_carry_smtp_status(self) -> None:
        """Gmail is the largest provider; bounce reasons hold enhanced status codes."""
        events = decoded(generate(seed=3, campaigns=5, bad=1))
        domains = Counter(e.recipient_domain for e in events if e.signal is Signal.SENT)
        assert domains.most_common(1)[0][0] == "gmail.com"
        assert {"outlook.com", "yahoo.com"} <= set(domains)
        assert all(e.smtp_status for e in events if e.signal is Signal.BOUNCED)

    def test_every_kind_of_event_appears(self) -> None:
        """Sends, both bounce types, complaints, unsubscribes and campaign starts."""
        traffic = generate(seed=4, campaigns=20, bad=4, sends=(3000, 4000))
        kinds = Counter(json.loads(r.value)["event"] for r in traffic.records)
        assert set(kinds) == {
            "campaign.started",
            "message.sent",
            "message.bounced",
            "message.complained",
            "reply.received",
        }
