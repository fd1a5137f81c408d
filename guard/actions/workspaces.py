"""Leadterra workspaces: one API key each, and which workspace a campaign is in.

The keys file (LEADTERRA_API_KEYS_FILE) maps workspace ids to keys, in YAML or JSON:
`{ws_acme: sk_live_..., ws_beta: sk_live_...}`. A campaign's workspace is the `workspaceId` its
events carry, or the workspace their topic is mapped to (GUARD_TOPIC_WORKSPACES); the guard
remembers the latest one per campaign (a bounded map, kept outside the pure engine) so that a
decision can be acted on with its workspace's key.

Campaign ids are taken as unique across workspaces (Leadterra's are `camp_` and a ULID): a
campaign's state is keyed by its id alone, and its workspace decides which rules apply to it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from pydantic import SecretStr

from guard import redact
from guard.contracts.events import WORKSPACE_ID_PATTERN
from guard.errors import ConfigError

# What an `Authorization: Bearer <key>` header can carry: visible ASCII, no spaces.
HEADER_SAFE_KEY = re.compile(r"[\x21-\x7e]+")
_WORKSPACE_ID = re.compile(WORKSPACE_ID_PATTERN)


def read_api_keys(path: Path) -> dict[str, SecretStr]:
    """workspace -> key from the file; ConfigError naming the problem (never a key) otherwise."""
    name = "LEADTERRA_API_KEYS_FILE"
    data = redact.read_secrets_file(path, name, "workspace ids to keys", "ws_acme: sk_live_...")
    keys: dict[str, SecretStr] = {}
    for workspace, key in data.items():
        if not isinstance(workspace, str) or not _WORKSPACE_ID.fullmatch(workspace):
            raise ConfigError(f"{name}: {str(workspace)[:40]!r} is not a workspace id")
        if not isinstance(key, str) or not HEADER_SAFE_KEY.fullmatch(key.strip()):
            raise ConfigError(
                f"{name}: the key of workspace {workspace} is empty or holds characters an HTTP header cannot carry"
            )
        redact.register(key)
        keys[workspace] = SecretStr(key.strip())
    return keys


def parse_topic_workspaces(text: str) -> dict[str, str]:
    """`topic=workspace` pairs, comma-separated -> {topic: workspace}; ValueError naming the bad pair."""
    mapping: dict[str, str] = {}
    for pair in (part.strip() for part in text.split(",")):
        if not pair:
            continue
        topic, equals, workspace = (part.strip() for part in pair.partition("="))
        if not equals or not topic or not _WORKSPACE_ID.fullmatch(workspace):
            raise ValueError(
                f"{pair[:80]!r} is not `topic=workspace_id`; write e.g. 'leadterra.acme=ws_acme,leadterra.beta=ws_beta'"
            )
        if mapping.get(topic, workspace) != workspace:
            raise ValueError(f"topic {topic} is mapped to two workspaces, {mapping[topic]} and {workspace}")
        mapping[topic] = workspace
    return mapping


class WorkspaceMap:
    """campaign id -> the workspace its latest event named; at most `limit` campaigns, the least
    recently seen forgotten first (their next event names the workspace again)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._of: OrderedDict[str, str] = OrderedDict()

    def note(self, campaign_id: str, workspace_id: str) -> None:
        self._of[campaign_id] = workspace_id
        self._of.move_to_end(campaign_id)
        if len(self._of) > self._limit:
            self._of.popitem(last=False)

    def of(self, campaign_id: str) -> str | None:
        return self._of.get(campaign_id)
