"""`guard decisions` reads the audit topic of a real broker and says what the guard decided."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from test_dispatch import pause_decision

from guard.actions.audit import audit_event
from guard.cli import main
from guard.contracts.audit import ExemptionRef, Result
from guard.testing.broker import BrokerInfo


@pytest.fixture
async def audit_topic(kafka_broker: BrokerInfo, topic_name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An audit topic holding: camp_a fired and paused (workspace ws_1), camp_b fired and failed,
    camp_seed_1 exempted, camp_c fired without an outcome yet, camp_d an alert (it calls nobody: no outcome ever),
    and one record that is no audit event."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("GUARD_AUDIT_TOPIC", topic_name)
    now = time.time()
    events = []
    for campaign, outcome in [
        ("camp_a", "paused"),
        ("camp_b", "failed"),
        ("camp_seed_1", "exempted"),
        ("camp_c", None),
        ("camp_d", None),
    ]:
        decision = pause_decision(campaign)
        if campaign == "camp_d":
            decision = dataclasses.replace(decision, rule=decision.rule.model_copy(update={"action": "alert"}))
        workspace = "ws_1" if campaign == "camp_a" else None
        events.append(audit_event(decision, "fired", decided_at=now, dry_run=False, workspace_id=workspace))
        if outcome == "paused":
            result = Result(
                http_status=200,
                attempts=1,
                paused_at="2026-01-01T10:00:00Z",
                campaign_status="paused",
                error_code=None,
                error=None,
            )
            events.append(
                audit_event(
                    decision,
                    "paused",
                    decided_at=now,
                    dry_run=False,
                    result=result,
                    workspace_id=workspace,
                    answered_at=now,
                )
            )
        elif outcome == "failed":
            result = Result(
                http_status=404,
                attempts=1,
                paused_at=None,
                campaign_status=None,
                error_code="campaign_not_found",
                error=None,
            )
            events.append(
                audit_event(decision, "failed", decided_at=now, dry_run=False, result=result, answered_at=now)
            )
        elif outcome == "exempted":
            exemption = ExemptionRef(
                id="ex_1",
                campaigns="camp_seed_*",
                rule=None,
                reason="seed-list test",
                by="ana",
                expires_at=datetime.fromtimestamp(now + 3600, tz=UTC),
            )
            events.append(audit_event(decision, "exempted", decided_at=now, dry_run=False, exemption=exemption))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, **kafka_broker.producer_overrides)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                topic_name, key=event.campaign_id.encode(), value=event.model_dump_json().encode()
            )
        await producer.send_and_wait(topic_name, key=b"x", value=b"not an audit event")
    finally:
        await producer.stop()
    return topic_name


async def decisions(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["decisions", *args])
    out, err = capsys.readouterr()
    return code, out, err


class TestDecisions:
    async def test_the_table_has_one_row_per_decision_with_its_outcome(
        self, audit_topic: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Fired and outcome events fold into one row; an unsettled decision shows as fired, an alert as alert."""
        code, out, err = await decisions(capsys)
        assert code == 0, err
        rows = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert out.splitlines()[0].split()[:4] == ["CAMPAIGN", "WORKSPACE", "RULE", "VALUE"]
        assert set(rows) == {"camp_a", "camp_b", "camp_seed_1", "camp_c", "camp_d"}
        assert " paused " in rows["camp_a"] and " ws_1 " in rows["camp_a"]
        assert " failed " in rows["camp_b"]
        assert " exempted " in rows["camp_seed_1"]
        assert " fired " in rows["camp_c"]
        assert " alert " in rows["camp_d"]
        assert "hard-bounce-burst" in rows["camp_a"] and "last 50" in rows["camp_a"]
        assert "1 records of the audit topic are not audit events" in err

    async def test_filters_narrow_the_rows(self, audit_topic: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--outcome, --workspace and a campaign glob each keep only what matches."""
        _, out, _ = await decisions(capsys, "--outcome", "failed", "--format", "json")
        assert [json.loads(line)["campaign_id"] for line in out.splitlines()] == ["camp_b"]
        _, out, _ = await decisions(capsys, "--workspace", "ws_1", "--format", "json")
        assert [json.loads(line)["campaign_id"] for line in out.splitlines()] == ["camp_a"]
        _, out, _ = await decisions(capsys, "--campaign", "camp_seed_*", "--format", "json")
        assert [json.loads(line)["outcome"] for line in out.splitlines()] == ["exempted"]
        _, out, _ = await decisions(capsys, "--since", "2099-01-01T00:00:00Z")
        assert out.splitlines()[1:] == []

    async def test_explain_prints_the_whole_evidence(
        self, audit_topic: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One decision, in words: counts against the threshold, window, messages, the API's answer."""
        code, out, err = await decisions(capsys, "camp_a", "--explain")
        assert code == 0, err
        assert out.startswith("Campaign camp_a (workspace ws_1)\n")
        assert "rule      hard-bounce-burst" in out
        assert "against a threshold of 8.00%" in out
        assert "outcome   paused" in out and "HTTP 200 after 1 attempt(s)" in out
        assert "pausedAt 2026-01-01T10:00:00Z" in out
        _, out, _ = await decisions(capsys, "camp_seed_1", "--explain")
        assert "exemption ex_1 for camp_seed_* (every rule) by ana: 'seed-list test'" in out

    async def test_a_missing_topic_is_a_clear_error(
        self, kafka_broker: BrokerInfo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
        code, _, err = await decisions(capsys, "--topic", "no-such-audit-topic")
        assert code == 1
        assert "topic 'no-such-audit-topic' does not exist" in err
