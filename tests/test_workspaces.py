"""Several Leadterra workspaces, one key each, on a real broker and the stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_checkpoints import create_state_topic
from test_service import Guard, Topics, audits, produce, producer, read_topic, settings_for, topics, until  # noqa: F401

from guard.actions.workspaces import read_api_keys
from guard.errors import ConfigError
from guard.rules import load_rules
from guard.runtime.settings import GuardSettings, LeadterraSettings, Settings
from guard.telemetry.health import Health
from guard.testing.broker import BrokerInfo
from guard.testing.events import bounced, envelope
from guard.testing.leadterra import LeadterraStandIn

KEYS = "ws_a: sk_live_workspace_a_1234\nws_b: sk_live_workspace_b_5678\n"


def bad_campaign_in(workspace: str, campaign_id: str, start: float) -> list[tuple[str, bytes]]:
    """300 sends at 1% hard bounces, then 150 at 12.5%, every event naming its workspace."""
    records = []
    for i in range(450):
        records.append(
            (
                campaign_id,
                envelope(
                    "message.sent", campaign_id, start + i, messageId=f"{campaign_id}-s{i}", workspaceId=workspace
                ),
            )
        )
        if (i + 1) % (100 if i < 300 else 8) == 0:
            records.append(
                (
                    campaign_id,
                    envelope(
                        "message.bounced",
                        campaign_id,
                        start + i + 0.5,
                        messageId=f"{campaign_id}-b{i}",
                        bounceType="hard",
                        bounceReason="550 5.1.1 user unknown",
                        workspaceId=workspace,
                    ),
                )
            )
    return records


@pytest.fixture
async def guard(
    kafka_broker: BrokerInfo,
    standin: LeadterraStandIn,
    topics: Topics,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Guard]:
    """A guard holding the keys of ws_a and ws_b (from a keys file) and no single key."""
    (tmp_path / "keys.yaml").write_text(KEYS)
    settings = settings_for(kafka_broker, standin, topics)
    settings.leadterra = LeadterraSettings(
        api_url=standin.url, api_keys_file=tmp_path / "keys.yaml", backoff_initial=0.02, backoff_max=0.1
    )
    service = Guard(settings, load_rules(settings.guard.rules))
    service.task = asyncio.create_task(service.run())
    await until(lambda: service.assigned > 0 or service.task.done(), timeout=20)
    yield service
    await service.shutdown()


@pytest.mark.integration
async def test_a_revoked_key_stops_only_its_own_workspace(
    kafka_bootstrap: str,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    guard: Guard,
) -> None:
    """ws_b's key is revoked in Leadterra: its campaign's pause is audited as failed (401), health and
    metrics name ws_b, and a campaign of ws_a that turns bad afterwards is still paused with ws_a's key."""
    standin.add_workspace("ws_a", "sk_live_workspace_a_1234")
    standin.add_workspace("ws_b", "sk_live_workspace_b_5678")
    standin.revoke_key("sk_live_workspace_b_5678")
    standin.add_campaign("camp_b", workspace="ws_b")
    standin.add_campaign("camp_a", workspace="ws_a")

    await produce(producer, topics.input, bad_campaign_in("ws_b", "camp_b", time.time() - 1200))
    first = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
    assert [(e["outcome"], e["workspace_id"]) for e in first] == [("fired", "ws_b"), ("failed", "ws_b")]
    assert first[1]["result"]["http_status"] == 401

    await produce(producer, topics.input, bad_campaign_in("ws_a", "camp_a", time.time() - 600))
    await standin.wait_for_pauses(1, timeout=20)
    assert standin.status("camp_a") == "paused" and standin.status("camp_b") == "running"
    assert standin.pause_requests("camp_a")[0].header("Authorization") == "Bearer sk_live_workspace_a_1234"
    events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=4))
    assert [(e["outcome"], e["workspace_id"]) for e in events if e["campaign_id"] == "camp_a"] == [
        ("fired", "ws_a"),
        ("paused", "ws_a"),
    ]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{guard.server.port}") as client:
        # pauses are made while the guard may still be catching up with the log: ready comes soon after
        for _ in range(100):
            live, ready, metrics = [await client.get(path) for path in ("/livez", "/readyz", "/metrics")]
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert live.status_code == 200 and ready.status_code == 200, ready.text
    assert any("workspace ws_b (401)" in warning for warning in ready.json()["warnings"])
    assert 'guard_workspace_authentication_failed{workspace="ws_b"} 1.0' in metrics.text
    assert "guard_api_authentication_failed 0.0" in metrics.text


async def readyz_once_ready(guard: Guard) -> httpx.Response:
    """/readyz once it answers 200 (pauses are made while the guard may still be catching up), for up to 10 s."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{guard.server.port}") as client:
        for _ in range(100):
            ready = await client.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert ready.status_code == 200, ready.text
    return ready


@pytest.mark.integration
async def test_a_workspace_without_a_key_is_named_on_readyz(
    kafka_bootstrap: str,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    guard: Guard,
) -> None:
    """Events name ws_c, which the keys file does not hold, and there is no single key: the pause is audited as
    failed (`no_api_key`, no call) and /readyz, still 200 (ws_a and ws_b are protected), names ws_c until a restart."""
    standin.add_workspace("ws_c", "sk_live_workspace_c_9012")
    standin.add_campaign("camp_c", workspace="ws_c")

    await produce(producer, topics.input, bad_campaign_in("ws_c", "camp_c", time.time() - 1200))
    events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
    assert [(e["outcome"], e["workspace_id"]) for e in events] == [("fired", "ws_c"), ("failed", "ws_c")]
    assert events[1]["result"]["error_code"] == "no_api_key"
    assert standin.pause_requests("camp_c") == [] and standin.status("camp_c") == "running"

    ready = await readyz_once_ready(guard)
    assert any("no API key for workspace ws_c" in warning for warning in ready.json()["warnings"]), ready.text


@pytest.mark.integration
async def test_a_mapped_topic_whose_workspace_has_no_key_is_named_at_start(
    kafka_broker: BrokerInfo,
    standin: LeadterraStandIn,
    topics: Topics,  # noqa: F811
    tmp_path: Path,
) -> None:
    """GUARD_TOPIC_WORKSPACES maps the input topic to ws_bb, a typo of the file's ws_b, and there is no single key:
    the guard starts and reads (it refused to once: one missing key then stopped every workspace, review S2), and
    /readyz names ws_bb and the close ws_b before any campaign of it goes bad."""
    (tmp_path / "keys.yaml").write_text(KEYS)
    settings = settings_for(kafka_broker, standin, topics)
    settings.leadterra = LeadterraSettings(api_url=standin.url, api_keys_file=tmp_path / "keys.yaml")
    settings.guard = settings.guard.model_copy(update={"topic_workspaces": {topics.input: "ws_bb"}})
    service = Guard(settings, load_rules(settings.guard.rules))
    service.task = asyncio.create_task(service.run())
    try:
        await until(lambda: service.assigned > 0 or service.task.done(), timeout=20)
        assert not service.task.done()
        ready = await readyz_once_ready(service)
        [told] = [warning for warning in ready.json()["warnings"] if "no API key for workspace" in warning]
        assert f"ws_bb (GUARD_TOPIC_WORKSPACES maps {topics.input} to it" in told and "did you mean ws_b?" in told
    finally:
        await service.shutdown()


@pytest.mark.integration
async def test_a_key_rotated_in_its_secret_is_used_without_a_restart(
    kafka_bootstrap: str,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    guard: Guard,
    tmp_path: Path,
) -> None:
    """The operator's rotation, in order: ws_b's key was revoked (a pause failed with 401, ws_b flagged);
    the keys file (a mounted Secret) is rewritten with ws_b's new key, and the old ws_a key revoked
    right after its own rewrite. The running guard reads the file again on the next 401: both later
    pauses land with the new keys, and health and metrics no longer name ws_b."""
    standin.add_workspace("ws_a", "sk_live_workspace_a_1234")
    standin.add_workspace("ws_b", "sk_live_workspace_b_5678")
    for campaign, workspace in [("camp_b1", "ws_b"), ("camp_b2", "ws_b"), ("camp_a", "ws_a")]:
        standin.add_campaign(campaign, workspace=workspace)
    standin.revoke_key("sk_live_workspace_b_5678")
    (tmp_path / "keys.yaml").write_text("ws_a: sk_live_workspace_a_1234\nws_b: sk_live_workspace_b_5678\n")
    await produce(producer, topics.input, bad_campaign_in("ws_b", "camp_b1", time.time() - 1800))
    first = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
    assert [e["outcome"] for e in first] == ["fired", "failed"]
    assert guard.health.rejected == {"ws_b"}

    standin.add_workspace("ws_b", "sk_live_workspace_b_rotated")
    standin.add_workspace("ws_a", "sk_live_workspace_a_rotated")
    (tmp_path / "keys.yaml").write_text("ws_a: sk_live_workspace_a_rotated\nws_b: sk_live_workspace_b_rotated\n")
    standin.revoke_key("sk_live_workspace_a_1234")
    await produce(producer, topics.input, bad_campaign_in("ws_b", "camp_b2", time.time() - 1200))
    await produce(producer, topics.input, bad_campaign_in("ws_a", "camp_a", time.time() - 600))
    await standin.wait_for_pauses(2, timeout=20)
    assert standin.status("camp_b2") == "paused" and standin.status("camp_a") == "paused"
    assert [r.header("Authorization") for r in standin.pause_requests("camp_a")] == [
        "Bearer sk_live_workspace_a_1234",
        "Bearer sk_live_workspace_a_rotated",
    ]
    events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=6))
    assert sorted((e["campaign_id"], e["outcome"]) for e in events if e["outcome"] != "fired") == [
        ("camp_a", "paused"),
        ("camp_b1", "failed"),
        ("camp_b2", "paused"),
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{guard.server.port}") as client:
        for _ in range(100):  # /readyz is 200 with a rejected workspace too: wait for its warning to go
            ready, metrics = [await client.get(path) for path in ("/readyz", "/metrics")]
            if ready.status_code == 200 and not ready.json().get("warnings"):
                break
            await asyncio.sleep(0.1)
    assert ready.status_code == 200 and not ready.json().get("warnings"), ready.text
    assert 'guard_workspace_authentication_failed{workspace="ws_b"} 0.0' in metrics.text


SCOPED_RULES = """
groups:
  - name: workspace-a
    rules:
      - name: hard-bounces-of-ws-a
        description: ws_a's campaigns pause on ten hard bounces within an hour.
        count: {signal: bounced, where: {bounce_type: hard}}
        window: 1h
        threshold: 10
        workspaces: [ws_a]
"""


@pytest.mark.integration
async def test_a_rule_scoped_to_one_workspace_pauses_only_its_campaigns_by_topic_mapping(
    kafka_bootstrap: str,
    kafka_broker: BrokerInfo,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two topics mapped to ws_a and ws_b, events naming no workspace, the same bad traffic on both: the
    rule scoped to ws_a pauses ws_a's campaign with ws_a's key and leaves ws_b's alone; a record of ws_a's
    topic that names ws_b is dead-lettered as misrouted, not counted for either."""
    topic_b = f"{topics.input}-b"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_b, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    standin.add_workspace("ws_a", "sk_live_workspace_a_1234")
    standin.add_workspace("ws_b", "sk_live_workspace_b_5678")
    standin.add_campaign("camp_a", workspace="ws_a")
    standin.add_campaign("camp_b", workspace="ws_b")
    (tmp_path / "keys.yaml").write_text(KEYS)
    (tmp_path / "rules.yaml").write_text(SCOPED_RULES)
    settings = settings_for(kafka_broker, standin, topics, rules=tmp_path / "rules.yaml")
    mapping = {"input_topics": (topics.input, topic_b), "topic_workspaces": f"{topics.input}=ws_a,{topic_b}=ws_b"}
    settings.guard = GuardSettings(**{**settings.guard.model_dump(), **mapping})
    settings.leadterra = LeadterraSettings(
        api_url=standin.url, api_keys_file=tmp_path / "keys.yaml", backoff_initial=0.02, backoff_max=0.1
    )
    start = time.time() - 600
    misrouted = envelope("message.bounced", "camp_a", start + 1, messageId="m-x", bounceType="hard", workspaceId="ws_b")
    await produce(producer, topics.input, [("camp_a", misrouted)])
    for topic, campaign_id in ((topics.input, "camp_a"), (topic_b, "camp_b")):
        bounces = [bounced(campaign_id, start + 10 + i) for i in range(12)]
        await produce(producer, topic, [(campaign_id, value) for value in bounces])
    # last on camp_b's partition: once it is dead-lettered, every camp_b event before it was counted
    await produce(producer, topic_b, [("camp_b", envelope("message.sent", "camp_b", start + 30, workspaceId="ws_a"))])

    service = Guard(settings, load_rules(settings.guard.rules))
    service.task = asyncio.create_task(service.run())
    try:
        await standin.wait_for_pauses(1, timeout=20)
        dead = await read_topic(kafka_bootstrap, topics.dlq, expected=2)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
    finally:
        await service.shutdown()
    assert standin.status("camp_a") == "paused" and standin.status("camp_b") == "running"
    assert standin.pause_requests("camp_a")[0].header("Authorization") == "Bearer sk_live_workspace_a_1234"
    assert [(e["campaign_id"], e["outcome"], e["workspace_id"]) for e in events] == [
        ("camp_a", "fired", "ws_a"),
        ("camp_a", "paused", "ws_a"),
    ]
    # fired on camp_a's tenth bounce of its own topic: the misrouted one was not counted
    fired_on = datetime.fromisoformat(events[0]["evidence"]["evidence_to"]).timestamp()
    assert fired_on == pytest.approx(start + 19, abs=0.01)
    reasons = sorted(dict(record.headers)["guard.error"].decode() for record in dead)
    assert reasons == [
        f"misrouted: data.workspaceId 'ws_a' is not ws_b, the workspace of topic {topic_b} (GUARD_TOPIC_WORKSPACES)",
        f"misrouted: data.workspaceId 'ws_b' is not ws_a, the workspace of topic {topics.input} "
        "(GUARD_TOPIC_WORKSPACES)",
    ]


@pytest.mark.integration
async def test_a_campaign_keeps_its_workspace_key_across_a_restart_from_a_checkpoint(
    kafka_bootstrap: str,
    kafka_broker: BrokerInfo,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    tmp_path: Path,
) -> None:
    """camp_a's events name ws_a before a SIGTERM, not after: restored from the checkpoint, the rule
    scoped to ws_a still fires for it (the engine's state holds the workspace), and the pause is made with
    ws_a's key, not failed for want of one (no single key is set)."""
    state_topic = f"state-{topics.group}"
    await create_state_topic(kafka_bootstrap, state_topic)
    standin.add_workspace("ws_a", "sk_live_workspace_a_1234")
    standin.add_campaign("camp_a", workspace="ws_a")
    (tmp_path / "keys.yaml").write_text(KEYS)
    (tmp_path / "rules.yaml").write_text(SCOPED_RULES)
    settings = settings_for(
        kafka_broker, standin, topics, rules=tmp_path / "rules.yaml", state_topic=state_topic, checkpoint_interval=0.2
    )
    settings.leadterra = LeadterraSettings(
        api_url=standin.url, api_keys_file=tmp_path / "keys.yaml", backoff_initial=0.02, backoff_max=0.1
    )
    start = time.time() - 600

    def hard_bounce(i: int, **workspace: str) -> tuple[str, bytes]:
        value = envelope("message.bounced", "camp_a", start + i, messageId=f"b{i}", bounceType="hard", **workspace)
        return ("camp_a", value)

    await produce(producer, topics.input, [hard_bounce(i, workspaceId="ws_a") for i in range(6)])
    first = Guard(settings, load_rules(settings.guard.rules))
    first.task = asyncio.create_task(first.run())
    try:
        await until(lambda: first.metrics.records.labels("counted")._value.get() == 6, timeout=20)
    finally:
        await first.shutdown()
    assert first.metrics.checkpoints.labels("written")._value.get() >= 1

    second = Guard(settings, load_rules(settings.guard.rules))
    second.task = asyncio.create_task(second.run())
    try:
        await produce(producer, topics.input, [hard_bounce(i) for i in range(6, 10)])
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2, timeout=20))
    finally:
        await second.shutdown()
    assert second.metrics.checkpoints.labels("restored")._value.get() == 1
    assert [(e["outcome"], e["workspace_id"]) for e in events] == [("fired", "ws_a"), ("paused", "ws_a")]
    assert standin.pause_requests("camp_a")[0].header("Authorization") == "Bearer sk_live_workspace_a_1234"


class TestKeysFile:
    def test_reads_yaml_and_json(self, tmp_path: Path) -> None:
        (tmp_path / "keys.yaml").write_text(KEYS)
        (tmp_path / "keys.json").write_text('{"ws_a": "sk_live_a_0001"}')
        keys = read_api_keys(tmp_path / "keys.yaml")
        assert {ws: key.get_secret_value() for ws, key in keys.items()} == {
            "ws_a": "sk_live_workspace_a_1234",
            "ws_b": "sk_live_workspace_b_5678",
        }
        assert read_api_keys(tmp_path / "keys.json")["ws_a"].get_secret_value() == "sk_live_a_0001"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("- sk_live_only_a_key", "must map workspace ids to keys"),
            ("ws_a: 'sk live with space'", "the key of workspace ws_a is empty or holds characters"),
            ("ws_a: [sk_live_x]", "the key of workspace ws_a is empty"),
            ("'ws a': sk_live_secret_9", "is not a workspace id"),
        ],
    )
    def test_a_wrong_file_is_a_clear_error_without_the_key(self, tmp_path: Path, text: str, message: str) -> None:
        (tmp_path / "keys.yaml").write_text(text)
        with pytest.raises(ConfigError) as raised:
            read_api_keys(tmp_path / "keys.yaml")
        assert message in str(raised.value)
        secret = text.split(":")[-1].strip(" -[]'")
        assert secret not in str(raised.value)

    def test_ids_are_read_as_written(self, tmp_path: Path) -> None:
        """Unquoted, YAML 1.1 reads `0123` as 83, `on` as true and `1:30` as 90: refused with the wrong id."""
        (tmp_path / "keys.yaml").write_text("0123: sk_live_a_0001\non: sk_live_b_0002\n1:30: sk_live_c_0003\n")
        assert sorted(read_api_keys(tmp_path / "keys.yaml")) == ["0123", "1:30", "on"]

    def test_a_workspace_written_twice_is_refused(self, tmp_path: Path) -> None:
        """A loader keeps the last of two without a word: a rotation appended below the old key would work or not by
        its place in the file."""
        (tmp_path / "keys.yaml").write_text("ws_a: sk_live_old_0001\nws_b: sk_live_b_0002\nws_a: sk_live_new_0003\n")
        with pytest.raises(ConfigError, match="LEADTERRA_API_KEYS_FILE: the key on line 3 is written twice; keep one"):
            read_api_keys(tmp_path / "keys.yaml")


def test_a_key_that_works_again_is_no_longer_reported() -> None:
    """Every key rejected (not live), then one works again after its rotation: live, the other still named."""
    health = Health()
    health.authentication_failed("ws_a", keys=2)
    health.authentication_failed(None, keys=2)
    assert health.auth_failed and not health.live()[0]
    health.authenticated(None)
    assert health.live()[0] and not health.auth_failed
    assert [w for w in health.warnings() if "401" in w] == [
        "Leadterra rejected the API key of workspace ws_a (401): its campaigns cannot be paused"
    ]


class TestMappedTopicsKeys:
    """A topic GUARD_TOPIC_WORKSPACES maps to a workspace the keys file lacks (a typo in either, or a key not there
    yet) is told at start-up, naming a close workspace of the file but never listing the file's ids (one written the
    wrong way round holds keys there); the guard starts, and protects every other workspace (review S2)."""

    @pytest.fixture(autouse=True)
    def mapped_topics(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        (tmp_path / "keys.yaml").write_text(KEYS)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
        monkeypatch.setenv("GUARD_INPUT_TOPICS", "leadterra.a,leadterra.b,leadterra.c")
        monkeypatch.setenv("GUARD_TOPIC_WORKSPACES", "leadterra.a=ws_a,leadterra.b=ws_bb,leadterra.c=acme_eu")
        monkeypatch.setenv("LEADTERRA_API_KEYS_FILE", str(tmp_path / "keys.yaml"))
        for name in ("LEADTERRA_API_KEY", "LEADTERRA_API_KEY_FILE", "GUARD_DRY_RUN"):
            monkeypatch.delenv(name, raising=False)

    def test_each_unkeyed_workspace_is_told_with_a_close_one(self) -> None:
        assert Settings.from_env().unkeyed_workspaces() == {
            "acme_eu": "GUARD_TOPIC_WORKSPACES maps leadterra.c to it, LEADTERRA_API_KEYS_FILE has no key for it",
            "ws_bb": "GUARD_TOPIC_WORKSPACES maps leadterra.b to it, LEADTERRA_API_KEYS_FILE has no key for it; "
            "did you mean ws_b?",
        }

    def test_a_file_written_the_wrong_way_round_is_never_quoted(self, tmp_path: Path) -> None:
        (tmp_path / "keys.yaml").write_text("sk_live_AbCdEf0123456789: ws_a\nsk_live_ZyXwVu9876543210: ws_b\n")
        told = " ".join(Settings.from_env().unkeyed_workspaces().values())
        assert "sk_live" not in told and "ws_bb" not in told

    def test_a_mapping_the_keys_file_holds_tells_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GUARD_TOPIC_WORKSPACES", "leadterra.a=ws_a,leadterra.b=ws_b")
        assert Settings.from_env().unkeyed_workspaces() == {}


def test_readyz_names_a_few_workspaces_without_a_key_and_counts_the_rest() -> None:
    """However many (events naming 300 workspaces the file lacks), at most one warning for them (review S5)."""
    health = Health()
    health.no_key(None)
    health.no_key("ws_bb", "GUARD_TOPIC_WORKSPACES maps leadterra.b to it; did you mean ws_b?")
    for n in range(300):
        health.no_key(f"ws_{n:03d}")
    assert health.warnings() == [
        "no LEADTERRA_API_KEY: campaigns whose events name no workspace cannot be paused",
        "no API key for workspace ws_bb (GUARD_TOPIC_WORKSPACES maps leadterra.b to it; did you mean ws_b?), ws_000, "
        "ws_001, ws_002, ws_003 and 296 more: not in LEADTERRA_API_KEYS_FILE, and no LEADTERRA_API_KEY; their "
        "campaigns cannot be paused: add their keys to the file and restart",
    ]
    assert health.live()[0] and not health.auth_failed
