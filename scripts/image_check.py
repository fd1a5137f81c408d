"""The checks of scripts/image-check.sh: the built image's `guard validate`, `guard run` and `guard ingest`,
each in a container run as the Helm chart runs it, against Tansu and the Leadterra stand-in on 127.0.0.1.

    python scripts/image_check.py --image localhost/deliverability-guard:image-check [--label key=value]

One line per check; exit 1 at the first that fails, with the container's log. Containers are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from guard.ingest.app import WEBHOOK_PATH
from guard.ingest.signature import SIGNATURE_HEADER, sign
from guard.testing.broker import EmbeddedBroker, free_port
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn

ROOT = Path(__file__).resolve().parent.parent
CHART_RULES = ROOT / "helm" / "deliverability-guard" / "files" / "rules"  # the chart's default rules ConfigMap
API_KEY = "sk_test_image_check"
WEBHOOK_SECRET = b"whsec_image_check"
PAUSE_TIMEOUT = 90.0  # generous: CI runs this beside the whole suite on two cores


class CheckFailed(Exception):
    pass


def say(line: str) -> None:
    print(f"  {line}", flush=True)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise CheckFailed(f"podman {' '.join(args[:2])}: exit {result.returncode}\n{result.stderr.strip()}")
    return result


def container_log(name: str) -> str:
    """Its stderr (the guard's JSON log) and stdout."""
    log = podman("logs", name)
    return log.stderr + log.stdout


class Containers:
    """`podman run` with the chart's pod: UID/GID 10001, read-only root, /tmp a tmpfs (the emptyDir),
    every capability dropped, no privilege escalation, the rules and secrets mounted read-only."""

    def __init__(self, image: str, label: str, secrets: Path) -> None:
        self.image, self.label, self.secrets = image, label, secrets
        self.names: list[str] = []

    def options(self, env: dict[str, str], mounts: dict[str, str]) -> list[str]:
        options = [
            "--network=host",
            f"--label={self.label}",
            "--user=10001:10001",
            "--read-only",
            "--read-only-tmpfs=false",  # else podman adds writable /run and /var/tmp the chart has not
            "--tmpfs=/tmp:rw,mode=1777",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--volume={CHART_RULES}:/etc/guard/rules:ro",
        ]
        options += [f"--volume={self.secrets / source}:{target}:ro" for source, target in mounts.items()]
        return options + [f"--env={name}={value}" for name, value in env.items()]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The container to its end (an init container's way)."""
        return podman("run", "--rm", *self.options({}, {}), self.image, *args, check=False)

    def start(self, name: str, env: dict[str, str], mounts: dict[str, str], *args: str) -> str:
        full = f"guard-image-check-{name}-{uuid.uuid4().hex[:6]}"
        podman("run", "--detach", f"--name={full}", *self.options(env, mounts), self.image, *args)
        self.names.append(full)
        return full

    def stop(self, name: str) -> tuple[int, str]:
        """SIGTERM, as Kubernetes stops a pod: the exit code and the whole log."""
        podman("stop", "--time=30", name)
        code = int(podman("inspect", "--format={{.State.ExitCode}}", name).stdout.strip())
        return code, container_log(name)

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "--force", name, check=False)


def still_running(container: str, before: str) -> None:
    state = podman("inspect", "--format={{.State.Status}}", container).stdout.strip()
    if state != "running":
        raise CheckFailed(f"{container} is {state} {before}\n--- its log (end) ---\n{container_log(container)[-4000:]}")


async def until_paused(standin: LeadterraStandIn, container: str) -> None:
    deadline = time.monotonic() + PAUSE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            await standin.wait_for_pauses(1, timeout=1)
            return
        except TimeoutError:
            still_running(container, "before a pause")
    raise CheckFailed(f"{container} paused nothing within {PAUSE_TIMEOUT:.0f} s\n{container_log(container)[-4000:]}")


async def until_ready(port: int, container: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            still_running(container, "before /readyz answered 200")
            await asyncio.sleep(0.2)
    raise CheckFailed(f"{container}: /readyz not 200 within {timeout:.0f} s")


def failed_if(what: str, log: str, *conditions: tuple[bool, str]) -> None:
    """CheckFailed naming every condition that holds, with the end of the container's log."""
    if problems := [problem for failed, problem in conditions if failed]:
        raise CheckFailed(f"{what}: {'; '.join(problems)}\n--- its log (end) ---\n{log[-4000:]}")


def logged(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def logged_events(log: str) -> list[str]:
    return [str(entry.get("event", "")) for entry in logged(log)]


def engine_of(log: str) -> object:
    """The engine `guard run`'s start-up line names (None without that line)."""
    return next((entry.get("engine") for entry in logged(log) if entry.get("event") == "guard starting"), None)


def check_validate(containers: Containers) -> None:
    """The chart's init container: `guard validate /etc/guard/rules`."""
    result = containers.run("validate", "/etc/guard/rules")
    if result.returncode != 0:
        raise CheckFailed(f"guard validate: exit {result.returncode}\n{result.stdout}{result.stderr}")
    say(f"validate: exit 0 ({(result.stdout + result.stderr).strip().splitlines()[-1]})")


async def check_run(containers: Containers, broker: EmbeddedBroker, standin: LeadterraStandIn) -> None:
    """`guard run` counts with the compiled core (built in the image's build stage), reads a bad campaign's
    bounces and pauses it through the stand-in (and nothing else), answers /readyz, and exits 0 on SIGTERM
    without logging the API key."""
    suffix, port = uuid.uuid4().hex[:8], free_port()
    topic = f"events-{suffix}"
    standin.add_campaign("camp_bad")
    standin.add_campaign("camp_good")
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        start = time.time() - 600
        for i in range(200):
            await producer.send(topic, key=b"camp_bad", value=sent("camp_bad", start + i))
            await producer.send(topic, key=b"camp_good", value=sent("camp_good", start + i))
        for i in range(15):
            await producer.send(topic, key=b"camp_bad", value=bounced("camp_bad", start + 200 + i))
        await producer.flush()
    finally:
        await producer.stop()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu has no idempotent producer
        "LEADTERRA_API_URL": standin.url,
        "LEADTERRA_API_KEY_FILE": "/etc/guard/leadterra/api-key",
        "GUARD_RULES": "/etc/guard/rules",
        "GUARD_INPUT_TOPICS": topic,
        "GUARD_AUDIT_TOPIC": f"audit-{suffix}",
        "GUARD_DLQ_TOPIC": f"dlq-{suffix}",
        "GUARD_GROUP_ID": f"guard-{suffix}",
        "GUARD_HTTP_HOST": "127.0.0.1",
        "GUARD_HTTP_PORT": str(port),
    }
    name = containers.start("run", env, {"leadterra": "/etc/guard/leadterra"}, "run")
    await until_paused(standin, name)
    await until_ready(port, name)
    code, log = containers.stop(name)
    paused = [request.campaign_id for request in standin.pause_requests()]
    failed_if(
        "guard run",
        log,
        (code != 0, f"exit {code} on SIGTERM"),
        (engine_of(log) != "compiled", f'the start-up line says engine={engine_of(log)!r}, not "compiled"'),
        (paused != ["camp_bad"], f"pause calls for {paused}, expected ['camp_bad']"),
        ("pause paused" not in logged_events(log), "no 'pause paused' log line"),
        (API_KEY in log, "the API key is in the log"),
    )
    say(
        f'run: engine="compiled", paused camp_bad (only), /readyz 200, exit 0 on SIGTERM ({len(log.splitlines())} '
        "log lines)"
    )


async def check_ingest(containers: Containers, broker: EmbeddedBroker) -> None:
    """`guard ingest` answers a signed webhook 200 and writes it to the input topic; a forged one is 401."""
    suffix, port = uuid.uuid4().hex[:8], free_port()
    topic = f"webhooks-{suffix}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "LEADTERRA_WEBHOOK_SECRET_FILE": "/etc/guard/ingest/webhook-secret",
        "GUARD_INPUT_TOPICS": topic,
        "GUARD_DLQ_TOPIC": f"dlq-{suffix}",
        "GUARD_HTTP_HOST": "127.0.0.1",
        "GUARD_HTTP_PORT": str(port),
    }
    name = containers.start("ingest", env, {"ingest": "/etc/guard/ingest"}, "ingest")
    await until_ready(port, name)
    body = bounced("camp_webhook", time.time())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        signed = await http.post(WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body)})
        forged = await http.post(WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER: sign(b"whsec_guess", body)})
    records = await read_topic(broker, topic)
    code, log = containers.stop(name)
    failed_if(
        "guard ingest",
        log,
        (
            signed.status_code != 200 or signed.json() != {"status": "accepted"},
            f"signed webhook: {signed.status_code} {signed.text}",
        ),
        (forged.status_code != 401, f"forged webhook answered {forged.status_code}, expected 401"),
        (records != [(b"camp_webhook", body)], f"the topic holds {records}, expected the signed body once"),
        (code != 0, f"exit {code} on SIGTERM"),
    )
    say("ingest: signed webhook 200 accepted and in the topic, forged one 401, exit 0 on SIGTERM")


async def read_topic(broker: EmbeddedBroker, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
        return [(record.key, record.value) for batch in batches.values() for record in batch]
    finally:
        await consumer.stop()


async def main(image: str, label: str) -> int:
    with tempfile.TemporaryDirectory(prefix="guard-image-check-") as scratch:
        secrets = Path(scratch)
        for directory, file, value in (("leadterra", "api-key", API_KEY), ("ingest", "webhook-secret", WEBHOOK_SECRET)):
            (secrets / directory).mkdir(mode=0o755)
            (secrets / directory / file).write_text(value if isinstance(value, str) else value.decode())
            os.chmod(secrets / directory / file, 0o444)  # the chart mounts them readable by the pod's group
        containers = Containers(image, label, secrets)
        try:
            check_validate(containers)
            with EmbeddedBroker() as broker:
                async with LeadterraStandIn(api_key=API_KEY) as standin:
                    await check_run(containers, broker, standin)
                await check_ingest(containers, broker)
        except CheckFailed as failure:
            print(f"  FAILED {failure}", flush=True)
            return 1
        finally:
            containers.remove_all()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--label", default="guard-image-check=1", help="put on every container (for clean-up)")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.image, arguments.label)))
