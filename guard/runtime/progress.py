"""One partition's progress: what is handled, pending (decisions not yet recorded, held ones included) and
committed. The commit rule lives here: an offset is committable once every record before it is handled and
every decision it caused is recorded."""

from __future__ import annotations

from collections import Counter

from guard.runtime.catchup import Held
from guard.runtime.recovery import AuditRead, PartitionRecovery
from guard.runtime.stamps import StampWatch


class PartitionProgress:
    """What of one partition is handled, pending and committed; its recovery (guard.runtime.recovery) says
    what is replayed."""

    __slots__ = (
        "recovery",
        "audit_read",
        "new_group",
        "since_ms",
        "next_offset",
        "pending",
        "forwarding",
        "held",
        "stamps",
        "last_committed",
        "busy",
        "end_when_positioned",
        "_fetched",
        "_at_end",
    )

    def __init__(
        self,
        committed: int | None,
        since_ms: int,
        recovery: PartitionRecovery,
        audit_read: AuditRead | None,
        end_when_positioned: int | None = None,
    ) -> None:
        self.recovery, self.audit_read = recovery, audit_read  # a live pause waits for `audit_read`
        self.new_group = committed is None  # then records older than the cut-off are not acted on
        self.since_ms = since_ms  # epoch ms: the look-back cut-off
        self.next_offset: int | None = None
        self.pending: Counter[int] = Counter()
        # writes to the scope topic under way, by the first input offset they forward (pipeline.py): they hold
        # commits back as decisions do, but not a checkpoint, which waits for them instead (checkpoints.py)
        self.forwarding: dict[int, set] = {}
        self.held: dict[str, Held] = {}  # pause decisions by id, until the partition catches up (catchup.py)
        self.stamps = StampWatch()  # of an input partition: do fresh records arrive stamped far behind?
        self.last_committed = committed
        self.busy = False  # a batch is being handled: the engine is ahead of `next_offset`
        # the log end looked up when the partition was positioned: a backlog is not read before reaching it,
        # whatever the consumer's high watermark says meanwhile (unknown, or from an earlier fetch)
        self.end_when_positioned = end_when_positioned
        self._fetched = False
        self._at_end: tuple[int, float] | None = None  # the log end the reading is at, and since when

    def fetched(self, log_end: int | None) -> None:
        """The high watermark of the first fetch after positioning raises the end looked up then: a broker may
        answer that lookup with the start of the last batch instead (the embedded one does)."""
        if not self._fetched and log_end is not None:
            self._fetched = True
            if self.end_when_positioned is not None:
                self.end_when_positioned = max(self.end_when_positioned, log_end)

    def quiet_at_end(self, position: int, log_end: int | None, now: float, quiet: float) -> bool:
        """The reading has been at the log end, and the log end has not moved, for `quiet` seconds: whatever
        history is being written to the partition is all in."""
        if log_end is None or position < log_end:
            self._at_end = None
            return False
        if self._at_end is None or self._at_end[0] != log_end:
            self._at_end = (log_end, now)
        return now - self._at_end[1] >= quiet

    def read_backlog(self, position: int) -> bool:
        """`position` reached the end the log had when this partition was positioned."""
        return self.end_when_positioned is None or position >= self.end_when_positioned

    def recorded(self, offset: int) -> None:
        self.pending[offset] -= 1
        if self.pending[offset] <= 0:
            del self.pending[offset]

    def forwarded(self, offset: int, delivery) -> None:  # noqa: ANN001 - an asyncio.Future
        """A write to the scope topic of records from `offset` on: pending until done."""
        deliveries = self.forwarding.setdefault(offset, set())
        deliveries.add(delivery)

        def done(_) -> None:  # noqa: ANN001
            deliveries.discard(delivery)
            if not deliveries and self.forwarding.get(offset) is deliveries:
                del self.forwarding[offset]

        delivery.add_done_callback(done)

    def committable(self) -> int | None:
        waiting = [*self.pending, *self.forwarding]
        offset = min(waiting) if waiting else self.next_offset
        if offset is None or (self.last_committed is not None and offset <= self.last_committed):
            return None
        return offset
