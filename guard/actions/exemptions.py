"""Exemptions: "keep this campaign running despite the rules, until then, because ...".

An exemption is a record on the compacted control topic, key `exemption/<id>`, value its JSON;
revoking it writes a tombstone (null value) for the key, so compaction keeps the latest word on
each. The guard reads the whole topic before it acts and follows it while it runs
(guard.runtime.control); the action layer asks `Exemptions.find` when a pause is due. Expiry is by wall
clock at that moment: an expired record simply no longer matches.
"""

from __future__ import annotations

import asyncio
import fnmatch
import uuid
from datetime import UTC, datetime

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.contracts.audit import ExemptionRef

log = structlog.get_logger("guard.actions.exemptions")

KEY_PREFIX = "exemption/"


class Exemption(BaseModel):
    """One exemption as stored on the control topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^ex_[0-9a-f]{8,32}$")
    campaigns: str = Field(min_length=1, max_length=200, description="A campaign id, or a glob: camp_seed_*.")
    rule: str | None = Field(None, min_length=1, max_length=100, description="A rule name or glob; null: every rule.")
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(min_length=1, max_length=100)
    created_at: datetime
    expires_at: datetime

    @property
    def key(self) -> bytes:
        return (KEY_PREFIX + self.id).encode()

    def covers(self, campaign_id: str, rule_name: str, now: float) -> bool:
        return (
            now < self.expires_at.timestamp()
            and fnmatch.fnmatchcase(campaign_id, self.campaigns)
            and (self.rule is None or fnmatch.fnmatchcase(rule_name, self.rule))
        )

    def ref(self) -> ExemptionRef:
        """What the audit event says about it."""
        return ExemptionRef(
            id=self.id,
            campaigns=self.campaigns,
            rule=self.rule,
            reason=self.reason,
            by=self.by,
            expires_at=self.expires_at,
        )


def new_exemption(campaigns: str, *, seconds: float, reason: str, by: str, rule: str | None, now: float) -> Exemption:
    """A fresh exemption from now on; raises ValidationError on a bad field."""
    return Exemption(
        id=f"ex_{uuid.uuid4().hex[:12]}",
        campaigns=campaigns,
        rule=rule,
        reason=reason,
        by=by,
        created_at=datetime.fromtimestamp(now, tz=UTC),
        expires_at=datetime.fromtimestamp(now + seconds, tz=UTC),
    )


class Exemptions:
    """The exemptions in force, as the control topic says, and whether the topic has been read
    up to where it ended at start-up (no pause is decided on before)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Exemption] = {}
        self._loaded = asyncio.Event()
        self._warned = False

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Exemption]:
        """Every exemption on the topic, expired ones too, oldest first."""
        return sorted(self._by_id.values(), key=lambda e: e.created_at)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One control record: an exemption, or a tombstone revoking one. Records of other kinds
        (or a later version) are left alone; a malformed exemption is logged once and skipped."""
        name = (key or b"").decode(errors="replace")
        if not name.startswith(KEY_PREFIX):
            return
        if value is None:
            self._by_id.pop(name.removeprefix(KEY_PREFIX), None)
            return
        try:
            exemption = Exemption.model_validate_json(value)
        except ValidationError as error:
            if not self._warned:
                log.warning("a control record is not a valid exemption; skipped", key=name, error=str(error)[:300])
                self._warned = True
            return
        self._by_id[exemption.id] = exemption

    def find(self, campaign_id: str, rule_name: str, now: float) -> Exemption | None:
        """The exemption covering this campaign and rule now (the one that lasts longest), if any."""
        covering = [e for e in self._by_id.values() if e.covers(campaign_id, rule_name, now)]
        return max(covering, key=lambda e: e.expires_at) if covering else None

    def loaded(self) -> None:
        self._loaded.set()

    @property
    def is_loaded(self) -> bool:
        return self._loaded.is_set()

    async def wait(self) -> None:
        await self._loaded.wait()
