"""Secrets never leave the process: the API key and the SASL password are fed through every error
path, and every output (stdout, stderr, audit and dead-letter topics, /metrics, /readyz, /livez)
is searched for them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr
from test_cli_run import GUARD, RULES, free_port, run_cli
from test_dispatch import pause_decision
from test_service import read_topic

from guard.actions.audit import audit_event
from guard.actions.pause import PauseClient
from guard.contracts.audit import Result
from guard.testing.broker import BrokerInfo
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn

API_KEY = "sk_live_" + uuid.uuid4().hex
SASL_PASSWORD = "pw-" + uuid.uuid4().hex
SECRETS = (API_KEY, SASL_PASSWORD)


def leaks(*outputs: str | bytes | None) -> list[str]:
    """Which secrets (or their first half) appear in any output."""
    text = "\n".join(o.decode(errors="replace") if isinstance(o, bytes) else (o or "") for o in outputs)
    return [secret for secret in SECRETS if secret in text or secret[: len(secret) // 2] in text]


def without_settings() -> dict[str, str]:
    return {k: "" for k in os.environ if k.startswith(("LEADTERRA_", "KAFKA_", "GUARD_"))}


SASL_INCOMPLETE = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": SASL_PASSWORD}


class TestSettingsErrors:
    """Wrong settings: a message naming the variable, exit 2, no traceback, no secret."""

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            pytest.param(
                {"LEADTERRA_API_KEY": f"sk_live_{API_KEY[8:20]} {API_KEY[20:]}"},
                "LEADTERRA_API_KEY",
                id="key-with-a-space",
            ),
            pytest.param(
                {"LEADTERRA_API_KEY": API_KEY + "\x01"}, "LEADTERRA_API_KEY", id="key-with-a-control-character"
            ),
            pytest.param({"LEADTERRA_API_KEY": ""}, "LEADTERRA_API_KEY", id="empty-key"),
            pytest.param({"LEADTERRA_API_KEY": " \n"}, "LEADTERRA_API_KEY", id="blank-key"),
            pytest.param(
                {
                    **SASL_INCOMPLETE,
                    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                    "KAFKA_SASL_USERNAME": "guard",
                    "KAFKA_SASL_PASSWORD": " \t",
                    "LEADTERRA_API_KEY": API_KEY,
                },
                "KAFKA_SASL_PASSWORD",
                id="blank-sasl-password",
            ),
            pytest.param(
                {"LEADTERRA_API_KEY": API_KEY, "LEADTERRA_API_URL": "http://api.example.com"},
                "LEADTERRA_ALLOW_INSECURE_HTTP",
                id="cleartext-api-url",
            ),
            pytest.param(
                {**SASL_INCOMPLETE, "LEADTERRA_API_KEY": API_KEY}, "KAFKA_SASL_USERNAME", id="incomplete-sasl"
            ),
            pytest.param(
                {
                    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                    "KAFKA_SASL_MECHANISM": "PLAIN",
                    "KAFKA_SASL_USERNAME": "guard",
                    "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                    "LEADTERRA_API_KEY": API_KEY,
                },
                "KAFKA_ALLOW_INSECURE_SASL_PLAIN",
                id="sasl-plain-in-cleartext",
            ),
        ],
    )
    async def test_guard_run(self, env: dict[str, str], named: str) -> None:
        code, out, err = await run_cli("run", env={**without_settings(), **env})
        assert code == 2, err
        assert named in err and "Traceback" not in err
        assert leaks(out, err) == []

    async def test_guard_replay_with_incomplete_sasl_settings(self) -> None:
        """Incomplete Kafka settings: the message alone, like `guard run` (no pydantic traceback)."""
        code, out, err = await run_cli("replay", "kafka:events", env={**without_settings(), **SASL_INCOMPLETE})
        assert code == 2, err
        assert "KAFKA_SASL_USERNAME" in err and "Traceback" not in err
        assert leaks(out, err) == []

    async def test_guard_replay_when_the_brokers_cannot_be_reached(self) -> None:
        """A connection error: one line saying so, exit 1."""
        env = {
            **without_settings(),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "guard",
            "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        }
        code, out, err = await run_cli("replay", "kafka:events", env=env)
        assert code == 1, err
        assert "cannot read kafka:events" in err and "Traceback" not in err
        assert leaks(out, err) == []


class TestPauseErrors:
    async def test_transport_errors_carrying_the_key_are_redacted_in_the_audit_event(self) -> None:
        """A key no header can carry (only possible bypassing the settings): h11's error quotes it;
        the audit event does not."""
        async with LeadterraStandIn(api_key=API_KEY) as standin:
            standin.add_campaign("camp_1")
            client = PauseClient(standin.url, SecretStr(API_KEY + "\n"), deadline=0.3, backoff_initial=0.01)
            try:
                result = await client.pause("camp_1", "idem")
            finally:
                await client.aclose()
        assert result.outcome == "failed" and result.error is not None and API_KEY in result.error  # premise
        event = audit_event(
            pause_decision("camp_1"),
            "failed",
            decided_at=time.time(),
            dry_run=False,
            result=Result(
                http_status=None,
                attempts=result.attempts,
                paused_at=None,
                campaign_status=None,
                error_code=result.error_code,
                error=result.error,
            ),
        )
        assert leaks(event.model_dump_json()) == [] and "***" in (event.result.error or "")


class TestRunOutputs:
    async def test_no_output_of_a_run_holds_a_secret(self, kafka_broker: BrokerInfo) -> None:
        """A key pasted with a newline (stripped: it works), an API that echoes the request's
        headers in 5xx and 400 bodies, a SASL password in the environment, a malformed record:
        stdout, stderr, the audit and dead-letter topics and the HTTP endpoints hold neither secret."""
        suffix = uuid.uuid4().hex[:8]
        topic, audit, dlq, port = f"events-{suffix}", f"audit-{suffix}", f"dlq-{suffix}", free_port()
        echo = f'{{"error": {{"code": "Bearer {API_KEY}", "message": "Authorization: Bearer {API_KEY}"}}}}'
        async with LeadterraStandIn(api_key=API_KEY) as standin:
            standin.add_campaign("camp_echo_503")
            standin.add_campaign("camp_echo_400")
            standin.fail_next(1000, 503, campaign_id="camp_echo_503", body=echo)
            standin.fail_next(1, 400, campaign_id="camp_echo_400", body=echo)
            env = {
                **without_settings(),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
                "KAFKA_ENABLE_IDEMPOTENCE": str(kafka_broker.kind != "tansu").lower(),
                "KAFKA_SESSION_TIMEOUT_MS": "2000",
                "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
                "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                "LEADTERRA_API_URL": standin.url,
                "LEADTERRA_API_KEY": API_KEY + "\n",
                "LEADTERRA_RETRY_DEADLINE": "1",
                "LEADTERRA_BACKOFF_INITIAL": "0.05",
                "GUARD_RULES": str(RULES),
                "GUARD_INPUT_TOPICS": topic,
                "GUARD_AUDIT_TOPIC": audit,
                "GUARD_DLQ_TOPIC": dlq,
                "GUARD_GROUP_ID": f"guard-{suffix}",
                "GUARD_HTTP_HOST": "127.0.0.1",
                "GUARD_HTTP_PORT": str(port),
                "GUARD_LOG_LEVEL": "DEBUG",
            }
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=2, replication_factor=1) for t in (topic, audit, dlq)]
                )
            finally:
                await admin.close()
            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_broker.bootstrap_servers, acks="all", **kafka_broker.producer_overrides
            )
            await producer.start()
            start = time.time() - 600
            try:
                await producer.send(topic, key=b"camp_x", value=f"not json {API_KEY} {SASL_PASSWORD}".encode())
                for campaign in ("camp_echo_503", "camp_echo_400"):
                    for i in range(200):
                        await producer.send(topic, key=campaign.encode(), value=sent(campaign, start + i))
                    for i in range(15):
                        await producer.send(topic, key=campaign.encode(), value=bounced(campaign, start + 200 + i))
                await producer.flush()
            finally:
                await producer.stop()

            # output to files, not pipes: a DEBUG run fills a pipe nobody reads and then blocks
            with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
                process = await asyncio.create_subprocess_exec(
                    *GUARD, "run", env={**os.environ, **env}, stdout=stdout, stderr=stderr
                )
                try:
                    # per campaign: the burst rule pauses (fired, failed), the rate rule follows (fired, already_paused)
                    outcomes = await read_topic(kafka_broker.bootstrap_servers, audit, expected=8, timeout=30)
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                        pages = [(await http.get(path)).text for path in ("/metrics", "/readyz", "/livez")]
                    process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(process.wait(), timeout=30)
                finally:
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                out, err = (stream.seek(0) or stream.read() for stream in (stdout, stderr))
            answered = {r.status for r in standin.pause_requests()}
            dead = await read_topic(kafka_broker.bootstrap_servers, dlq, expected=1)
        assert leaks(out, err, *[record.value for record in outcomes], *pages) == []
        # the API echoed the key in both; each campaign's second rule, covered by a pause that failed, calls for
        # itself: once more into the 503s, and once past the single 400
        assert answered == {200, 400, 503}
        audit_values = [record.value for record in outcomes]
        assert sorted(json.loads(value)["outcome"] for value in audit_values) == [
            *["failed"] * 3,
            *["fired"] * 4,
            "paused",
        ], err.decode()
        dead_headers = [value for record in dead for _, value in record.headers]
        # the malformed record is dead-lettered as it came: the DLQ copies input, it is no output of ours
        assert leaks(*dead_headers) == []
