"""The synthetic traffic generator: seeded, realistic, and honest about which campaigns turn."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from guard.cli import main
from guard.contracts.events import Signal, decode
from guard.tools.generate import expected_count, generate, plan, stream


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


class TestStreaming:
    @pytest.mark.parametrize("slice_events", [50_000, 1_000, 1], ids=["one-slice", "slices", "tiny-slices"])
    def test_the_stream_is_the_held_traffic_drawn_lazily(self, slice_events: int) -> None:
        """`stream` yields exactly `generate`'s records in the same order, however it slices event time."""
        specs = plan(7, 15, 3)
        records = stream(specs, 7, slice_events)
        assert next(records) == generate(7, 15, 3).records[0]
        assert (next(records), *records) == generate(7, 15, 3).records[1:]

    def test_the_expected_count_is_within_a_percent(self) -> None:
        """The count said up front comes from the plan alone and lands close to what is drawn."""
        for seed, campaigns, bad in ((1, 40, 5), (2, 12, 12), (3, 3, 0)):
            drawn = len(generate(seed, campaigns, bad).records)
            assert abs(expected_count(plan(seed, campaigns, bad)) - drawn) < 0.01 * drawn

    def test_the_cli_says_the_count_before_the_events_and_the_exact_count_after(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`guard generate` writes the stream as JSONL, announcing about how many events first."""
        out = tmp_path / "traffic.jsonl"
        assert main(["generate", str(out), "--seed", "4", "--campaigns", "6", "--bad", "1"]) == 0
        first, last = capsys.readouterr().err.splitlines()
        records = generate(4, 6, 1).records
        assert out.read_bytes() == b"".join(record.value + b"\n" for record in records)
        assert first == f"writing about {expected_count(plan(4, 6, 1))} events to {out}"
        assert last.startswith(f"{len(records)} events for 6 campaigns; turning bad: camp_4")

    def test_senders_name_a_domain_per_campaign_for_domain_rules(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--senders 3`: every event names one of three sending domains, a campaign always the same one."""
        out = tmp_path / "traffic.jsonl"
        assert main(["generate", str(out), "--campaigns", "6", "--bad", "1", "--senders", "3"]) == 0
        domains: dict[str, set[str]] = {}
        for line in out.read_bytes().splitlines():
            event = decode(line, 2e9)
            domains.setdefault(event.campaign_id, set()).add(event.sender_domain or "")
        assert all(len(named) == 1 for named in domains.values())
        assert set().union(*domains.values()) == {f"sender{n}.example" for n in range(3)}
        assert main(["generate", str(out), "--senders", "-1"]) == 2
        assert capsys.readouterr().err.endswith("guard: --senders must be 0 or more, got -1\n")

    @pytest.mark.parametrize("duration", ["nan", "inf", "0", "-5"])
    def test_a_duration_that_is_no_positive_number_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], duration: str
    ) -> None:
        assert main(["generate", str(tmp_path / "out.jsonl"), "--campaigns", "4", "--duration", duration]) == 2
        assert capsys.readouterr().err == f"guard: --duration must be a number of seconds above 0, got {duration}\n"
        assert not (tmp_path / "out.jsonl").exists()
