"""The pause client against the Leadterra stand-in over real HTTP: every status of the contract."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from guard.actions import keyfiles
from guard.actions.keyfiles import KeyFile
from guard.actions.pause import KeySource, PauseClient
from guard.actions.workspaces import read_api_keys
from guard.runtime.settings import LeadterraSettings, leadterra
from guard.testing.leadterra import LeadterraStandIn


@pytest.fixture
async def standin() -> AsyncIterator[LeadterraStandIn]:
    async with LeadterraStandIn() as server:
        server.add_campaign("camp_running", status="running")
        server.add_campaign("camp_paused", status="paused")
        server.add_campaign("camp_draft", status="draft")
        yield server


def client(
    standin: LeadterraStandIn, *, key: str | None = None, deadline: float = 5.0, timeout: float = 2.0
) -> PauseClient:
    return PauseClient(
        standin.url,
        SecretStr(key or standin.api_key),
        timeout=timeout,
        deadline=deadline,
        backoff_initial=0.01,
        backoff_max=0.05,
    )


async def pause(standin: LeadterraStandIn, campaign_id: str, **kwargs: object):  # noqa: ANN201
    pause_client = client(standin, **kwargs)  # type: ignore[arg-type]
    try:
        return await pause_client.pause(campaign_id, idempotency_key="decision-1")
    finally:
        await pause_client.aclose()


class TestSuccess:
    async def test_pauses_a_running_campaign(self, standin: LeadterraStandIn) -> None:
        """200 with status paused is `paused`, with Leadterra's pausedAt."""
        result = await pause(standin, "camp_running")
        assert (result.outcome, result.http_status, result.attempts) == ("paused", 200, 1)
        assert result.paused_at is not None
        assert standin.status("camp_running") == "paused"

    async def test_reports_a_campaign_paused_earlier_as_already_paused(self, standin: LeadterraStandIn) -> None:
        """A no-op whose pausedAt is older than the call (beyond clock tolerance) is `already_paused`."""
        standin.clock_offset = -60.0  # a user paused it a minute ago
        standin.add_campaign("camp_user", status="paused")
        standin.clock_offset = 0.0
        result = await pause(standin, "camp_user")
        assert result.outcome == "already_paused"

    @pytest.mark.parametrize("offset", [-30.0, -6.0, 6.0, 30.0])
    async def test_a_pause_it_made_is_paused_whatever_leadterras_clock_says(
        self, standin: LeadterraStandIn, offset: float
    ) -> None:
        """Leadterra's clock behind or ahead of ours (its Date header says by how much): the pause this call made is
        `paused` (announced), not `already_paused`; one a user made a minute before the call still is."""
        standin.clock_offset = offset
        assert (await pause(standin, "camp_running")).outcome == "paused"
        standin.clock_offset = offset - 60.0
        standin.add_campaign("camp_user", status="paused")
        standin.clock_offset = offset
        assert (await pause(standin, "camp_user")).outcome == "already_paused"

    @pytest.mark.parametrize("date_offset", [-20.0, 8.0, 20.0])
    async def test_a_proxys_own_date_does_not_make_the_guards_pause_someone_elses(
        self, standin: LeadterraStandIn, date_offset: float
    ) -> None:
        """A proxy in front stamps its own Date, seconds off Leadterra's: the pause the call made is still `paused`
        (only when both clocks put pausedAt before the call is it someone else's)."""
        standin.date_offset = date_offset
        assert (await pause(standin, "camp_running")).outcome == "paused"

    async def test_a_pause_an_earlier_process_made_for_the_decision_is_paused(self, standin: LeadterraStandIn) -> None:
        """A decision resumed after a restart: its first call (made before the process died) paused the campaign 30 s
        ago; called again with `since` (its `fired` record's time), the pause is still its own."""
        standin.clock_offset = -30.0
        standin.add_campaign("camp_ours", status="paused")
        standin.clock_offset = 0.0
        pause_client = client(standin)
        try:
            resumed = await pause_client.pause("camp_ours", "decision-1", since=time.time() - 31)
            fresh = await pause_client.pause("camp_ours", "decision-2")
        finally:
            await pause_client.aclose()
        assert (resumed.outcome, fresh.outcome) == ("paused", "already_paused")

    async def test_records_a_draft_as_not_running(self, standin: LeadterraStandIn) -> None:
        """Pausing a draft is a no-op returning status draft: recorded, not a failure."""
        result = await pause(standin, "camp_draft")
        assert (result.outcome, result.campaign_status) == ("not_running", "draft")

    async def test_sends_no_body_the_bearer_key_and_an_idempotency_key(self, standin: LeadterraStandIn) -> None:
        """The request matches the contract: no body, Authorization, Idempotency-Key."""
        await pause(standin, "camp_running")
        (request,) = standin.pause_requests("camp_running")
        assert request.body == b""
        assert request.header("Authorization") == f"Bearer {standin.api_key}"
        assert request.header("Idempotency-Key") == "decision-1"


class TestFinalErrors:
    async def test_does_not_retry_an_unknown_campaign(self, standin: LeadterraStandIn) -> None:
        """404 campaign_not_found is final after one attempt."""
        result = await pause(standin, "camp_missing")
        assert (result.outcome, result.http_status, result.error_code, result.attempts) == (
            "failed",
            404,
            "campaign_not_found",
            1,
        )

    async def test_does_not_retry_a_rejected_key_and_flags_it(self, standin: LeadterraStandIn) -> None:
        """401 is final and marks authentication as failed; the key is not in the result."""
        result = await pause(standin, "camp_running", key="sk_live_wrong")
        assert (result.outcome, result.http_status, result.attempts) == ("failed", 401, 1)
        assert result.authentication_failed
        assert "sk_live_wrong" not in repr(result)

    async def test_does_not_retry_a_bad_request(self, standin: LeadterraStandIn) -> None:
        """400 invalid_request is final."""
        standin.fail_next(1, status=400, code="invalid_request")
        result = await pause(standin, "camp_running")
        assert (result.outcome, result.error_code, result.attempts) == ("failed", "invalid_request", 1)


class TestKeyRotation:
    """A key read from a file (a mounted Secret) is read again when Leadterra rejects it."""

    @pytest.fixture(autouse=True)
    def _no_key_in_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("LEADTERRA_API_KEY", "LEADTERRA_API_KEY_FILE", "LEADTERRA_API_KEYS_FILE"):
            monkeypatch.delenv(name, raising=False)

    async def test_a_rotated_key_is_read_again_and_the_pause_lands(self, standin: LeadterraStandIn, tmp_path) -> None:
        """The old key is revoked and the file holds the new one: a second attempt, at once, with it."""
        key_file = tmp_path / "api-key"
        key_file.write_text("sk_live_old\n")
        old = SecretStr("sk_live_old")
        settings = LeadterraSettings(api_url=standin.url, api_key_file=key_file)
        standin.api_key = "sk_live_new"  # the old key no longer works
        key_file.write_text("sk_live_new\n")  # the Secret rewritten in place
        pause_client = PauseClient(standin.url, old, deadline=5, backoff_initial=0.01, key_source=settings.key_source())
        try:
            result = await pause_client.pause("camp_running", idempotency_key="decision-1")
            again = await pause_client.pause("camp_draft", idempotency_key="decision-2")
        finally:
            await pause_client.aclose()
        assert (result.outcome, result.http_status, result.attempts) == ("paused", 200, 2)
        sent = [r.header("Authorization") for r in standin.requests]
        assert sent == ["Bearer sk_live_old", "Bearer sk_live_new", "Bearer sk_live_new"]
        assert (again.outcome, again.attempts) == ("not_running", 1)  # later calls keep the new key

    async def test_a_rejected_key_its_file_still_holds_is_final(self, standin: LeadterraStandIn, tmp_path) -> None:
        """Revoked before its Secret was rewritten: the file is read once, then one attempt is all, an
        authentication failure as without a file (README: rewrite the Secret before revoking the old key)."""
        key_file = tmp_path / "api-key"
        key_file.write_text("sk_live_wrong")
        settings = LeadterraSettings(api_url=standin.url, api_key_file=key_file)
        key, source = settings.key(), settings.key_source()
        assert key is not None and source is not None
        reads = []

        def counted() -> SecretStr | None:
            reads.append(1)
            return source()

        pause_client = PauseClient(standin.url, key, deadline=5, backoff_initial=0.01, key_source=counted)
        try:
            result = await pause_client.pause("camp_running", idempotency_key="decision-1")
        finally:
            await pause_client.aclose()
        assert (result.outcome, result.http_status, result.attempts) == ("failed", 401, 1)
        assert result.authentication_failed and len(reads) == 1

    async def test_calls_rejected_together_all_land_with_the_new_key(self, standin: LeadterraStandIn, tmp_path) -> None:
        """Several pauses in flight with the old key when it is revoked: the first 401 reads the new key
        from the file, the others find it in use and retry with it too; none is lost."""
        campaigns = [f"camp_{n}" for n in range(6)]
        for campaign in campaigns:
            standin.add_campaign(campaign)
        key_file = tmp_path / "api-key"
        key_file.write_text("sk_live_new")
        source = LeadterraSettings(api_url=standin.url, api_key_file=key_file).key_source()
        standin.api_key = "sk_live_new"
        standin.latency = 0.2  # the six requests with the old key are all out before the first 401 is back
        pause_client = PauseClient(
            standin.url, SecretStr("sk_live_old"), deadline=5, backoff_initial=0.01, key_source=source
        )
        try:
            results = await asyncio.gather(*(pause_client.pause(c, idempotency_key=f"decision-{c}") for c in campaigns))
        finally:
            await pause_client.aclose()
        assert [(r.outcome, r.attempts) for r in results] == [("paused", 2)] * len(campaigns)
        sent = [r.header("Authorization") for r in standin.requests]
        assert sent[: len(campaigns)] == ["Bearer sk_live_old"] * len(campaigns)
        assert sent[len(campaigns) :] == ["Bearer sk_live_new"] * len(campaigns)

    async def test_a_new_key_rejected_too_is_not_retried_again(self, standin: LeadterraStandIn, tmp_path) -> None:
        key_file = tmp_path / "api-key"
        key_file.write_text("sk_live_also_wrong")
        source = LeadterraSettings(api_url=standin.url, api_key_file=key_file).key_source()
        pause_client = PauseClient(
            standin.url, SecretStr("sk_live_wrong"), deadline=5, backoff_initial=0.01, key_source=source
        )
        try:
            result = await pause_client.pause("camp_running", idempotency_key="decision-1")
        finally:
            await pause_client.aclose()
        assert (result.outcome, result.http_status, result.attempts) == ("failed", 401, 2)

    async def test_an_unreadable_or_unsafe_file_keeps_the_key_in_use(
        self, tmp_path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Mid-rotation the file may be missing or half-written: no new key, nothing raised."""
        monkeypatch.setattr(keyfiles, "REREAD_SECONDS", 0.0)
        key_file = tmp_path / "api-key"
        key_file.write_text("sk_live_old")
        source = LeadterraSettings(api_key_file=key_file).key_source()
        assert source is not None
        key_file.write_text("sk live\x00broken")
        assert await source() is None
        key_file.unlink()
        assert await source() is None

    async def test_a_key_in_a_variable_has_no_source(self, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
        """LEADTERRA_API_KEY cannot change under a running process: a 401 stays final (TestFinalErrors)."""
        monkeypatch.setattr(keyfiles, "REREAD_SECONDS", 0.0)
        key_file = tmp_path / "api-key"
        key_file.write_text("sk_live_file")
        assert LeadterraSettings(api_key="sk_live_var", api_key_file=key_file).key_source() is None
        keys = tmp_path / "keys.yaml"
        keys.write_text("ws_a: sk_live_a\n")
        source = LeadterraSettings(api_key="sk_live_var", api_keys_file=keys).key_source("ws_a")
        assert source is not None and (await source()).get_secret_value() == "sk_live_a"
        keys.write_text("ws_a: sk_live_a2\n")
        assert (await source()).get_secret_value() == "sk_live_a2"
        keys.write_text("ws_b: sk_live_b\n")  # the workspace gone from the file: keep the key in use
        assert await source() is None


def write_keys(path: Path, workspaces: int, key: str) -> None:
    """A keys file of `workspaces` workspaces (ws_0000, ...), all with `key`, last written an hour ago
    (a Secret mounted long before: its unchanged version can be trusted)."""
    path.write_text("".join(f"ws_{n:04d}: {key}\n" for n in range(workspaces)))
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))


async def key_now(source: KeySource | Callable[[], SecretStr | None]) -> SecretStr | None:
    """What a key source says, whether it answers at once or must be awaited."""
    key = source()
    return await key if inspect.isawaitable(key) else key


class TestKeysFileRereads:
    """A 401 reads the keys file again; 2,000 workspaces make it ~100 ms of parsing (issue 24)."""

    @pytest.fixture
    def reads(self, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
        """Each read of a keys file the settings make, counted (True: the event loop ran meanwhile)."""
        seen: list[bool] = []
        read = leadterra.read_api_keys

        def counted(path: Path) -> dict[str, SecretStr]:
            seen.append(True)
            return read(path)

        monkeypatch.setattr(leadterra, "read_api_keys", counted)
        return seen

    async def test_calls_rejected_together_read_the_file_once(
        self, standin: LeadterraStandIn, tmp_path: Path, reads: list[bool]
    ) -> None:
        """Twenty workspaces' pauses rejected at once: one read of the 2,000-workspace file answers them
        all, and every pause lands with the new key."""
        keys = tmp_path / "keys.yaml"
        write_keys(keys, 2000, "sk_live_new")
        settings = LeadterraSettings(api_url=standin.url, api_keys_file=keys)
        standin.api_key = "sk_live_new"
        standin.latency = 0.2  # every request with an old key is out before the first 401 is back
        workspaces = [f"ws_{n:04d}" for n in range(20)]
        clients = [
            PauseClient(standin.url, SecretStr(f"sk_live_old_{w}"), deadline=5, backoff_initial=0.01, key_source=source)
            for w in workspaces
            if (source := settings.key_source(w)) is not None
        ]
        for w in workspaces:
            standin.add_campaign(f"camp_{w}")
        try:
            results = await asyncio.gather(
                *(c.pause(f"camp_{w}", idempotency_key=f"d-{w}") for c, w in zip(clients, workspaces, strict=True))
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        assert [(r.outcome, r.attempts) for r in results] == [("paused", 2)] * len(workspaces)
        assert len(reads) == 1

    async def test_the_file_is_read_off_the_event_loop(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """While the file is read, the event loop serves other tasks (the health probes among them): here
        the read waits for a task of the loop to let it go on."""
        keys = tmp_path / "keys.yaml"
        write_keys(keys, 2000, "sk_live_new")
        let_go = threading.Event()
        released: list[bool] = []
        read = leadterra.read_api_keys

        def waiting(path: Path) -> dict[str, SecretStr]:
            released.append(let_go.wait(timeout=5))  # False: the loop stood still while the file was read
            return read(path)

        monkeypatch.setattr(leadterra, "read_api_keys", waiting)
        source = LeadterraSettings(api_keys_file=keys).key_source("ws_0007")
        assert source is not None

        async def loop_runs() -> None:
            await asyncio.sleep(0)
            let_go.set()

        key, _ = await asyncio.gather(key_now(source), loop_runs())
        assert released == [True]
        assert key is not None and key.get_secret_value() == "sk_live_new"

    async def test_an_unchanged_file_is_not_read_again(self, tmp_path: Path, reads: list[bool]) -> None:
        """The file is read on the first 401; later ones read it only once it has changed."""
        keys = tmp_path / "keys.yaml"
        write_keys(keys, 2000, "sk_live_a")
        source = LeadterraSettings(api_keys_file=keys).key_source("ws_0001")
        assert source is not None
        for _ in range(5):
            assert (await key_now(source)).get_secret_value() == "sk_live_a"
        assert len(reads) == 1
        write_keys(keys, 2000, "sk_live_b_rotated")
        assert (await key_now(source)).get_secret_value() == "sk_live_b_rotated"
        assert len(reads) == 2

    async def test_a_file_changing_again_and_again_is_read_at_most_once_per_interval(self, tmp_path: Path) -> None:
        """The file rewritten before every 401: each answer is the newest key, but reads are spaced by
        the interval (here 0.2 s), and callers meanwhile wait for the next read together."""
        keys = tmp_path / "keys.yaml"
        read_at: list[float] = []

        def parse(path: Path) -> dict[str, SecretStr]:
            read_at.append(time.monotonic())
            return read_api_keys(path)

        key_file = KeyFile(keys, parse, name="LEADTERRA_API_KEYS_FILE", min_interval=0.2)
        for n in range(3):
            write_keys(keys, 10 + n, f"sk_live_{n}")
            together = await asyncio.gather(*(key_file.current() for _ in range(5)))
            assert [k["ws_0000"].get_secret_value() for k in together if k is not None] == [f"sk_live_{n}"] * 5
        assert len(read_at) == 3
        assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(read_at))

    async def test_a_failing_parser_keeps_the_key_in_use(self, tmp_path: Path) -> None:
        """A bug in reading the file (not only a wrong file) answers None: the key in use stays, the
        pause goes on."""
        keys = tmp_path / "keys.yaml"
        write_keys(keys, 1, "sk_live_a")

        def broken(path: Path) -> dict[str, SecretStr]:
            raise RuntimeError("a bug")

        assert await KeyFile(keys, broken, name="LEADTERRA_API_KEYS_FILE").current() is None


class TestRetries:
    async def test_retries_server_errors_until_the_pause_lands(self, standin: LeadterraStandIn) -> None:
        """503 twice then 200: paused on the third attempt."""
        standin.fail_next(2, status=503)
        result = await pause(standin, "camp_running")
        assert (result.outcome, result.attempts) == ("paused", 3)
        assert [r.status for r in standin.pause_requests("camp_running")] == [503, 503, 200]

    async def test_honours_retry_after_on_429(self, standin: LeadterraStandIn) -> None:
        """429 with Retry-After 0.3 s delays the next attempt at least that long."""
        standin.rate_limit_next(1, retry_after=0.3)
        result = await pause(standin, "camp_running")
        first, second = standin.pause_requests("camp_running")
        assert result.outcome == "paused"
        assert second.received_at - first.received_at >= 0.3

    async def test_retries_timeouts(self, standin: LeadterraStandIn) -> None:
        """An answer slower than the timeout is retried; it lands once the API is fast again."""
        standin.latency = 0.5
        pause_client = client(standin, timeout=0.1, deadline=10.0)
        try:
            task = asyncio.create_task(pause_client.pause("camp_running", "decision-1"))
            await asyncio.sleep(0.35)
            standin.latency = 0.0
            result = await task
        finally:
            await pause_client.aclose()
        assert result.outcome == "paused"
        assert result.attempts >= 2

    async def test_a_retry_after_beyond_the_deadline_is_cut_to_it(self, standin: LeadterraStandIn) -> None:
        """429 asking for 60 s with 1 s left: the next attempt is made at the deadline, not given up on."""
        standin.rate_limit_next(1, retry_after=60)
        started = time.monotonic()
        result = await pause(standin, "camp_running", deadline=1.0)
        first, second = standin.pause_requests("camp_running")
        assert (result.outcome, result.attempts) == ("paused", 2)
        assert 0.9 <= second.received_at - first.received_at and time.monotonic() - started < 3.0

    async def test_a_retry_after_beyond_the_deadline_still_gives_up_at_it(self, standin: LeadterraStandIn) -> None:
        """Still rate limited at the deadline: failed, after the attempt made there."""
        standin.rate_limit_next(1000, retry_after=60)
        started = time.monotonic()
        result = await pause(standin, "camp_running", deadline=0.5)
        assert time.monotonic() - started < 2.5
        assert (result.outcome, result.http_status, result.error_code) == ("failed", 429, "retry_deadline_exceeded")
        assert result.attempts == 2

    @pytest.mark.parametrize(
        "body",
        [
            "<html><body>Service temporarily unavailable</body></html>",
            '{"id": "camp_running", "status": "pau',
            '{"id": "camp_running", "status": "running", "pausedAt": null}',
            '{"id": "camp_other", "status": "paused", "pausedAt": "2026-01-01T00:00:00Z"}',
        ],
    )
    async def test_a_200_that_does_not_answer_the_pause_is_retried(self, standin: LeadterraStandIn, body: str) -> None:
        """A proxy's page, a cut body, a campaign still running, another campaign: a pause is safe to repeat, so it is
        retried until an answer says the campaign is paused."""
        standin.fail_next(1, status=200, body=body)
        result = await pause(standin, "camp_running")
        assert (result.outcome, result.attempts) == ("paused", 2)

    async def test_a_401_without_a_body_is_authentication_failed(self, standin: LeadterraStandIn) -> None:
        """leadterra-api.md: an error body may be missing; a 401 is `authentication_failed` all the same."""
        standin.fail_next(1, status=401, body=b"")
        result = await pause(standin, "camp_running")
        assert (result.outcome, result.http_status, result.error_code) == ("failed", 401, "authentication_failed")

    async def test_gives_up_at_the_deadline_and_says_why(self, standin: LeadterraStandIn) -> None:
        """A campaign the API keeps failing is audited as failed once the deadline passes."""
        standin.fail_next(1000, status=502)
        started = time.monotonic()
        result = await pause(standin, "camp_running", deadline=0.5)
        assert time.monotonic() - started < 2.0
        assert (result.outcome, result.http_status, result.error_code) == ("failed", 502, "retry_deadline_exceeded")
        assert result.attempts >= 2

    async def test_retries_a_refused_connection(self, standin: LeadterraStandIn) -> None:
        """With the API down the client keeps trying; when it is back the pause lands."""
        await standin.down()
        pause_client = client(standin, deadline=10.0)
        try:
            task = asyncio.create_task(pause_client.pause("camp_running", "decision-1"))
            await asyncio.sleep(0.3)
            await standin.up()
            result = await task
        finally:
            await pause_client.aclose()
        assert result.outcome == "paused"
        assert result.attempts >= 2


class TestHostileAnswers:
    async def test_a_huge_error_body_is_not_read_beyond_the_cap(self, standin: LeadterraStandIn) -> None:
        """A 200 MB error body: the client reads at most MAX_RESPONSE_BYTES and hangs up, so the
        server can write only what the sockets buffer, and the error code falls back to the status."""
        standin.huge_body_next(1, 200 * 1024 * 1024, status=400)
        result = await pause(standin, "camp_running")
        await asyncio.sleep(0.2)  # let the server notice the hang-up
        assert standin.body_bytes_sent < 32 * 1024 * 1024
        assert (result.outcome, result.http_status, result.error_code) == ("failed", 400, "http_400")

    async def test_an_error_body_echoing_the_request_is_not_copied(self, standin: LeadterraStandIn) -> None:
        """Only a token-like error code is taken from a body; free text never reaches the result."""
        standin.fail_next(
            1, 400, body='{"error": {"code": "Bearer sk_test_standin", "message": "Bearer sk_test_standin"}}'
        )
        result = await pause(standin, "camp_running")
        assert (result.error_code, result.error) == ("http_400", "HTTP 400")


class TestPathSegments:
    @pytest.mark.parametrize("campaign_id", [".", ".."])
    async def test_a_dot_segment_id_is_refused_without_a_call(self, campaign_id: str) -> None:
        """httpx resolves dot segments: ".." would POST /v1/pause with the key. No request is made."""
        async with LeadterraStandIn(create_unknown=True) as standin:
            result = await pause(standin, campaign_id)
            assert standin.requests == []
        assert (result.outcome, result.error_code, result.attempts) == ("failed", "invalid_campaign_id", 0)

    @pytest.mark.parametrize(
        "campaign_id", ["camp.1", "...", "..a", "a/../b", "../pause", "%2e%2e", "a?b#c", "camp 1", "é"]
    )
    async def test_any_other_id_is_exactly_one_path_segment(self, campaign_id: str) -> None:
        """The stand-in receives the intended path, with the id as its one segment."""
        async with LeadterraStandIn(create_unknown=True) as standin:
            result = await pause(standin, campaign_id)
            [request] = standin.requests
        assert result.outcome == "paused"
        assert request.campaign_id == campaign_id
        assert request.path == f"/v1/campaigns/{campaign_id}/pause"
