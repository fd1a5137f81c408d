"""What the engine decides: a rule fired for a campaign, with its evidence."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from guard.engine.episodes import EpisodeStart
from guard.rules.models import Rule

_DECISION_NAMESPACE = uuid.UUID("7f1c1d2e-5b3a-4c8e-9a61-3d2f0e4b8c10")


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule fired. Everything here is derived from the log and the rules, so a replay after a
    crash yields an equal Decision with the same `id`."""

    id: str
    campaign_id: str
    rule: Rule
    fired_at: float  # event time of the event that crossed the line
    numerator: int
    denominator: int | None
    value: float
    evidence_from: float
    message_ids: tuple[str, ...]
    lower_bound: float | None = None  # Wilson lower bound of the rate (rules with `confidence`)
    superseded_by: str | None = None  # a pause decision of another rule, within this rule's cooldown
    episode_from: float | None = None  # event time the judged episode began (a start or resume); None: not seen
    episode_began: EpisodeStart | None = None  # how it began
    workspace_id: str | None = None  # the campaign's workspace as the engine knew it (None: its events named none)
    scope: str | None = None  # a scope rule's: the scope that fired, e.g. "sender_domain:acme.com" (scopes.py)
    scope_decision_id: str | None = None  # ...and the id of the scope's decision this campaign's is one of

    @property
    def action(self) -> str:
        return self.rule.action


def decision_id(campaign_id: str, rule: Rule, fired_at: float) -> str:
    """Deterministic: the same campaign, rule text and firing moment give the same id."""
    name = f"{campaign_id}\x1f{rule.name}\x1f{rule.version}\x1f{round(fired_at * 1000)}"
    return str(uuid.uuid5(_DECISION_NAMESPACE, name))
