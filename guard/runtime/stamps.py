"""Records that arrive stamped far behind the guard's clock, and so are read as a backlog's.

A pause decision whose record is older than the resume grace is held until its campaign reads as caught up
(catchup.py). Records stamped minutes behind as they arrive (a producer's clock behind, this pod's ahead, a
history forwarded late) make every live decision such a one: each pause waits up to GUARD_CATCH_UP_LIMIT. The
guard cannot tell the clocks apart, so it says what it sees: records appended since a partition's reading was
last at its log end (their append time is later than that) whose newest stamp is more than the grace behind it,
batch after batch for a while. Logged at most once a minute per topic, and named on /readyz for a while.
"""

from __future__ import annotations

import time

import structlog

from guard.telemetry.health import Health

log = structlog.get_logger("guard.runtime.stamps")

LOG_EVERY = 60.0  # seconds between warnings of one topic while it lasts
PERSISTS = 60.0  # seconds (the resume grace if shorter) stale stamps must last: not one retried record
PERSISTS_BATCHES = 3


class StampWatch:
    """One partition's fresh records, batch by batch: how far behind their stamps run, once that lasts."""

    __slots__ = ("_at_end", "_since", "_batches")

    def __init__(self) -> None:
        self._at_end: float | None = None  # wall clock when the reading was last at the log end
        self._since: float | None = None  # since when every batch was stamped behind
        self._batches = 0

    def batch(self, newest_ms: int, reached_end: bool, now: float, grace: float) -> float | None:
        """A batch handled at `now`, its newest record stamped `newest_ms`: how many seconds behind the records
        appended since the reading was last at the log end are stamped (at least), once every batch has been for
        a while; else None."""
        behind = None if self._at_end is None else self._at_end - newest_ms / 1000
        self._at_end = now if reached_end else None
        if behind is None or behind <= grace:
            self._since, self._batches = None, 0
            return None
        self._since = now if self._since is None else self._since
        self._batches += 1
        lasted = now - self._since >= min(PERSISTS, grace) and self._batches >= PERSISTS_BATCHES
        return behind if lasted else None


class StaleStamps:
    """Tells of partitions whose fresh records are stamped behind (StampWatch): a log line, /readyz."""

    def __init__(self, health: Health, grace: float, catch_up_limit: float) -> None:
        self._health, self._grace, self._limit = health, grace, catch_up_limit
        self._logged_at: dict[str, float] = {}  # topic -> monotonic time of its latest warning

    def report(self, topic: str, partition: int, behind: float) -> None:
        why = (
            f"records appended to {topic}[{partition}] now are stamped {_minutes(behind)} behind this guard's "
            f"clock, over GUARD_RESUME_GRACE ({self._grace:g} s): a producer's clock behind or this pod's ahead "
            "(keep clocks in step: NTP), or a history forwarded late. They are read as a backlog's: each pause "
            f"they call for waits up to GUARD_CATCH_UP_LIMIT ({self._limit:g} s)"
        )
        self._health.stamped_behind(why)
        now = time.monotonic()
        if now - self._logged_at.get(topic, -LOG_EVERY) >= LOG_EVERY:
            log.warning(why)
            self._logged_at[topic] = now


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
