"""Bucketed sliding counts over event time."""

from __future__ import annotations

from bisect import bisect_right

BUCKETS_PER_WINDOW = 60  # the window slides in steps of 1/60 of its length (1 min for 1 h)
SAMPLE_IDS = 3  # message ids kept as evidence for audits


def _keep_latest(samples: list[tuple[int, str]] | None, sample: tuple[int, str]) -> list[tuple[int, str]]:
    if samples is None:
        return [sample]
    samples.append(sample)
    if len(samples) > SAMPLE_IDS:
        del samples[0]
    return samples


class SlidingCount:
    """How many matching events fell within the last `window` seconds of event time.

    Only non-empty buckets are stored, so a quiet series costs almost nothing, and buckets that
    slide out of the window are dropped as the clock advances.
    """

    __slots__ = ("width", "buckets", "total", "samples", "keep_samples")

    def __init__(self, window: float, keep_samples: bool = True) -> None:
        self.width = window / BUCKETS_PER_WINDOW
        # lists, not deques: an empty deque costs 760 bytes, and there are millions of these
        self.buckets: list[list[int]] = []  # [bucket index, count], oldest first
        self.total = 0
        self.samples: list[tuple[int, str]] | None = None  # (bucket index, message id), newest last
        self.keep_samples = keep_samples  # only numerators are quoted as evidence

    def add(self, time: float, message_id: str | None, now: float) -> bool:
        """Count one event; False when it is older than the window ending at `now` (not counted)."""
        index = int(time // self.width)
        oldest_kept = int(now // self.width) - BUCKETS_PER_WINDOW
        if index <= oldest_kept:
            return False
        buckets = self.buckets
        # expire here too: a series no rule evaluates (a denominator) must stay bounded as well
        while buckets and buckets[0][0] <= oldest_kept:
            self.total -= buckets.pop(0)[1]
        if not buckets or index > buckets[-1][0]:
            buckets.append([index, 1])
        elif index == buckets[-1][0]:
            buckets[-1][1] += 1
        else:
            self._add_late(index)
        self.total += 1
        if message_id is not None and self.keep_samples:
            self.samples = _keep_latest(self.samples, (index, message_id))
        return True

    def sample_ids(self, now: float) -> tuple[str, ...]:
        """The latest few message ids still inside the window ending at `now`."""
        oldest_kept = int(now // self.width) - BUCKETS_PER_WINDOW
        return tuple(message_id for index, message_id in self.samples or () if index > oldest_kept)

    def _add_late(self, index: int) -> None:
        buckets = self.buckets
        for position in range(len(buckets) - 1, -1, -1):
            if buckets[position][0] == index:
                buckets[position][1] += 1
                return
            if buckets[position][0] < index:
                buckets.insert(position + 1, [index, 1])
                return
        buckets.insert(0, [index, 1])

    def count_at(self, now: float) -> int:
        """The count over the window ending at `now`, forgetting buckets that slid out."""
        oldest_kept = int(now // self.width) - BUCKETS_PER_WINDOW
        buckets = self.buckets
        while buckets and buckets[0][0] <= oldest_kept:
            self.total -= buckets.pop(0)[1]
        return self.total

    def start_time(self) -> float | None:
        """Where the counted evidence starts: the oldest bucket's start (None when empty)."""
        return self.buckets[0][0] * self.width if self.buckets else None


class LastN:
    """Of-events among a campaign's last N per-events (e.g. hard bounces among the last 200 sends).

    Counted by arrival, not by joining message ids: an of-event belongs to the span of per-events
    it arrived in. Only the of-events' positions are stored (a few ints), so it stays small.
    """

    __slots__ = ("size", "per_seen", "of_positions", "samples")

    def __init__(self, size: int) -> None:
        self.size = size
        self.per_seen = 0
        self.of_positions: list[int] = []  # per_seen when each of-event arrived
        self.samples: list[tuple[int, str]] | None = None

    def add_per(self, time: float, message_id: str | None, now: float) -> bool:
        self.per_seen += 1
        oldest_gone = self.per_seen - self.size
        positions = self.of_positions
        if positions and positions[0] <= oldest_gone:
            del positions[: bisect_right(positions, oldest_gone)]
        return True

    def add_of(self, time: float, message_id: str | None, now: float) -> bool:
        self.of_positions.append(self.per_seen)
        if message_id is not None:
            self.samples = _keep_latest(self.samples, (self.per_seen, message_id))
        return True

    @property
    def total(self) -> int:
        return len(self.of_positions)

    def counts(self) -> tuple[int, int]:
        """(of-events, per-events) within the last N per-events."""
        return len(self.of_positions), min(self.per_seen, self.size)

    def start_time(self) -> float | None:
        return None  # counted by position, not time

    def sample_ids(self, now: float) -> tuple[str, ...]:
        oldest_gone = self.per_seen - self.size
        return tuple(message_id for position, message_id in self.samples or () if position > oldest_gone)
