"""`guard ingest` puts rotated webhook secrets in force without a restart: over real HTTP on 127.0.0.1
and a real broker, its secret files are swapped the way the kubelet updates a mounted Secret."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from test_ingest import Topics, create_topics, serving, signed, webhook

from guard.actions import keyfiles
from guard.errors import ConfigError
from guard.ingest.app import WEBHOOK_PATH, IngestConfig
from guard.testing.broker import BrokerInfo

OLD, NEW = b"whsec_rotation_old", b"whsec_rotation_new"
OWN_OLD, OWN_NEW = b"whsec_own_old", b"whsec_own_new"
SECRET_FILE, CAMPAIGN_FILE = "LEADTERRA_WEBHOOK_SECRET_FILE", "LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE"
OWN_URL = f"{WEBHOOK_PATH}?campaign=camp_own"
PICKED_UP_WITHIN = 5.0  # seconds; the files are read again every 0.05 s here


class MountedSecret:
    """A directory laid out as the kubelet lays out a mounted Secret: each key a symlink to `..data/<key>`,
    `..data` a symlink to a directory of this version's files. An update writes a new directory and
    renames a new `..data` over the old one (atomic), then removes the old directory."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root, self._version = root, 0
        root.mkdir()
        self.update(files)
        for key in files:
            (root / key).symlink_to(Path("..data") / key)

    def __getitem__(self, key: str) -> Path:
        return self.root / key

    def update(self, files: dict[str, str]) -> None:
        data = self.root / "..data"
        old = data.resolve() if data.exists() else None
        self._version += 1
        version = self.root / f"..version_{self._version}"
        version.mkdir()
        for key, text in files.items():
            (version / key).write_text(text)
        (self.root / "..data_tmp").symlink_to(version.name)
        os.replace(self.root / "..data_tmp", data)
        if old is not None:
            shutil.rmtree(old)


@pytest.fixture(autouse=True)
def read_again_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files looked at every 0.05 s rather than 3 s: a change is in force within a test's patience."""
    monkeypatch.setattr(keyfiles, "REREAD_SECONDS", 0.05)


def mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> MountedSecret:
    """The chart's layout: the files of one Secret in one directory, named by the ingest's variables."""
    secret = MountedSecret(tmp_path / "ingest", files)
    monkeypatch.delenv("LEADTERRA_WEBHOOK_SECRET", raising=False)
    for key, variable in (("webhook-secret", SECRET_FILE), ("campaign-secrets", CAMPAIGN_FILE)):
        if key in files:
            monkeypatch.setenv(variable, str(secret[key]))
    return secret


@asynccontextmanager
async def ingest_from_env(broker: BrokerInfo, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """`guard ingest` configured from the environment, as the command is, with fresh topics."""
    topics = Topics()
    await create_topics(broker.bootstrap_servers, topics)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(broker.idempotence).lower(),
        "GUARD_INPUT_TOPICS": topics.input,
        "GUARD_DLQ_TOPIC": topics.dlq,
        "GUARD_HTTP_HOST": "127.0.0.1",
        "GUARD_HTTP_PORT": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    async with serving(IngestConfig.from_env()) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=15) as client:
            yield client


async def post(client: httpx.AsyncClient, secret: bytes, url: str = WEBHOOK_PATH) -> int:
    """The status of a fresh webhook signed with `secret` (naming no campaign at a campaign's URL)."""
    body = webhook(None if "?campaign=" in url else "camp_rotation")
    return (await client.post(url, content=body, headers=signed(body, secret))).status_code


async def answered_soon(client: httpx.AsyncClient, secret: bytes, status: int, url: str = WEBHOOK_PATH) -> None:
    """Posts signed with `secret` until one is answered `status`, within PICKED_UP_WITHIN."""
    deadline = time.monotonic() + PICKED_UP_WITHIN
    while (answered := await post(client, secret, url)) != status:
        assert time.monotonic() < deadline, f"still {answered} {PICKED_UP_WITHIN} s after the Secret changed"


async def reloads(client: httpx.AsyncClient, variable: str, result: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "guard_ingest_secret_reloads_total" and sample.labels == {
                "variable": variable,
                "result": result,
            }:
                return sample.value
    return 0.0


async def test_a_rotated_account_secret_is_in_force_without_a_restart(kafka_broker, tmp_path, monkeypatch) -> None:
    """The Secret goes from old to "old,new" (Leadterra may sign with either), then to new: the new secret
    is accepted once the first swap is read, the old one refused once the second is."""
    secret = mount(tmp_path, monkeypatch, {"webhook-secret": OLD.decode()})
    async with ingest_from_env(kafka_broker, monkeypatch) as client:
        assert (await post(client, OLD), await post(client, NEW)) == (200, 401)
        secret.update({"webhook-secret": f"{OLD.decode()},{NEW.decode()}"})
        await answered_soon(client, NEW, 200)
        assert await post(client, OLD) == 200
        secret.update({"webhook-secret": NEW.decode()})
        await answered_soon(client, OLD, 401)
        assert await post(client, NEW) == 200
        assert await reloads(client, SECRET_FILE, "applied") == 2
        assert await reloads(client, SECRET_FILE, "rejected") == 0


async def test_a_rotated_campaign_secret_is_in_force_without_a_restart(kafka_broker, tmp_path, monkeypatch) -> None:
    """The campaigns file beside the account secret, rotated the same way: camp_own's URL takes the new
    secret, then refuses the old one; the account secret is untouched."""
    secret = mount(
        tmp_path, monkeypatch, {"webhook-secret": OLD.decode(), "campaign-secrets": "camp_own: whsec_own_old"}
    )
    async with ingest_from_env(kafka_broker, monkeypatch) as client:
        assert (await post(client, OWN_OLD, OWN_URL), await post(client, OWN_NEW, OWN_URL)) == (200, 401)
        secret.update({"webhook-secret": OLD.decode(), "campaign-secrets": "camp_own: [whsec_own_old, whsec_own_new]"})
        await answered_soon(client, OWN_NEW, 200, OWN_URL)
        assert await post(client, OWN_OLD, OWN_URL) == 200
        secret.update({"webhook-secret": OLD.decode(), "campaign-secrets": "camp_own: whsec_own_new"})
        await answered_soon(client, OWN_OLD, 401, OWN_URL)
        assert (await post(client, OWN_NEW, OWN_URL), await post(client, OLD)) == (200, 200)
        assert await reloads(client, CAMPAIGN_FILE, "applied") == 2
        assert await reloads(client, SECRET_FILE, "applied") == 0


START = {"webhook-secret": OLD.decode(), "campaign-secrets": "camp_own: whsec_own_old"}


@pytest.mark.parametrize(
    ("changed", "variable"),
    [
        pytest.param({"webhook-secret": ""}, SECRET_FILE, id="blank"),
        pytest.param({"webhook-secret": f"{NEW.decode()},,"}, SECRET_FILE, id="a-blank-secret-in-the-list"),
        pytest.param({"webhook-secret": None}, SECRET_FILE, id="gone"),
        pytest.param({"campaign-secrets": "camp_own: [1]"}, CAMPAIGN_FILE, id="campaigns-not-text"),
        pytest.param({"campaign-secrets": "{}"}, CAMPAIGN_FILE, id="campaigns-empty"),
    ],
)
async def test_a_file_swapped_to_something_unusable_keeps_the_secrets_in_use(
    kafka_broker, tmp_path, monkeypatch, changed, variable
) -> None:
    """The secrets in use keep verifying; the change is counted and logged once (never with a secret),
    however often the file is looked at again; a usable file afterwards is put in force."""
    secret = mount(tmp_path, monkeypatch, START)
    async with ingest_from_env(kafka_broker, monkeypatch) as client:
        with structlog.testing.capture_logs() as logs:
            secret.update({key: text for key, text in {**START, **changed}.items() if text is not None})
            deadline = time.monotonic() + PICKED_UP_WITHIN
            while await reloads(client, variable, "rejected") == 0:
                assert time.monotonic() < deadline, "the unusable file was not counted"
            assert (await post(client, OLD), await post(client, OWN_OLD, OWN_URL)) == (200, 200)
            await asyncio.sleep(0.5)  # ten more looks at a file written too recently to trust its version
            assert await reloads(client, variable, "rejected") == 1
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert [entry.get("variable") for entry in warnings] == [variable], logs
        assert not any(text in repr(logs) for text in ("whsec_rotation", "whsec_own"))
        secret.update({**START, "webhook-secret": NEW.decode()})
        await answered_soon(client, OLD, 401)
        assert await post(client, NEW) == 200
        assert await reloads(client, SECRET_FILE, "applied") == 1


def test_start_up_still_refuses_an_unusable_secret_file(tmp_path, monkeypatch) -> None:
    """What a running ingest keeps away from, start-up refuses, naming the variable."""
    mount(tmp_path, monkeypatch, {"webhook-secret": " \n"})
    with pytest.raises(ConfigError, match=SECRET_FILE):
        IngestConfig.from_env()
