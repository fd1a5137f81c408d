"""Bucketed sliding counts over event time."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from typing import TYPE_CHECKING, ClassVar

import msgspec

from guard.engine.fingerprints import message_key

if TYPE_CHECKING:
    from guard.engine.cusum import Cusum

BUCKETS_PER_WINDOW = 60  # the window slides in steps of 1/60 of its length (1 min for 1 h)
SAMPLE_IDS = 3  # message ids kept as evidence for audits
_NO_BUCKET = float("-inf")  # below any bucket index
_INT32 = 2**31 - 1  # a send time kept by LastN is whole seconds from its first send, in an int32
# A per-event (a send) stamped this far behind the newest one a `last:` or `cusum` series counted is history delivered
# again (a webhook Leadterra retried after 30 minutes or 2 hours, a bridge's retried batch), not the campaign's newest
# evidence: those series read events in arrival order, so they skip it, and the outcomes of the sends they skipped.
# Time windows count it in its own bucket. Far above what a path of the campaign's mail may lag (a mailbox whose
# webhooks go out late, a bridge flushing every few minutes) and a retry after 1 and 5 minutes, whose mail is counted.
LATE_PER_SECONDS = 900.0
# The message ids of the latest skipped per-events kept, to skip their outcomes: enough for outcomes that come 25
# minutes after their sends at a send every 6 s, when the retried mail comes at its pace (1 KiB in the compiled core,
# only in series that skipped a send).
SKIPPED_IDS = 256


_NO_ID = 0  # the hash ring's entry for a per-event without a message id


def _id_hash(message_id: str | None) -> int:
    """A message id as a signed 32-bit int, the same in every process (a collision among a window's
    sends: ~1 in 10 million)."""
    if message_id is None:
        return _NO_ID
    return (message_key(message_id) & 0xFFFFFFFF) - 0x80000000


def skips_late_per(series: LastN | Cusum, time: float, message_id: str | None, previous: float) -> bool:
    """Whether a `last:` or `cusum` series skips a per-event (LATE_PER_SECONDS); if it does, its message id is kept so
    that its outcomes are skipped too. Otherwise the newest per-event time moves to its time, but at most
    LATE_PER_SECONDS past `previous`, the time of the per-event counted before it (-inf: none): one send stamped ahead
    (a broken clock, a forged record) cannot make every later send look late, and a send after a quiet spell is the
    newest once a second one agrees."""
    newest = series.newest_per
    if time < newest - LATE_PER_SECONDS:
        if message_id is not None:
            skipped = series.skipped = series.skipped or []
            skipped.append(_id_hash(message_id))
            if len(skipped) > SKIPPED_IDS:
                del skipped[0]
        return True
    vouched = min(time, previous + LATE_PER_SECONDS)
    if vouched > newest:
        series.newest_per = vouched
    return False


def skips_of(series: LastN | Cusum, message_id: str | None) -> bool:
    """Whether an of-event is the outcome of a per-event the series skipped (as late), so skipped too."""
    return message_id is not None and series.skipped is not None and _id_hash(message_id) in series.skipped


def _keep_latest(samples: list | None, sample: tuple[float, str] | tuple[int, str]) -> list:
    if samples is None:
        return [sample]
    samples.append(sample)
    if len(samples) > SAMPLE_IDS:
        del samples[0]
    return samples


class SlidingCount(msgspec.Struct, gc=False):
    """How many matching events fell within the last `window` seconds of event time.

    Only non-empty buckets are stored, and buckets that slide out of the window are dropped as the
    clock advances. The newest bucket lives in two slots, so the common case (another event in the
    newest bucket) is a compare and two increments; older buckets are packed into a float64 array,
    16 bytes each, where a list per bucket would cost ~100. A bucket's index is `time // width`,
    kept as a float (whole numbers, exact far beyond any epoch time) to spare an int() per event.
    Not tracked by the garbage collector (gc=False: it refers to no container that could lead
    back to it), so millions of them add nothing to a collection's pause.
    """

    kind: ClassVar[str] = "sliding"  # the compiled core's types say the same (kinds.py)
    width: float  # the window / BUCKETS_PER_WINDOW: see `over`
    keep_samples: bool = True  # only numerators are quoted as evidence
    older: array = msgspec.field(default_factory=lambda: array("d"))  # index, count, index, count, ...
    newest: float = _NO_BUCKET  # the newest bucket's index; all of `older` are before it
    newest_count: int = 0
    total: int = 0
    samples: list[tuple[float, str]] | None = None  # (bucket index, message id), newest last

    @classmethod
    def over(cls, window: float, keep_samples: bool = True) -> SlidingCount:
        return cls(window / BUCKETS_PER_WINDOW, keep_samples)

    def add(self, time: float, message_id: str | None, now: float) -> bool:
        """Count one event; False when it is older than the window ending at `now` (not counted)."""
        index = time // self.width
        if time >= now:  # the newest event of the campaign (`now` is its latest event time)
            if index == self.newest:
                self.newest_count += 1
            else:
                self._start_bucket(index)
        elif index == self.newest and index > now // self.width - BUCKETS_PER_WINDOW:
            self.newest_count += 1
        elif not self._add_late(index, now):
            return False
        self.total += 1
        if message_id is not None and self.keep_samples:
            self.samples = _keep_latest(self.samples, (index, message_id))
        return True

    def _start_bucket(self, index: float) -> None:
        """A new newest bucket (`index` is now's bucket): the window slides."""
        # expire here too: a series no rule evaluates (a denominator) must stay bounded as well
        oldest_kept = index - BUCKETS_PER_WINDOW
        if self.newest <= oldest_kept or (self.older and self.older[0] <= oldest_kept):
            self._expire(oldest_kept)
        if self.newest_count:
            self.older.extend((self.newest, self.newest_count))
        self.newest, self.newest_count = index, 1

    def _add_late(self, index: float, now: float) -> bool:
        """An event older than the campaign's latest: into its bucket, if still inside the window."""
        oldest_kept = now // self.width - BUCKETS_PER_WINDOW
        if index <= oldest_kept:
            return False
        self._expire(oldest_kept)
        if index > self.newest:  # e.g. the first event of this series
            self._start_bucket(index)
            return True
        older = self.older
        for position in range(len(older) - 2, -1, -2):
            if older[position] == index:
                older[position + 1] += 1
                return True
            if older[position] < index:
                older[position + 2 : position + 2] = array("d", (index, 1))
                return True
        older[0:0] = array("d", (index, 1))
        return True

    def _expire(self, oldest_kept: float) -> None:
        older = self.older
        if older and older[0] <= oldest_kept:
            cut = 0
            while cut < len(older) and older[cut] <= oldest_kept:
                self.total -= int(older[cut + 1])
                cut += 2
            del older[:cut]
        if self.newest <= oldest_kept and self.newest_count:
            self.total -= self.newest_count
            self.newest_count = 0

    def count_at(self, now: float) -> int:
        """The count over the window ending at `now`, forgetting buckets that slid out."""
        self._expire(now // self.width - BUCKETS_PER_WINDOW)
        return self.total

    def weighted_count(self, now: float, weights: tuple[float, ...]) -> float:
        """The count over the window ending at `now`, each bucket's events weighted by its age in
        buckets: weights[0] for now's bucket, weights[59] for the oldest."""
        newest = now // self.width
        self._expire(newest - BUCKETS_PER_WINDOW)
        older, last = self.older, len(weights) - 1
        total = 0.0
        for position in range(0, len(older), 2):
            total += older[position + 1] * weights[min(last, max(0, int(newest - older[position])))]
        if self.newest_count:
            total += self.newest_count * weights[min(last, max(0, int(newest - self.newest)))]
        return total

    def sample_ids(self, now: float) -> tuple[str, ...]:
        """The latest few message ids still inside the window ending at `now`."""
        oldest_kept = now // self.width - BUCKETS_PER_WINDOW
        return tuple(message_id for index, message_id in self.samples or () if index > oldest_kept)

    def start_time(self) -> float | None:
        """Where the counted evidence starts: the oldest bucket's start (None when empty)."""
        if self.older:
            return self.older[0] * self.width
        return self.newest * self.width if self.newest_count else None


class LastN(msgspec.Struct, gc=False):
    """Of-events among a campaign's last N per-events (e.g. hard bounces among the last 200 sends),
    for any N up to `size`: rules asking for different N of the same events share one, grown when a
    reload asks for a longer N (`grow`).

    An of-event belongs to the per-event with its message id (a bounce to its send), found among the
    last `size` per-events: it counts while that send is among the last N. An of-event whose send
    is not among them (no message id, or sent earlier) belongs to the latest per-event, as if its
    send were the latest. Only the of-events' positions are stored (a few ints), and per per-event
    its time in whole seconds and a 32-bit hash of its message id, in two rings (8 bytes a send),
    so an audit can say where the counted evidence starts. A send far behind the newest one counted is skipped, with
    its outcomes (LATE_PER_SECONDS).
    """

    kind: ClassVar[str] = "last"
    size: int
    per_seen: int = 0
    of_positions: array = msgspec.field(default_factory=lambda: array("q"))  # per_seen at each of-event
    total: int = 0  # len(of_positions), read on every event
    samples: list[tuple[int, str]] | None = None  # (per_seen, message id), newest last
    # the last `size` per-events' times, by position % size, in whole seconds from `time_base`
    per_times: array = msgspec.field(default_factory=lambda: array("i"))
    time_base: float = 0.0  # the first per-event's time, floored to the second
    # the same per-events' message ids, hashed to 32 bits (_NO_ID: none), by position % size
    per_ids: array = msgspec.field(default_factory=lambda: array("i"))
    newest_per: float = float("-inf")  # the newest per-event time counted (LATE_PER_SECONDS)
    skipped: list[int] | None = None  # the latest skipped per-events' message ids, hashed, newest last

    def add_per(self, time: float, message_id: str | None, now: float) -> bool:
        position, times = self.per_seen, self.per_times
        previous = self.time_base + times[(position - 1) % self.size] if position else -math.inf
        if skips_late_per(self, time, message_id, previous):
            return False
        if not position:
            self.time_base = time // 1
        second = int((time - self.time_base) // 1)
        if not -_INT32 <= second <= _INT32:  # a send decades away from the first: kept at the edge
            second = _INT32 if second > 0 else -_INT32
        hashed = _id_hash(message_id)
        if position < self.size:
            times.append(second)
            self.per_ids.append(hashed)
        else:
            times[position % self.size] = second
            self.per_ids[position % self.size] = hashed
        self.per_seen = position + 1
        oldest_gone = self.per_seen - self.size
        positions = self.of_positions
        if positions and positions[0] <= oldest_gone:
            del positions[: bisect_right(positions, oldest_gone)]
            self.total = len(positions)
        return True

    def add_of(self, time: float, message_id: str | None, now: float) -> bool:
        if skips_of(self, message_id):
            return False
        position = self._send_of(message_id)
        positions = self.of_positions
        if position == self.per_seen or not positions or positions[-1] <= position:
            positions.append(position)
        else:  # the outcome of an earlier send: among the counted, in order of position
            positions.insert(bisect_right(positions, position), position)
        self.total += 1
        if message_id is not None:
            self.samples = _keep_latest(self.samples, (position, message_id))
        return True

    def _send_of(self, message_id: str | None) -> int:
        """Where an of-event counts: 1 + the position of the per-event with its message id among
        the last `size`, else the latest per-event's (`per_seen`)."""
        if message_id is None or not self.per_seen:
            return self.per_seen
        try:
            slot = self.per_ids.index(_id_hash(message_id))  # a C scan of at most `size` ints
        except ValueError:
            return self.per_seen
        latest = self.per_seen - 1
        return latest - (latest - slot) % self.size + 1

    def grow(self, size: int) -> None:
        """Room for the last `size` per-events, where it keeps fewer (a reload asks for a longer window of the same
        events), keeping the sends it holds and their outcomes. Those are numbered again from the oldest held, so
        that it never counts a send it no longer holds, and laid in the ring by their new positions."""
        if size <= self.size:
            return
        gone = self.per_seen - min(self.per_seen, self.size)  # sends counted once that the ring no longer holds
        if gone:
            oldest = gone % self.size  # its slot: the ring is full
            self.per_times = self.per_times[oldest:] + self.per_times[:oldest]
            self.per_ids = self.per_ids[oldest:] + self.per_ids[:oldest]
            positions = self.of_positions
            del positions[: bisect_right(positions, gone)]
            self.of_positions = array("q", (position - gone for position in positions))
            self.total = len(self.of_positions)
            held = [(position - gone, message_id) for position, message_id in self.samples or () if position > gone]
            self.samples = held or None
            self.per_seen -= gone
        self.size = size

    def counts(self, size: int) -> tuple[int, int]:
        """(of-events, per-events) within the last `size` per-events, never more per-events than the ring holds."""
        positions = self.of_positions
        return len(positions) - bisect_right(positions, self.per_seen - size), min(self.per_seen, size, self.size)

    def start_time(self, size: int) -> float | None:
        """The time of the earliest of the last `size` per-events the ring holds (whole seconds, rounded down);
        None before the first."""
        counted = min(self.per_seen, size, self.size)
        if not counted:
            return None
        times, first = self.per_times, (self.per_seen - counted) % self.size
        end = first + counted
        if end <= len(times):
            earliest = min(times[first:end])
        else:  # the counted span wraps around the end of the ring
            earliest = min(min(times[first:]), min(times[: end - self.size]))
        return self.time_base + earliest

    def sample_ids_within(self, size: int) -> tuple[str, ...]:
        """The latest few message ids among the last `size` per-events the ring holds."""
        oldest_gone = self.per_seen - min(size, self.size)
        return tuple(message_id for position, message_id in self.samples or () if position > oldest_gone)
