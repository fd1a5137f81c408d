"""`guard run` as a real process: environment settings, JSON logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from guard.engine.kinds import compiled
from guard.testing.broker import BrokerInfo, EmbeddedBroker
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn

RULES = Path(__file__).parent.parent / "rules"
GUARD = [sys.executable, "-m", "guard.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *GUARD, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


class TestSettingsErrors:
    async def test_refuses_to_start_with_a_clear_message_on_wrong_settings(self) -> None:
        """Wrong settings fail fast, exit 2, and name every wrong variable."""
        code, _, err = await run_cli(
            "run", env={"GUARD_HTTP_PORT": "eighty", "LEADTERRA_API_URL": "app.leadterra.co", "LEADTERRA_API_KEY": "k"}
        )
        assert code == 2
        assert "GUARD_HTTP_PORT" in err and "LEADTERRA_API_URL" in err

    async def test_refuses_to_start_without_an_api_key_unless_dry_run(self) -> None:
        """No key and no dry run: nothing could be paused, so the guard will not pretend."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADTERRA_")}
        process = await asyncio.create_subprocess_exec(
            *GUARD, "run", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await process.communicate()
        assert process.returncode == 2
        assert "LEADTERRA_API_KEY" in err.decode()

    async def test_refuses_to_start_with_invalid_rules(self, tmp_path: Path) -> None:
        """An invalid rule file stops start-up with the file, line and problem."""
        (tmp_path / "bad.yaml").write_text(
            "groups:\n  - name: g\n    rules:\n      - name: x\n        description: d\n        count: sent\n        window: 5q\n        threshold: 3\n"
        )
        code, _, err = await run_cli("run", env={"GUARD_RULES": str(tmp_path), "LEADTERRA_API_KEY": "k"})
        assert code == 2
        assert f"{tmp_path / 'bad.yaml'}:7: rule x: window:" in err


# `guard run` in a process that cannot import the compiled core, whether it is installed or not
WITHOUT_CORE = [
    sys.executable,
    "-c",
    "import sys; sys.modules['guard_core'] = None; from guard.cli import main; sys.exit(main())",
]


def start_up_line(command: list[str], engine: str) -> tuple[int, dict[str, object]]:
    """`guard run` with GUARD_ENGINE=engine and no broker behind KAFKA_BOOTSTRAP_SERVERS: it logs its
    start-up line, gives up on Kafka at once and exits 2. Its exit code and that line."""
    import subprocess

    env = {
        **os.environ,
        "GUARD_ENGINE": engine,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "GUARD_KAFKA_CONNECT_TIMEOUT": "0.1",
        "GUARD_HTTP_HOST": "127.0.0.1",
        "GUARD_HTTP_PORT": "0",
        "GUARD_DRY_RUN": "true",
        "GUARD_RULES": str(RULES),
    }
    result = subprocess.run([*command, "run"], capture_output=True, text=True, env=env, timeout=60, check=False)
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (config,) = [entry for entry in logs if entry["event"] == "guard starting"]
    return result.returncode, config


class TestEngineChoice:
    """GUARD_ENGINE: the start-up line names the engine that runs; a compiled core asked for and missing stops the start."""

    def test_compiled_without_the_core_is_one_line_and_exit_2(self) -> None:
        import subprocess

        env = {**os.environ, "GUARD_ENGINE": "compiled", "LEADTERRA_API_KEY": "k", "GUARD_RULES": str(RULES)}
        result = subprocess.run(
            [*WITHOUT_CORE, "run"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert line.startswith("guard: GUARD_ENGINE=compiled, but the compiled core (guard-core) is not installed")
        assert "set GUARD_ENGINE=auto or python to run the Python engine" in line

    def test_auto_without_the_core_says_the_python_engine_runs_and_why(self) -> None:
        code, config = start_up_line(WITHOUT_CORE, "auto")
        assert code == 2  # Kafka not reachable: the line came before
        assert config["engine"] == "python"
        assert "the compiled core (guard-core) is not installed: the Python engine runs" in str(config["engine_reason"])

    def test_python_is_the_python_engine_with_nothing_to_explain(self) -> None:
        _, config = start_up_line(GUARD, "python")
        assert config["engine"] == "python" and "engine_reason" not in config

    def test_a_core_without_a_version_is_not_taken(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Something else named guard_core, with none of its parts: `auto` runs the Python engine, `compiled` says
        why it cannot start; neither fails on a missing attribute mid-start."""
        import types

        from guard.engine import kinds

        stale = types.ModuleType("guard_core")
        stale.SlidingCount = stale.LastN = stale.Cusum = object  # type: ignore[attr-defined]  # no DedupeStore
        monkeypatch.setitem(sys.modules, "guard_core", stale)
        assert kinds.compiled() is None
        assert kinds.choose("auto") is kinds.PYTHON
        with pytest.raises(kinds.CoreMissing, match="is not installed"):
            kinds.choose("compiled")

    @pytest.mark.compiled_core
    def test_a_core_built_from_other_sources_is_not_taken(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The guard upgraded, its core not rebuilt: every part there, but an older build's signatures and decoding
        (its `DedupeStore.seal` called with a newer signature stopped the engine at its first pause). `auto` runs the
        Python engine and says why; `compiled` stops the start with both versions named."""
        import guard_core

        from guard.engine import kinds
        from guard.runtime.startup import engine_fallback

        assert kinds.compiled() is not None
        monkeypatch.setattr(guard_core, "__version__", "0.1.0")
        assert kinds.compiled() is None
        assert kinds.choose("auto") is kinds.PYTHON
        assert engine_fallback().startswith(
            f"the installed compiled core is guard-core 0.1.0, a build of other sources than this guard's "
            f"({kinds.CORE_VERSION}): the Python engine runs"
        )
        with pytest.raises(kinds.CoreMissing, match=r"guard-core 0\.1\.0, a build of other sources"):
            kinds.choose("compiled")

    @pytest.mark.compiled_core
    def test_a_core_whose_series_keep_other_fields_is_not_taken(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A core built from other sources that has every part, but series of other fields: its snapshots would
        not be the Python engine's (nor read its), so `auto` runs the Python engine."""
        import guard_core

        from guard.engine import kinds

        assert kinds.compiled() is not None
        skewed = {**guard_core.series_fields(), "cusum": ["rise", "fall", "statistic"]}
        monkeypatch.setattr(guard_core, "series_fields", lambda: skewed)
        assert kinds.compiled() is None
        assert kinds.choose("auto") is kinds.PYTHON

    @pytest.mark.compiled_core
    @pytest.mark.parametrize("engine", ["auto", "compiled"])
    def test_the_compiled_core_runs_when_installed(self, engine: str) -> None:
        _, config = start_up_line(GUARD, engine)
        assert config["engine"] == "compiled" and "engine_reason" not in config


@pytest.mark.integration  # starts a broker of its own
class TestBrokerWithoutIdempotence:
    async def test_a_refused_idempotent_producer_is_one_line_naming_the_setting_and_exit_2(self) -> None:
        """The default KAFKA_ENABLE_IDEMPOTENCE=true against a broker without it (Tansu rejects
        InitProducerId): one `guard:` line that names the setting, no traceback, exit 2 like other
        configuration errors. Its own Tansu: the broker that refuses is what is under test."""
        suffix = uuid.uuid4().hex[:8]
        with EmbeddedBroker() as tansu:
            code, _, err = await asyncio.wait_for(
                run_cli(
                    "run",
                    env={
                        "KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap_servers,
                        "KAFKA_ENABLE_IDEMPOTENCE": "true",
                        "GUARD_DRY_RUN": "true",
                        "GUARD_RULES": str(RULES),
                        "GUARD_INPUT_TOPICS": f"events-{suffix}",
                        "GUARD_AUDIT_TOPIC": f"audit-{suffix}",
                        "GUARD_DLQ_TOPIC": f"dlq-{suffix}",
                        "GUARD_GROUP_ID": f"guard-{suffix}",
                        "GUARD_HTTP_HOST": "127.0.0.1",
                        "GUARD_HTTP_PORT": str(free_port()),
                    },
                ),
                timeout=60,
            )
        assert code == 2, err
        ours = [line for line in err.splitlines() if line.startswith("guard: ")]
        assert len(ours) == 1, err
        assert "KAFKA_ENABLE_IDEMPOTENCE=false" in ours[0]
        assert "Traceback" not in err

    async def test_guard_exempt_and_guard_ingest_name_the_setting_too(self) -> None:
        """The same broker under `guard exempt` (review Q3: "cannot reach the control topic: [Error -1]
        UnknownError") and `guard ingest` (answered 503, "Kafka unreachable", retrying without end): each names the
        setting, exempt in one line with exit 2, ingest on /readyz and in its log while it retries."""
        from guard.ingest.app import Ingest, IngestConfig
        from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings

        suffix = uuid.uuid4().hex[:8]
        with EmbeddedBroker() as tansu:
            code, _, err = await asyncio.wait_for(
                run_cli(
                    "exempt",
                    "camp_seed_*",
                    "--for",
                    "1h",
                    "--reason",
                    "seed-list test",
                    env={
                        "KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap_servers,
                        "KAFKA_ENABLE_IDEMPOTENCE": "true",
                        "GUARD_CONTROL_TOPIC": f"control-{suffix}",
                    },
                ),
                timeout=60,
            )
            assert code == 2, err
            ours = [line for line in err.splitlines() if line.startswith("guard: ")]
            assert len(ours) == 1 and "KAFKA_ENABLE_IDEMPOTENCE=false" in ours[0], err

            service = Ingest(
                IngestConfig(
                    kafka=KafkaSettings(bootstrap_servers=tansu.bootstrap_servers, enable_idempotence=True),
                    guard=GuardSettings(input_topics=(f"events-{suffix}",), http_host="127.0.0.1", http_port=0),
                    ingest=IngestSettings(),
                    webhook_secrets=(b"whsec_test_only",),
                )
            )
            task = asyncio.create_task(service.run())
            try:
                deadline = time.monotonic() + 30
                while "KAFKA_ENABLE_IDEMPOTENCE=false" not in (service.health.kafka_error or ""):
                    assert not task.done() and time.monotonic() < deadline, service.health.ready()
                    await asyncio.sleep(0.05)
                ready, reason = service.health.ready()
                assert not ready and "KAFKA_ENABLE_IDEMPOTENCE=false" in reason
            finally:
                service.stop()
                await task


class TestRun:
    # both engines as a user runs them: the default (the compiled core, where it is built) and the Python one
    # (a machine without a Rust compiler, or GUARD_ENGINE=python)
    @pytest.mark.parametrize("engine", ["auto", "python"])
    async def test_pauses_a_bad_campaign_and_stops_cleanly_on_sigterm(
        self, kafka_broker: BrokerInfo, engine: str
    ) -> None:
        """The real process pauses over real HTTP, logs JSON without the key, and exits 0 on SIGTERM."""
        suffix = uuid.uuid4().hex[:8]
        topic, port = f"events-{suffix}", free_port()
        async with LeadterraStandIn(api_key="sk_test_secret_value") as standin:
            standin.add_campaign("camp_bad")
            standin.add_campaign("camp_good")
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
                "KAFKA_SESSION_TIMEOUT_MS": "2000",
                "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
                "LEADTERRA_API_URL": standin.url,
                "LEADTERRA_API_KEY": standin.api_key,
                "GUARD_RULES": str(RULES),
                "GUARD_INPUT_TOPICS": topic,
                "GUARD_AUDIT_TOPIC": f"audit-{suffix}",
                "GUARD_DLQ_TOPIC": f"dlq-{suffix}",
                "GUARD_GROUP_ID": f"guard-{suffix}",
                "GUARD_HTTP_HOST": "127.0.0.1",
                "GUARD_HTTP_PORT": str(port),
                "GUARD_ENGINE": engine,
            }
            if not kafka_broker.idempotence:  # else the default: the idempotent producer
                env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_broker.bootstrap_servers, acks="all", **kafka_broker.producer_overrides
            )
            await producer.start()
            start = time.time() - 600
            for i in range(200):
                await producer.send(topic, key=b"camp_bad", value=sent("camp_bad", start + i))
                await producer.send(topic, key=b"camp_good", value=sent("camp_good", start + i))
            for i in range(15):
                await producer.send(topic, key=b"camp_bad", value=bounced("camp_bad", start + 200 + i))
            await producer.flush()
            await producer.stop()

            process = await asyncio.create_subprocess_exec(
                *GUARD, "run", env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                await standin.wait_for_pauses(1, timeout=30)
                # a first pause can come from the first partition caught up while others still
                # replay: ready follows once every partition has (README: /readyz)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    deadline = time.monotonic() + 10
                    while (ready := await http.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    assert ready.status_code == 200, ready.text
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(process.communicate(), timeout=30)
            finally:
                if process.returncode is None:
                    process.kill()
            assert process.returncode == 0
            assert time.monotonic() - started < 10
            assert [r.campaign_id for r in standin.pause_requests()] == ["camp_bad"]
            logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
            messages = [entry["event"] for entry in logs]
            assert "guard started" in messages and "pause paused" in messages and messages[-1] == "guard stopped"
            assert any(entry["logger"].startswith("aiokafka.") for entry in logs)  # stdlib logs join the JSON stream
            assert "sk_test_secret_value" not in err.decode()
            [config] = [entry for entry in logs if entry["event"] == "guard starting"]
            assert config["engine"] == ("python" if engine == "python" or compiled() is None else "compiled")


class TestShellManners:
    """What a shell user meets: a closed pipe and a wrong port end with one line or none, never a traceback."""

    def test_a_reader_that_goes_away_ends_the_output_quietly(self) -> None:
        import subprocess

        process = subprocess.Popen([*GUARD, "audit-schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # before the first write: the guard meets a broken pipe, as under `| head`
        _, err = process.communicate(timeout=60)
        assert process.returncode == 1
        assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()

    def test_a_port_out_of_range_is_one_line(self) -> None:
        import subprocess

        result = subprocess.run([*GUARD, "standin", "--port", "99999"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "99999 is not a TCP port" in result.stderr.splitlines()[-1]

    @pytest.mark.parametrize("command", ["run", "ingest"])
    def test_a_taken_port_is_one_line(self, command: str) -> None:
        """`guard run` and `guard ingest` on a port another process holds: one line naming the settings, exit 2."""
        import subprocess

        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            env = {
                **os.environ,
                "GUARD_HTTP_HOST": "127.0.0.1",
                "GUARD_HTTP_PORT": str(port),
                "GUARD_DRY_RUN": "true",
                "GUARD_RULES": str(RULES),
                "LEADTERRA_WEBHOOK_SECRET": "whsec_port",
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # never reached: the port comes first
            }
            result = subprocess.run([*GUARD, command], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.startswith("guard:")]
        assert f"127.0.0.1:{port} (GUARD_HTTP_HOST, GUARD_HTTP_PORT)" in line
