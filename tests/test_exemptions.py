"""Exemptions: `guard exempt` writes to the control topic of a real broker; the running guard
honours them, audits `exempted`, forgets them when they expire, and keeps them across a restart."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
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

from guard.actions.exemptions import Exemptions, new_exemption
from guard.cli import main
from guard.testing.broker import BrokerInfo
from guard.testing.leadterra import LeadterraStandIn

pytestmark = pytest.mark.integration


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
    made = re.search(r"^(ex_[0-9a-f]+): ", out, re.MULTILINE)  # the guard's own log lines share stdout here
    assert made is not None, out
    return made[1]


def by_campaign(events: list[dict]) -> dict[str, list[str]]:
    outcomes: dict[str, list[str]] = {}
    for event in events:
        outcomes.setdefault(event["campaign_id"], []).append(event["outcome"])
    return outcomes


class TestExemptionRecords:
    def test_a_pattern_covers_matching_campaigns_until_it_expires(self) -> None:
        store = Exemptions()
        exemption = new_exemption("camp_seed_*", seconds=60, reason="seed test", by="ana", rule=None, now=1000.0)
        store.apply(exemption.key, exemption.model_dump_json().encode())
        assert store.find("camp_seed_7", "hard-bounce-rate", 1030.0) == exemption
        assert store.find("camp_other", "hard-bounce-rate", 1030.0) is None
        assert store.find("camp_seed_7", "hard-bounce-rate", 1060.0) is None  # expired

    def test_a_rule_scoped_exemption_leaves_the_other_rules_in_force(self) -> None:
        store = Exemptions()
        exemption = new_exemption("camp_1", seconds=60, reason="noisy", by="ana", rule="complaint-*", now=1000.0)
        store.apply(exemption.key, exemption.model_dump_json().encode())
        assert store.find("camp_1", "complaint-rate", 1001.0) == exemption
        assert store.find("camp_1", "hard-bounce-rate", 1001.0) is None

    def test_a_tombstone_revokes_and_a_malformed_record_is_skipped(self) -> None:
        store = Exemptions()
        exemption = new_exemption("camp_1", seconds=60, reason="x", by="ana", rule=None, now=1000.0)
        store.apply(exemption.key, exemption.model_dump_json().encode())
        store.apply(b"exemption/ex_000000000000", b"{not json")
        store.apply(b"something/else", b"{}")
        assert len(store) == 1
        store.apply(exemption.key, None)
        assert store.find("camp_1", "any", 1001.0) is None


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
