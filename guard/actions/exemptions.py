"""Exemptions: "keep this campaign running despite the rules, until then, because ...".

An exemption is a record on the compacted control topic, key `exemption/<id>`, value its JSON;
revoking it writes a tombstone (null value) for the key, so compaction keeps the latest word on
each. The guard reads the whole topic before it acts and follows it while it runs
(guard.runtime.control); the action layer asks `Exemptions.find` when a pause is due. Expiry is by wall
clock at that moment: an expired record simply no longer matches.

Whoever can write the control topic writes input, not orders: each record is validated and bounded
before it is held (times with a zone and in range, at most MAX_EXEMPTION_SECONDS long, text without
control characters, sizes capped, the key naming the value's id, at most MAX_EXEMPTIONS held). An
invalid record is counted, logged and holds nothing: a bad exemption means no exemption, and
what the key held before is dropped too, as compaction would. So `find` only ever meets
well-formed records, and cannot raise.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated

import structlog
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from guard.contracts.audit import ExemptionRef
from guard.contracts.events import UNSAFE_CHARACTERS
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.actions.exemptions")

KEY_PREFIX = "exemption/"
MAX_EXEMPTION_SECONDS = 90 * 86400.0  # a longer one is a rule change: write it into the rule's `campaigns`
MAX_VALUE_BYTES = 8192  # the longest valid exemption is ~3.5 KB of JSON (every character escaped)
MAX_KEY_BYTES = 64  # `exemption/` and an id of at most 35 characters
MAX_EXEMPTIONS = 1_000  # held at once: `find` asks each at every decision (~1 ms for 1,000)
MAX_WARNED_KEYS = 100  # keys whose invalid records were logged; later ones are only counted
CLOCK_SKEW = 300.0  # seconds an exemption may be honoured before its created_at (clocks of two hosts)
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def _printable(text: str) -> str:
    """Shown in `--list`, logs and Slack: no control characters to forge a line or a terminal's screen."""
    if UNSAFE_CHARACTERS.search(text):
        raise ValueError("holds control or bidirectional formatting characters")
    return text


def _in_range(moment: datetime) -> datetime:
    if not EARLIEST <= moment < LATEST:
        raise ValueError(f"is not between {EARLIEST:%Y} and {LATEST:%Y}")
    return moment


Text = Annotated[str, AfterValidator(_printable)]
Moment = Annotated[AwareDatetime, AfterValidator(_in_range)]


class Exemption(BaseModel):
    """One exemption as stored on the control topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^ex_[0-9a-f]{8,32}$")
    campaigns: Text = Field(min_length=1, max_length=200, description="A campaign id, or a glob: camp_seed_*.")
    rule: Text | None = Field(None, min_length=1, max_length=100, description="A rule name or glob; null: every rule.")
    reason: Text = Field(min_length=1, max_length=500)
    by: Text = Field(min_length=1, max_length=100)
    created_at: Moment
    expires_at: Moment

    @model_validator(mode="after")
    def _bounded(self) -> Exemption:
        seconds = (self.expires_at - self.created_at).total_seconds()
        if not 0 < seconds <= MAX_EXEMPTION_SECONDS:
            raise ValueError(f"expires_at is not after created_at by at most {MAX_EXEMPTION_SECONDS / 86400:g} days")
        return self

    @property
    def key(self) -> bytes:
        return (KEY_PREFIX + self.id).encode()

    @cached_property
    def _span(self) -> tuple[float, float]:
        return self.created_at.timestamp() - CLOCK_SKEW, self.expires_at.timestamp()

    @cached_property
    def _matchers(self) -> tuple[Callable[[str], object], Callable[[str], object] | None]:
        """Compiled once: `find` asks every exemption held at every decision."""
        campaigns = re.compile(fnmatch.translate(self.campaigns)).match
        return campaigns, re.compile(fnmatch.translate(self.rule)).match if self.rule is not None else None

    def covers(self, campaign_id: str, rule_name: str, now: float) -> bool:
        """Whether it holds for this campaign and rule at wall clock `now` (never raises: the times
        were checked when it was read)."""
        starts, expires = self._span
        campaigns, rule = self._matchers
        return (
            starts <= now < expires
            and campaigns(campaign_id) is not None
            and (rule is None or rule(rule_name) is not None)
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
    created_at = datetime.fromtimestamp(now, tz=UTC)
    return Exemption(
        id=f"ex_{uuid.uuid4().hex[:12]}",
        campaigns=campaigns,
        rule=rule,
        reason=reason,
        by=by,
        created_at=created_at,
        expires_at=created_at + timedelta(seconds=seconds),
    )


class InvalidRecord(ValueError):
    """A control record under an exemption key that is not a valid exemption for that key."""


def parse_record(key_id: str, value: bytes) -> Exemption:
    """The exemption a record holds under `exemption/<key_id>`; raises InvalidRecord saying why not."""
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRecord(f"{len(value)} bytes, over {MAX_VALUE_BYTES}")
    try:
        exemption = Exemption.model_validate_json(value)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())
        raise InvalidRecord(problems[:300]) from None
    if exemption.id != key_id:
        # the key is the identity: only then does a tombstone for the key revoke what the key holds
        raise InvalidRecord(f"its id {exemption.id!r} is not the key's")
    return exemption


class Exemptions:
    """The exemptions in force, as the control topic says, and whether the topic has been read
    up to where it ended at start-up (no pause is decided on before)."""

    def __init__(self, metrics: Metrics | None = None, *, log_skipped: bool = True) -> None:
        self._by_key: dict[str, Exemption] = {}  # by the id the record's key names
        self._loaded = asyncio.Event()
        self._metrics, self._log_skipped = metrics, log_skipped
        self._warned: set[str] = set()
        # keys whose latest record is not held, and why (the first MAX_WARNED_KEYS; `guard exempt --list`)
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def all(self) -> list[Exemption]:
        """Every exemption on the topic, expired ones too, oldest first."""
        return sorted(self._by_key.values(), key=lambda e: e.created_at)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One control record: an exemption, or a tombstone revoking one. Records of other kinds
        (or a later version) are left alone; an invalid exemption is counted, logged (once per key)
        and skipped, and what its key held is dropped."""
        if key is None or not key.startswith(KEY_PREFIX.encode()):
            self._count("ignored")
            return
        key_id = key[len(KEY_PREFIX) : MAX_KEY_BYTES + 1].decode(errors="replace")  # no valid id is that long
        self.skipped.pop(key_id, None)
        if value is None:
            self._by_key.pop(key_id, None)
            self._count("revoked")
            return
        try:
            if len(key) > MAX_KEY_BYTES:
                raise InvalidRecord(f"the key is over {MAX_KEY_BYTES} bytes")
            exemption = parse_record(key_id, value)
        except InvalidRecord as error:
            self._by_key.pop(key_id, None)  # as compaction will: the key's latest record holds no exemption
            self._skip("invalid", key_id, f"not a valid exemption: {error}")
            return
        if key_id not in self._by_key and len(self._by_key) >= MAX_EXEMPTIONS:
            self._drop_expired(time.time())
            if len(self._by_key) >= MAX_EXEMPTIONS:
                self._skip("over_limit", key_id, f"over {MAX_EXEMPTIONS} exemptions in force: not held")
                return
        self._by_key[key_id] = exemption
        self._count("applied")

    def find(self, campaign_id: str, rule_name: str, now: float) -> Exemption | None:
        """The exemption covering this campaign and rule now (the one that lasts longest), if any."""
        covering = [e for e in self._by_key.values() if e.covers(campaign_id, rule_name, now)]
        return max(covering, key=lambda e: e._span[1]) if covering else None

    def _drop_expired(self, now: float) -> None:
        for key_id in [k for k, e in self._by_key.items() if e.expires_at.timestamp() <= now]:
            del self._by_key[key_id]

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.control_records.labels(result).inc()

    def _skip(self, result: str, key_id: str, why: str) -> None:
        self._count(result)
        if len(self.skipped) < MAX_WARNED_KEYS:
            self.skipped[key_id] = why
        if self._log_skipped and len(self._warned) < MAX_WARNED_KEYS and key_id not in self._warned:
            self._warned.add(key_id)
            log.warning("a control record is skipped; it exempts nothing", key=KEY_PREFIX + key_id, reason=why)

    def empty(self) -> Exemptions:
        """A new store, holding nothing, that counts and logs as this one does (a key already logged is
        not logged again): the control topic is read into it before it replaces what this one holds."""
        fresh = Exemptions(self._metrics, log_skipped=self._log_skipped)
        fresh._warned = self._warned
        return fresh

    def replace(self, other: Exemptions) -> None:
        """Hold exactly what `other` holds, at once: no decision sees a topic read halfway."""
        self._by_key, self.skipped = other._by_key, other.skipped

    def loaded(self) -> None:
        self._loaded.set()

    @property
    def is_loaded(self) -> bool:
        return self._loaded.is_set()

    async def wait(self) -> None:
        await self._loaded.wait()
