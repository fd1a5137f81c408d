"""The Leadterra stand-in serves the documented API over real HTTP (shared/leadterra-api.md)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from guard.testing.leadterra import DEFAULT_API_KEY, LeadterraStandIn, serve

KEY = "sk_test_unit"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def standin() -> AsyncIterator[LeadterraStandIn]:
    async with LeadterraStandIn(api_key=KEY) as server:
        server.add_campaign("camp_running", status="running")
        server.add_campaign("camp_paused", status="paused")
        server.add_campaign("camp_draft", status="draft")
        yield server


@pytest.fixture
async def client(standin: LeadterraStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.url, headers=AUTH, timeout=5.0) as http:
        yield http


async def pause(client: httpx.AsyncClient, campaign_id: str, **kwargs: object) -> httpx.Response:
    return await client.post(f"/v1/campaigns/{campaign_id}/pause", **kwargs)  # type: ignore[arg-type]


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# ------------------------------------------------------------------ status model


async def test_pausing_a_running_campaign_pauses_it_and_reports_paused_at(standin, client):
    """running -> paused, with pausedAt in ISO 8601 UTC ending in Z."""
    response = await pause(client, "camp_running")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "camp_running" and body["status"] == "paused"
    assert body["pausedAt"].endswith("Z")
    assert datetime.fromisoformat(body["pausedAt"]).utcoffset().total_seconds() == 0
    assert standin.status("camp_running") == "paused"


async def test_pausing_a_paused_campaign_again_returns_200_with_the_original_paused_at(client):
    """A repeated pause is a no-op that returns the first pausedAt."""
    first = (await pause(client, "camp_running")).json()
    await asyncio.sleep(0.01)
    again = await pause(client, "camp_running")

    assert again.status_code == 200
    assert again.json() == first


async def test_pausing_a_draft_campaign_is_a_no_op_that_stays_draft(standin, client):
    """A pause on a draft answers 200 with status draft and pausedAt null."""
    response = await pause(client, "camp_draft")

    assert response.status_code == 200
    assert response.json() == {"id": "camp_draft", "status": "draft", "pausedAt": None}
    assert standin.status("camp_draft") == "draft"


async def test_a_body_on_pause_is_rejected_as_invalid_request(standin, client):
    """Pause takes no body: any body is a 400 invalid_request and changes nothing."""
    response = await pause(client, "camp_running", json={"reason": "bounces"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert standin.status("camp_running") == "running"


async def test_an_unknown_campaign_is_campaign_not_found(client):
    """Pause, start and stats on an unknown id answer 404 campaign_not_found."""
    for response in (
        await pause(client, "camp_nope"),
        await client.post("/v1/campaigns/camp_nope/start"),
        await client.get("/v1/campaigns/camp_nope/stats"),
    ):
        assert response.status_code == 404
        assert error_code(response) == "campaign_not_found"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk_test_wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}],
    ids=["missing", "wrong-key", "no-scheme", "basic-scheme"],
)
async def test_a_missing_or_wrong_key_is_authentication_failed(standin, headers):
    """Without `Authorization: Bearer <the key>` every call is a 401 authentication_failed."""
    async with httpx.AsyncClient(base_url=standin.url, headers=headers) as anonymous:
        response = await pause(anonymous, "camp_running")

    assert response.status_code == 401
    assert error_code(response) == "authentication_failed"
    assert standin.status("camp_running") == "running"


async def test_start_resumes_a_paused_campaign(standin, client):
    """start: paused -> running with startedAt; start on running is a no-op."""
    response = await client.post("/v1/campaigns/camp_paused/start")

    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.json()["startedAt"].endswith("Z")
    assert standin.status("camp_paused") == "running"
    again = await client.post("/v1/campaigns/camp_paused/start")
    assert again.status_code == 200 and again.json() == response.json()


async def test_start_on_a_draft_without_leads_is_no_leads_enrolled(standin, client):
    """A draft seeded with leads=0 cannot start; one with leads can."""
    standin.add_campaign("camp_empty", status="draft", leads=0)

    empty = await client.post("/v1/campaigns/camp_empty/start")
    seeded = await client.post("/v1/campaigns/camp_draft/start")

    assert empty.status_code == 400 and error_code(empty) == "no_leads_enrolled"
    assert seeded.status_code == 200 and standin.status("camp_draft") == "running"


async def test_creating_a_campaign_returns_a_new_draft_id(standin, client):
    """POST /v1/campaigns with a name creates a draft; without a name it is invalid_request."""
    created = await client.post(
        "/v1/campaigns", json={"name": "Q3", "sequenceSteps": [{"subject": "Hi", "bodyHtml": "<p>x</p>"}]}
    )
    nameless = await client.post("/v1/campaigns", json={"sequenceSteps": []})

    assert created.status_code == 200
    campaign_id = created.json()["id"]
    assert campaign_id.startswith("camp_") and created.json()["status"] == "draft"
    assert standin.status(campaign_id) == "draft"
    assert nameless.status_code == 400 and error_code(nameless) == "invalid_request"


async def test_a_user_resuming_in_the_ui_lets_the_next_pause_take_effect(standin, client):
    """resume() puts a paused campaign back to running; the next pause has a new pausedAt."""
    first = (await pause(client, "camp_running")).json()["pausedAt"]
    standin.resume("camp_running")
    assert standin.status("camp_running") == "running"

    await asyncio.sleep(0.01)
    second = (await pause(client, "camp_running")).json()

    assert second["status"] == "paused" and second["pausedAt"] != first


async def test_stats_report_the_counters_set_through_the_python_api(standin, client):
    """GET stats returns the documented fields: seeded leads, counters set, zeros by default."""
    standin.set_stats("camp_running", sent=40, bounced=3, reply_rate=0.05)

    response = await client.get("/v1/campaigns/camp_running/stats")

    assert response.status_code == 200
    assert response.json() == {
        "campaignId": "camp_running",
        "totalEnrolled": 100,
        "sent": 40,
        "delivered": 0,
        "bounced": 3,
        "replied": 0,
        "queued": 0,
        "openRate": 0.0,
        "replyRate": 0.05,
    }


# ------------------------------------------------------------------ fault injection


async def test_fail_next_two_gives_two_503_then_200(standin, client):
    """fail_next(2) answers the next two calls 503 internal_error, then serves normally."""
    standin.fail_next(2)

    statuses = [(await pause(client, "camp_running")).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert [r.status for r in standin.pause_requests()] == [503, 503, 200]
    assert standin.pending_faults == 0


async def test_a_fault_for_one_campaign_leaves_the_others_alone(standin, client):
    """fail_next(campaign_id=...) hits only that campaign's calls."""
    standin.fail_next(1, status=500, campaign_id="camp_paused")

    other = await pause(client, "camp_running")
    target = await pause(client, "camp_paused")

    assert other.status_code == 200
    assert target.status_code == 500 and error_code(target) == "internal_error"


async def test_rate_limit_next_gives_429_with_retry_after(standin, client):
    """rate_limit_next answers 429 with Retry-After in seconds, then serves normally."""
    standin.rate_limit_next(1, retry_after=2)

    limited = await pause(client, "camp_running")
    served = await pause(client, "camp_running")

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert served.status_code == 200


async def test_latency_is_added_before_every_answer(standin, client):
    """A call takes at least `latency` seconds, and the setting can change at any time."""
    standin.latency = 0.3
    started = time.perf_counter()
    response = await pause(client, "camp_running")
    slow = time.perf_counter() - started

    standin.latency = 0.0
    started = time.perf_counter()
    await pause(client, "camp_running")
    fast = time.perf_counter() - started

    assert response.status_code == 200
    assert slow >= 0.3
    assert fast < 0.3


async def test_down_refuses_connections_and_up_serves_again_on_the_same_port(standin, client):
    """down() closes open connections and refuses new ones; up() serves on the same port."""
    assert (await pause(client, "camp_running")).status_code == 200  # a pooled keep-alive connection
    port = standin.port

    await standin.down()
    with pytest.raises(httpx.TransportError):
        await pause(client, "camp_paused")
    async with httpx.AsyncClient(base_url=standin.url, headers=AUTH) as fresh:
        with pytest.raises(httpx.ConnectError):
            await pause(fresh, "camp_paused")

    await standin.up()
    assert standin.port == port
    assert (await pause(client, "camp_paused")).status_code == 200


async def test_down_drops_a_call_in_flight(standin, client):
    """A call in flight when the API goes down gets no answer and changes nothing."""
    standin.latency = 5.0
    call = asyncio.create_task(pause(client, "camp_running"))
    while not standin.in_flight:
        await asyncio.sleep(0.01)

    await standin.down()

    with pytest.raises(httpx.TransportError):
        await call
    assert standin.status("camp_running") == "running"
    assert [r.status for r in standin.pause_requests()] == [None]


# ------------------------------------------------------------------ recording and waiting


async def test_every_request_is_recorded_with_its_headers_and_body(standin, client):
    """Requests are recorded as received, failed ones included, with the Authorization value as sent."""
    standin.fail_next(1)
    before = time.time()
    await pause(client, "camp_running")
    await pause(client, "camp_running", content=b"{}")
    await client.get("/v1/campaigns/camp_running/stats")

    first, second, third = standin.requests
    assert (first.method, first.path, first.campaign_id, first.status) == (
        "POST",
        "/v1/campaigns/camp_running/pause",
        "camp_running",
        503,
    )
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.header("Authorization") == f"Bearer {KEY}"
    assert first.body == b"" and first.received_at >= before
    assert (second.body, second.status) == (b"{}", 400)
    assert (third.method, third.status) == ("GET", 200)
    assert standin.pause_requests("camp_running") == [first, second]
    assert standin.pause_requests("camp_paused") == []


async def test_wait_for_pauses_resolves_once_enough_pauses_answered_200(standin, client):
    """wait_for_pauses(n) returns once n pauses succeeded; failed pauses do not count."""
    standin.fail_next(1)

    async def pause_later() -> None:
        await asyncio.sleep(0.05)
        for campaign_id in ("camp_running", "camp_running", "camp_draft"):
            await pause(client, campaign_id)

    background = asyncio.create_task(pause_later())
    done = await standin.wait_for_pauses(2, timeout=5.0)
    await background

    assert [r.status for r in done] == [200, 200]
    assert len(standin.pause_requests()) == 3


async def test_wait_for_pauses_raises_timeout_error_when_too_few_arrive(standin, client):
    """wait_for_pauses raises TimeoutError when fewer than n pauses succeeded in time."""
    await pause(client, "camp_running")

    with pytest.raises(TimeoutError, match="1 of 2"):
        await standin.wait_for_pauses(2, timeout=0.2)


async def test_create_unknown_treats_any_id_as_a_running_campaign():
    """With create_unknown=True an unseen id is a running campaign that can be paused."""
    async with LeadterraStandIn(api_key=KEY, create_unknown=True) as standin:
        async with httpx.AsyncClient(base_url=standin.url, headers=AUTH) as client:
            response = await pause(client, "camp_anything")

        assert response.status_code == 200
        assert response.json()["status"] == "paused"
        assert standin.status("camp_anything") == "paused"


# ------------------------------------------------------------------ CLI


async def test_serve_runs_until_cancelled_and_logs_one_line_per_request(capsys):
    """serve() answers on the given port and prints one line per request to stderr."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = asyncio.create_task(serve("127.0.0.1", port, KEY, True))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            for _ in range(100):
                try:
                    response = await pause(client, "camp_cli")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
        assert response.status_code == 200
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server

    err = capsys.readouterr().err
    assert "POST /v1/campaigns/camp_cli/pause -> 200" in err
    assert KEY not in err


class TestStartLine:
    """`guard standin` says where the key it accepts came from, never the key itself."""

    def test_a_key_given_by_option(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from guard.testing.leadterra.serve import accepted_key

        monkeypatch.setenv("LEADTERRA_API_KEY", "sk_env")
        assert accepted_key("sk_option") == ("sk_option", "the key given by --api-key")

    def test_a_key_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from guard.testing.leadterra.serve import accepted_key

        monkeypatch.setenv("LEADTERRA_API_KEY", " sk_env ")
        assert accepted_key(None) == ("sk_env", "the key in LEADTERRA_API_KEY")

    def test_the_default_key_is_shown(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from guard.testing.leadterra.serve import accepted_key

        monkeypatch.delenv("LEADTERRA_API_KEY", raising=False)
        assert accepted_key(None) == (DEFAULT_API_KEY, f"key {DEFAULT_API_KEY}")
