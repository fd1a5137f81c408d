"""What /livez and /readyz report."""

from __future__ import annotations

import time

UNKEYED_NAMED = 5  # workspaces without a key named on /readyz; the rest are counted


class Health:
    """Liveness: the poll loop turns and the API key works. Readiness: live, polling, not stopping.

    Readiness does not require owning partitions: replicas beyond the partition count are idle
    by design, and must not block rollouts or disruption budgets. It does require that every
    configured input topic exists and that the consumer has seen all its partitions (so the group
    has handed them to some member): a missing topic, a typo, or one created after the guard
    started is not protected, and is not ready until it is read.
    """

    AUDIT_FAILING_SECONDS = 10.0  # a failed audit write this recent (retries come every second) means failing
    STALL_SECONDS = 60.0  # the poll loop returns every few hundred ms; a minute means it is stuck
    EVICTING_SECONDS = 300.0  # how long /readyz mentions campaigns evicted at the cap
    MISPLACED_SECONDS = 300.0  # how long /readyz mentions a campaign read from another partition than its key's
    STAMPED_BEHIND_SECONDS = 300.0  # how long /readyz mentions records arriving stamped behind the guard's clock

    def __init__(self) -> None:
        self.polling = False
        self.joined = False  # the consumer group assigned this replica its partitions (maybe none)
        self.recovering = False  # some partition is still replaying up to its committed offset
        self.kafka_error: str | None = None  # the last failed reachability probe, until one succeeds
        self.connecting = False  # start-up: trying to reach Kafka (alive, not ready)
        self.missing_topics: tuple[str, ...] = ()  # those of them the brokers do not know
        self.unread_topics: tuple[str, ...] = ()  # known to the brokers, not all partitions in the consumer's metadata
        self.internal_topics: dict[str, str] = {}  # internal topics missing and refused: what to create
        self.stopping = False
        self._audit_failed: tuple[float, str] | None = None  # (when, why) of the latest failed audit write
        self.auth_failed = False  # every key the guard holds was rejected: nothing is protected
        self.stuck: str | None = None  # assigned partitions that cannot be read: a restart hands them on
        self.rejected: set[str | None] = set()  # workspaces whose key was rejected (None: the default key)
        # workspaces no key pauses for, and what is known of why (None: campaigns whose events name none)
        self.unkeyed: dict[str | None, str] = {}
        self._last_poll = time.monotonic()
        self._evicted = 0  # campaigns evicted at the cap so far
        self._evicting: tuple[float, str] | None = None  # (when, what) of the latest evictions seen
        self._misplaced: tuple[float, str] | None = None  # (when, what) of the latest campaign misplaced
        self._stamped_behind: tuple[float, str] | None = None  # (when, what) of records arriving stamped behind

    def evictions(self, evicted: int, limit: int) -> None:
        """The running count of campaigns evicted at the cap (GUARD_MAX_CAMPAIGNS); a rise is shown
        on /readyz for a while. It does not make the guard unready: it still protects what it tracks."""
        if evicted > self._evicted:
            self._evicting = (
                time.monotonic(),
                f"at the campaign cap (GUARD_MAX_CAMPAIGNS={limit}): the least recently active campaigns are "
                f"evicted and start again without evidence ({evicted} so far)",
            )
            self._evicted = evicted

    def misplaced(self, why: str) -> None:
        """A campaign's events read from another partition than Kafka's default partitioner gives its key
        (guard.runtime.placement): shown on /readyz for a while. Not unready: the guard counts what it reads."""
        self._misplaced = (time.monotonic(), why)

    def stamped_behind(self, why: str) -> None:
        """Records arrive stamped far behind the guard's clock (guard.runtime.stamps): shown on /readyz for a while.
        Not unready: every pause is still made, late."""
        self._stamped_behind = (time.monotonic(), why)

    def warnings(self) -> list[str]:
        """Degraded but working: shown on /readyz beside the status."""
        warnings = [
            f"Leadterra rejected the API key of workspace {workspace or '(default key)'} (401): its campaigns "
            "cannot be paused"
            for workspace in sorted(self.rejected, key=str)
            if not self.auth_failed
        ]
        warnings.extend(self._unkeyed())
        warnings.extend(self.internal_topics[topic] for topic in sorted(self.internal_topics))
        now = time.monotonic()
        if self._evicting is not None and now - self._evicting[0] < self.EVICTING_SECONDS:
            warnings.append(self._evicting[1])
        if self._misplaced is not None and now - self._misplaced[0] < self.MISPLACED_SECONDS:
            warnings.append(self._misplaced[1])
        if self._stamped_behind is not None and now - self._stamped_behind[0] < self.STAMPED_BEHIND_SECONDS:
            warnings.append(self._stamped_behind[1])
        return warnings

    def audit_write_failed(self, why: str) -> None:
        """An audit write failed (it is retried every second): not ready while that goes on."""
        self._audit_failed = (time.monotonic(), why)

    def audit_written(self) -> None:
        self._audit_failed = None

    def polled(self) -> None:
        self._last_poll = time.monotonic()

    def authentication_failed(self, workspace: str | None = None, keys: int = 1) -> None:
        """A 401 with the key of `workspace`, one of the `keys` keys the guard holds."""
        self.rejected.add(workspace)
        self.auth_failed = len(self.rejected) >= keys

    def no_key(self, workspace: str | None, why: str = "") -> None:
        """No key pauses the campaigns of `workspace` (None: campaigns whose events name none, without
        LEADTERRA_API_KEY): shown on /readyz until a restart, which reads the keys file's workspaces. Not unready:
        every other workspace is protected."""
        self.unkeyed.setdefault(workspace, why)

    def _unkeyed(self) -> list[str]:
        """At most two warnings, however many workspaces have no key (a few named, the rest counted)."""
        warnings = []
        if None in self.unkeyed:
            warnings.append("no LEADTERRA_API_KEY: campaigns whose events name no workspace cannot be paused")
        # those told at start-up (a mapping's, with why) first
        named = sorted((w for w in self.unkeyed if w is not None), key=lambda w: (not self.unkeyed[w], w))
        if named:
            shown = [f"{w} ({self.unkeyed[w]})" if self.unkeyed[w] else w for w in named[:UNKEYED_NAMED]]
            more = f" and {len(named) - UNKEYED_NAMED} more" if len(named) > UNKEYED_NAMED else ""
            warnings.append(
                f"no API key for workspace {', '.join(shown)}{more}: not in LEADTERRA_API_KEYS_FILE, and no "
                "LEADTERRA_API_KEY; their campaigns cannot be paused: add their keys to the file and restart"
            )
        return warnings

    def authenticated(self, workspace: str | None = None) -> None:
        """A call with the key of `workspace` succeeded (after a rotation): it is no longer rejected."""
        self.rejected.discard(workspace)
        self.auth_failed = False

    def live(self) -> tuple[bool, str]:
        if self.auth_failed:
            return False, "Leadterra rejected the API key (401): no campaign can be paused"
        if self.stuck is not None:
            return False, self.stuck
        if not self.connecting and time.monotonic() - self._last_poll > self.STALL_SECONDS:
            return False, "the poll loop has not turned for a minute"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, reason = self.live()
        if not live:
            return live, reason
        if self.stopping:
            return False, "stopping"
        if self.connecting:
            return False, f"connecting to Kafka: {self.kafka_error or 'first attempt'}"
        if self.missing_topics:
            return False, (
                f"input topics that do not exist: {', '.join(self.missing_topics)} (GUARD_INPUT_TOPICS); "
                "the guard never creates them"
            )
        if self.unread_topics:
            return False, f"input topics whose partitions are not read yet: {', '.join(self.unread_topics)}"
        if not (self.polling and self.joined):
            return False, "not in the consumer group yet"
        if self.kafka_error is not None:
            return False, f"Kafka unreachable: {self.kafka_error}"
        if self._audit_failed is not None and time.monotonic() - self._audit_failed[0] < self.AUDIT_FAILING_SECONDS:
            return False, f"{self._audit_failed[1]}: pauses go ahead, unrecorded"
        if self.recovering:
            return False, "rebuilding state from the log"
        return True, "ok"
