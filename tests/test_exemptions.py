"""Exemptions: `guard exempt` writes to the control topic of a real broker; the running guard
honours them, audits `exempted`, forgets them when they expire, and keeps them across a restart.
A control record is input: one that is malformed, oversized or under another key exempts nothing
and stops no pause."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_first_contact import strict_kafka  # noqa: F401  (fixture)
from test_service import (  # noqa: F401  (fixtures)
    RunGuard,
    Topics,
    audits,
    bad_campaign,
    produce,
    producer,
    read_topic,
    run_guard,
    topics,
    until,
)

from guard.actions.exemptions import MAX_EXEMPTIONS, MAX_VALUE_BYTES, Exemptions, new_exemption
from guard.cli import main
from guard.runtime import control
from guard.runtime.internal_topics import control_topic as control_topic_of
from guard.runtime.internal_topics import create_if_missing
from guard.runtime.service import Service
from guard.runtime.settings import KafkaSettings
from guard.telemetry.metrics import Metrics
from guard.testing.apache_kafka import ApacheKafka
from guard.testing.broker import BrokerInfo
from guard.testing.leadterra import LeadterraStandIn

# records as someone other than `guard exempt` may write them (all valid but for what each test changes)
VALID = {
    "id": "ex_0000000000a1",
    "campaigns": "camp_other",
    "rule": None,
    "reason": "seed test",
    "by": "ana",
    "created_at": "2026-01-01T00:00:00Z",
    "expires_at": "2026-01-02T00:00:00Z",
}
IN_FORCE = 1767261600.0  # 2026-01-01T10:00:00Z


@pytest.fixture
def control_topic(kafka_broker: BrokerInfo, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh control topic, and the environment `guard exempt` reads."""
    name = f"control-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("GUARD_CONTROL_TOPIC", name)
    if not kafka_broker.idempotence:
        monkeypatch.setenv("KAFKA_ENABLE_IDEMPOTENCE", "false")
    return name


async def guard_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def exempt(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`guard exempt ...`; the new exemption's id."""
    code, out, err = await guard_cli(capsys, "exempt", *args)
    assert code == 0, err
    made = re.search(r"^(ex_[0-9a-f]+): ", out, re.MULTILINE)
    assert made is not None, out
    return made[1]


def by_campaign(events: list[dict]) -> dict[str, list[str]]:
    outcomes: dict[str, list[str]] = {}
    for event in events:
        outcomes.setdefault(event["campaign_id"], []).append(event["outcome"])
    return outcomes


def record(**fields: object) -> tuple[bytes, bytes]:
    """An exemption record (key, value) with VALID's fields, some replaced; the key names its id."""
    value = {**VALID, **fields}
    return f"exemption/{value['id']}".encode(), json.dumps(value).encode()


class TestExemptionRecords:
    def test_a_pattern_covers_matching_campaigns_until_it_expires(self) -> None:
        store = Exemptions()
        exemption = new_exemption("camp_seed_*", seconds=60, reason="seed test", by="ana", rule=None, now=IN_FORCE)
        store.apply(exemption.key, exemption.model_dump_json().encode())
        assert store.find("camp_seed_7", "hard-bounce-rate", IN_FORCE + 30) == exemption
        assert store.find("camp_other", "hard-bounce-rate", IN_FORCE + 30) is None
        assert store.find("camp_seed_7", "hard-bounce-rate", IN_FORCE + 60) is None  # expired

    def test_a_rule_scoped_exemption_leaves_the_other_rules_in_force(self) -> None:
        store = Exemptions()
        exemption = new_exemption("camp_1", seconds=60, reason="noisy", by="ana", rule="complaint-*", now=IN_FORCE)
        store.apply(exemption.key, exemption.model_dump_json().encode())
        assert store.find("camp_1", "complaint-rate", IN_FORCE + 1) == exemption
        assert store.find("camp_1", "hard-bounce-rate", IN_FORCE + 1) is None

    def test_a_tombstone_revokes_and_a_malformed_record_is_skipped(self) -> None:
        store = Exemptions()
        exemption = new_exemption("camp_1", seconds=60, reason="x", by="ana", rule=None, now=IN_FORCE)
        store.apply(exemption.key, exemption.model_dump_json().encode())
        store.apply(b"exemption/ex_000000000000", b"{not json")
        store.apply(b"something/else", b"{}")
        assert len(store) == 1
        store.apply(exemption.key, None)
        assert store.find("camp_1", "any", IN_FORCE + 1) is None


class TestInvalidRecords:
    """Whoever can write the control topic writes input: an invalid record is counted, holds nothing and
    never makes `find` raise, whatever else the store holds."""

    @pytest.mark.parametrize(
        "fields",
        [
            pytest.param({"expires_at": "0001-01-01T00:00:00"}, id="year-1-without-zone"),
            pytest.param({"created_at": "2026-01-01T00:00:00", "expires_at": "2026-01-02T00:00:00"}, id="no-zone"),
            pytest.param({"expires_at": "9999-12-31T23:59:59+00:00"}, id="year-9999"),
            pytest.param({"created_at": "0001-01-01T00:00:00+00:00"}, id="year-1-with-zone"),
            pytest.param({"expires_at": "2025-12-31T00:00:00Z"}, id="expires-before-created"),
            pytest.param({"expires_at": "2026-06-01T00:00:00Z"}, id="over-90-days"),
            pytest.param({"reason": "x" * 501}, id="reason-over-its-cap"),
            pytest.param({"reason": "ok\x1b[2J"}, id="terminal-control-characters"),
            pytest.param({"campaigns": ""}, id="empty-glob"),
            pytest.param({"extra": 1}, id="unknown-field"),
        ],
    )
    def test_an_invalid_exemption_is_skipped_counted_and_find_stays_total(self, fields: dict[str, object]) -> None:
        metrics = Metrics()
        store = Exemptions(metrics)
        store.apply(*record(id="ex_0000000000b2", campaigns="camp_x", expires_at="2026-01-01T12:00:00+02:00"))
        key, value = record(**fields)
        store.apply(key, value.replace(b"\\x1b", b"\\u001b"))
        store.apply(*record(id="ex_0000000000c3", campaigns="camp_x"))
        assert len(store) == 2
        assert key.decode().removeprefix("exemption/") in store.skipped
        assert metrics.control_records.labels("invalid")._value.get() == 1
        assert metrics.control_records.labels("applied")._value.get() == 2
        for campaign in ("camp_other", "camp_x", "camp_bad"):
            store.find(campaign, "hard-bounce-rate", IN_FORCE)  # never raises
        assert store.find("camp_other", "any", IN_FORCE) is None  # a bad exemption means no exemption
        assert store.find("camp_x", "any", IN_FORCE).id == "ex_0000000000c3"  # the zoned ones compare

    def test_an_oversized_value_is_invalid_before_it_is_parsed(self) -> None:
        store = Exemptions()
        key, _ = record()
        store.apply(key, b'{"reason": "' + b" " * MAX_VALUE_BYTES + b'"}')
        assert len(store) == 0 and f"over {MAX_VALUE_BYTES}" in store.skipped["ex_0000000000a1"]

    def test_the_key_is_the_identity_a_tombstone_for_it_revokes_what_it_held(self) -> None:
        """A record whose key names another id is invalid; a later invalid record for a key drops
        what the key held, as compaction would keep only the later one."""
        metrics = Metrics()
        store = Exemptions(metrics)
        _, value = record(id="ex_0000000000a1", campaigns="camp_1")
        store.apply(b"exemption/ex_0000000000ff", value)  # key and id differ
        assert len(store) == 0 and "not the key's" in store.skipped["ex_0000000000ff"]
        store.apply(*record(campaigns="camp_1"))
        assert store.find("camp_1", "any", IN_FORCE) is not None
        store.apply(record()[0], b"{not json")
        assert store.find("camp_1", "any", IN_FORCE) is None
        store.apply(*record(campaigns="camp_1"))
        store.apply(record()[0], None)
        assert len(store) == 0 and "ex_0000000000a1" not in store.skipped
        assert metrics.control_records.labels("invalid")._value.get() == 2
        assert metrics.control_records.labels("revoked")._value.get() == 1

    def test_a_record_made_for_the_future_holds_only_from_then(self) -> None:
        """created_at bounds it too: a record dated ahead cannot exempt from now until long after its 90 days."""
        store = Exemptions()
        store.apply(*record(created_at="2030-01-01T00:00:00Z", expires_at="2030-02-01T00:00:00Z"))
        assert store.find("camp_other", "any", IN_FORCE) is None
        assert store.find("camp_other", "any", 1893542400.0) is not None  # 2030-01-01T02:00:00Z

    def test_other_record_kinds_are_ignored_and_counted(self) -> None:
        metrics = Metrics()
        store = Exemptions(metrics)
        store.apply(None, b"{}")
        store.apply(b"something/else", b"{}")
        assert len(store) == 0 and not store.skipped
        assert metrics.control_records.labels("ignored")._value.get() == 2

    def test_the_number_held_is_bounded_and_expired_ones_make_room(self) -> None:
        store = Exemptions()
        for n in range(MAX_EXEMPTIONS):
            store.apply(*record(id=f"ex_{n:012x}"))  # expired by the wall clock now
        fresh = new_exemption("camp_1", seconds=60, reason="x", by="ana", rule=None, now=time.time())
        store.apply(fresh.key, fresh.model_dump_json().encode())
        assert len(store) == 1 and store.find("camp_1", "any", time.time()) == fresh
        for _ in range(MAX_EXEMPTIONS - 1):
            made = new_exemption("camp_2", seconds=60, reason="x", by="ana", rule=None, now=time.time())
            store.apply(made.key, made.model_dump_json().encode())
        over = new_exemption("camp_3", seconds=60, reason="x", by="ana", rule=None, now=time.time())
        store.apply(over.key, over.model_dump_json().encode())
        assert len(store) == MAX_EXEMPTIONS and "over" in store.skipped[over.id]
        assert store.find("camp_3", "any", time.time()) is None


@pytest.mark.integration
class TestExemptionsInTheGuard:
    async def test_an_exemption_stops_the_pause_is_audited_and_survives_a_restart(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        control_topic: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Made while one guard runs, kept by the next one: the seed campaign's decision is audited as
        `exempted` with who and why, and never called; a campaign it does not cover is paused."""
        standin.add_campaign("camp_seed_1")
        standin.add_campaign("camp_bad")
        first = await run_guard(control_topic=control_topic)
        exemption_id = await exempt(capsys, "camp_seed_*", "--for", "1h", "--reason", "seed-list test", "--by", "ana")
        await until(lambda: first.exemptions.find("camp_seed_1", "any", time.time()) is not None)
        await first.shutdown()

        now = time.time() - 600
        await produce(producer, topics.input, bad_campaign("camp_seed_1", now) + bad_campaign("camp_bad", now))
        second = await run_guard(control_topic=control_topic)
        await standin.wait_for_pauses(1, timeout=20)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=4))
        await until(lambda: second.metrics.actions.labels("exempted")._value.get() == 1)

        assert by_campaign(events) == {"camp_seed_1": ["fired", "exempted"], "camp_bad": ["fired", "paused"]}
        assert [r.campaign_id for r in standin.pause_requests()] == ["camp_bad"]
        assert standin.status("camp_seed_1") == "running"
        exempted = next(e for e in events if e["outcome"] == "exempted")
        assert exempted["exemption"]["id"] == exemption_id
        assert (exempted["exemption"]["by"], exempted["exemption"]["reason"]) == ("ana", "seed-list test")
        assert exempted["result"] is None

    async def test_an_exemption_made_while_running_is_honoured_at_once_and_expires_by_itself(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        control_topic: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A bad campaign met during the exemption is left running; one met after it expired is paused."""
        standin.add_campaign("camp_t_1")
        standin.add_campaign("camp_t_2")
        guard = await run_guard(control_topic=control_topic)
        made = time.time()
        await exempt(capsys, "camp_t_*", "--for", "15s", "--reason", "list test")
        # the guard follows the control topic (within a second; room for a loaded machine)
        await until(lambda: len(guard.exemptions) == 1, timeout=10)
        await produce(producer, topics.input, bad_campaign("camp_t_1", time.time() - 600))
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [e["outcome"] for e in events] == ["fired", "exempted"]
        assert time.time() < made + 15, "premise: decided while the exemption was in force"

        await asyncio.sleep(max(0.0, made + 15.5 - time.time()))
        await produce(producer, topics.input, bad_campaign("camp_t_2", time.time() - 600))
        await standin.wait_for_pauses(1, timeout=20)
        assert [r.campaign_id for r in standin.pause_requests()] == ["camp_t_2"]

    async def test_a_revoked_exemption_is_listed_no_more_and_the_campaign_is_paused(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        control_topic: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        standin.add_campaign("camp_r")
        guard = await run_guard(control_topic=control_topic)
        exemption_id = await exempt(capsys, "camp_r", "--for", "1h", "--reason", "warm-up", "--rule", "hard-bounce-*")
        code, out, _ = await guard_cli(capsys, "exempt", "--list")
        assert code == 0 and exemption_id in out and "warm-up" in out and "hard-bounce-*" in out
        await until(lambda: len(guard.exemptions) == 1)

        code, out, _ = await guard_cli(capsys, "exempt", "--revoke", exemption_id)
        assert code == 0 and f"{exemption_id} revoked" in out
        code, out, _ = await guard_cli(capsys, "exempt", "--list")
        assert exemption_id not in out
        await until(lambda: len(guard.exemptions) == 0)
        await produce(producer, topics.input, bad_campaign("camp_r", time.time() - 600))
        await standin.wait_for_pauses(1, timeout=20)
        assert [e["outcome"] for e in audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))] == [
            "fired",
            "paused",
        ]

    async def test_bad_requests_are_refused_with_a_clear_message(
        self, control_topic: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert (await guard_cli(capsys, "exempt", "camp_1", "--for", "24h"))[0] == 2  # no reason
        code, _, err = await guard_cli(capsys, "exempt", "camp_1", "--for", "1 day", "--reason", "x")
        assert code == 2 and "--for: '1 day' is not a duration" in err
        code, _, err = await guard_cli(capsys, "exempt", "--revoke", "ex_0123456789ab")
        assert code == 1 and "no exemption 'ex_0123456789ab'" in err

    async def test_a_rule_name_that_matches_no_rule_is_told_and_the_exemption_written(
        self, control_topic: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`--rule hard-bounce-rat`, a typo, would exempt from nothing: the campaign is paused all the same. Told on
        stderr, with the rule meant; a glob that matches says nothing; rules not readable here: told unchecked."""
        monkeypatch.setenv("GUARD_RULES", str(Path(__file__).parent.parent / "rules"))
        code, out, err = await guard_cli(
            capsys, "exempt", "camp_a", "--for", "1h", "--reason", "x", "--rule", "hard-bounce-rat"
        )
        assert code == 0 and "camp_a exempted from rule hard-bounce-rat" in out
        assert "--rule 'hard-bounce-rat' matches none of the" in err and "did you mean 'hard-bounce-rate'?" in err
        code, out, err = await guard_cli(capsys, "exempt", "camp_a", "--for", "1h", "--reason", "x", "--rule", "hard-*")
        assert code == 0 and "warning" not in err
        monkeypatch.setenv("GUARD_RULES", str(Path(__file__).parent / "no-such-rules"))
        code, out, err = await guard_cli(capsys, "exempt", "camp_a", "--for", "1h", "--reason", "x", "--rule", "hard-*")
        assert code == 0 and "--rule 'hard-*' is not checked: the rules at" in err

    async def test_the_first_exemption_prints_only_its_answer_on_stdout(self, control_topic: str) -> None:
        """A script takes the id from stdout (`ID=$(guard exempt ... | cut -d: -f1)`), on its first run too, which
        makes the control topic: that is logged on stderr. It used to be logged on stdout, before the id."""
        made = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "guard.cli", "exempt", "camp_seed", "--for", "1h", "--reason", "seed list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        assert re.fullmatch(r"ex_[0-9a-f]{12}: camp_seed exempted from every rule until .*\n", made.stdout), made.stdout
        assert "control topic created" in made.stderr


@pytest.mark.integration
class TestInvalidRecordsOnTheTopic:
    async def test_malformed_and_mismatched_records_stop_no_pause_and_list_without_a_traceback(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        control_topic: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A zone-less year-1 exemption of another campaign (which crashed every decision), and an
        exemption of the bad campaign stored under another key and then "revoked" by a tombstone for
        that key (which it used to survive): the bad campaign is paused, the records are counted, and
        `guard exempt --list` names them, one line each."""
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(control_topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        finally:
            await admin.close()
        in_force = new_exemption("camp_bad", seconds=3600, reason="x", by="ana", rule=None, now=time.time())
        mismatched = in_force.model_dump_json().encode()  # valid, but stored under another id's key
        for key, value in (
            record(id="ex_0000000000d1", created_at="0001-01-01T00:00:00", expires_at="0001-01-01T00:00:00"),
            (b"exemption/ex_0000000000f1", mismatched),
            (b"exemption/ex_0000000000f1", None),
        ):
            await producer.send_and_wait(control_topic, key=key, value=value)
        standin.add_campaign("camp_bad")
        guard = await run_guard(control_topic=control_topic)
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        await standin.wait_for_pauses(1, timeout=20)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))

        assert by_campaign(events) == {"camp_bad": ["fired", "paused"]}
        assert guard.metrics.decision_errors._value.get() == 0
        assert guard.metrics.control_records.labels("invalid")._value.get() == 2
        assert guard.metrics.control_records.labels("revoked")._value.get() == 1
        code, out, err = await guard_cli(capsys, "exempt", "--list")
        assert code == 0 and "Traceback" not in err, err
        assert "0 exemptions in force" in err
        listed = [line for line in err.splitlines() if "skipped, it exempts nothing" in line]  # not the guard's logs
        assert [line.split(":")[1].strip() for line in listed] == ["exemption/ex_0000000000d1"]


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


@pytest.mark.integration
class TestAReplacedControlTopic:
    """The control topic deleted under a running guard (and made again by `guard exempt`, or by a broker
    that creates topics on demand): what the old topic said exempts nothing any more, and the new one
    is read from its beginning, though its records sit below the position the old one was read to."""

    async def exempt_three(self, guard: Service, capsys: pytest.CaptureFixture[str]) -> None:
        """Three exemptions, the first covering camp_old: the reader's position is 3."""
        for campaigns in ("camp_old", "camp_x_*", "camp_y_*"):
            await exempt(capsys, campaigns, "--for", "1h", "--reason", "before the topic was deleted")
        await until(lambda: len(guard.exemptions) == 3, timeout=10)

    async def test_a_deleted_control_topic_exempts_nothing_and_the_campaign_is_paused(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        control_topic: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        standin.add_campaign("camp_old")
        guard = await run_guard(control_topic=control_topic)
        await self.exempt_three(guard, capsys)

        await delete_topic(kafka_bootstrap, control_topic)
        await until(lambda: guard.exemptions.find("camp_old", "any", time.time()) is None, timeout=10)
        await produce(producer, topics.input, bad_campaign("camp_old", time.time() - 600))
        await standin.wait_for_pauses(1, timeout=20)
        assert [e["outcome"] for e in audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))] == [
            "fired",
            "paused",
        ]
        assert len(guard.exemptions) == 0
        assert guard.metrics.control_topic_replaced._value.get() >= 1

    async def test_exemptions_and_revocations_on_the_recreated_topic_are_followed(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        control_topic: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        standin.add_campaign("camp_new")
        guard = await run_guard(control_topic=control_topic)
        await self.exempt_three(guard, capsys)

        await delete_topic(kafka_bootstrap, control_topic)
        new_id = await exempt(capsys, "camp_new", "--for", "1h", "--reason", "on the new topic")
        await until(lambda: [e.id for e in guard.exemptions.all()] == [new_id], timeout=10)
        code, out, _ = await guard_cli(capsys, "exempt", "--revoke", new_id)
        assert code == 0 and f"{new_id} revoked" in out
        await until(lambda: len(guard.exemptions) == 0, timeout=10)

        await produce(producer, topics.input, bad_campaign("camp_new", time.time() - 600))
        await standin.wait_for_pauses(1, timeout=20)
        assert [r.campaign_id for r in standin.pause_requests()] == ["camp_new"]


@pytest.mark.integration  # a broker of its own
@pytest.mark.apache_kafka
async def test_a_control_topic_missing_on_a_broker_that_creates_none_exempts_nothing_until_made_again(
    strict_kafka: ApacheKafka,  # noqa: F811
) -> None:
    """Deleted, it stays missing (nothing makes it on demand): nothing is exempt meanwhile, said once, and
    the topic made again is read from its beginning."""
    settings = KafkaSettings(bootstrap_servers=strict_kafka.bootstrap_servers)
    topic, metrics = f"control-{uuid.uuid4().hex[:10]}", Metrics()
    assert await create_if_missing(settings, control_topic_of(topic), 1) is None
    old = [new_exemption(f"camp_{n}", seconds=3600, reason="x", by="ana", rule=None, now=time.time()) for n in "abc"]
    await control.write(settings, topic, [(e.key, e.model_dump_json().encode()) for e in old])
    store = Exemptions(metrics)
    following = asyncio.create_task(control.follow(settings, topic, store, metrics))
    try:
        await until(lambda: len(store) == 3, timeout=20)
        await delete_topic(strict_kafka.bootstrap_servers, topic)
        await until(lambda: len(store) == 0, timeout=10)
        await asyncio.sleep(2 * control.RETRY_SECONDS)  # looked for again, still missing
        assert len(store) == 0 and metrics.control_topic_replaced._value.get() == 1

        assert await create_if_missing(settings, control_topic_of(topic), 1) is None
        made_again = new_exemption("camp_a", seconds=3600, reason="y", by="ana", rule=None, now=time.time())
        await control.write(settings, topic, [(made_again.key, made_again.model_dump_json().encode())])
        await until(lambda: [e.id for e in store.all()] == [made_again.id], timeout=2 * control.RETRY_SECONDS)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
