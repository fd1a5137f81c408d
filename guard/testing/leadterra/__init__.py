"""A local stand-in for the Leadterra API, served over real HTTP on 127.0.0.1.

Leadterra has no sandbox, so tests, the demo and users' own tests run against this server. It
serves the documented behaviour the guard relies on (shared/leadterra-api.md): bearer auth, the
draft/running/paused status model with its no-ops, the documented error codes, plus fault
injection (5xx, 429 with ``Retry-After``, latency, the whole API down) and a record of every
request it received.

Example::

    async with LeadterraStandIn() as standin:
        standin.add_campaign("camp_a", status="running")
        # point the client under test at standin.url with standin.api_key, then:
        await standin.wait_for_pauses(1)
        assert standin.status("camp_a") == "paused"

Error bodies always have the shape ``{"error": {"code": "...", "message": "..."}}``.

From a shell: ``python -m guard.testing.leadterra --port 8099 [--create-unknown]``.
"""

from guard.testing.leadterra.records import DEFAULT_API_KEY, CampaignStats, CampaignStatus, RecordedRequest
from guard.testing.leadterra.serve import add_arguments, main, serve
from guard.testing.leadterra.standin import LeadterraStandIn

__all__ = [
    "DEFAULT_API_KEY",
    "CampaignStats",
    "CampaignStatus",
    "LeadterraStandIn",
    "RecordedRequest",
    "add_arguments",
    "main",
    "serve",
]
