"""The keys one partition's engine has seen, to count a retried webhook once: compact and bounded.

A key is a 64-bit fingerprint of (campaign, signal, messageId), the same in every process
(fingerprints.py), so the keys survive a snapshot. Keys live in generations of the
partition's clock: a generation is open for 1/GENERATIONS of the horizon (or until it holds its
share of the budget), and is forgotten whole once the clock is more than the horizon past its
newest key. So a key is remembered for at least the horizon after it was first seen, and at most
1/GENERATIONS longer. With a budget, the store never holds more keys than it: before a new
generation opens, the oldest are forgotten until the new one fits (each forgotten key counts in
`evicted`; a retry of it would count again). What is kept depends only on the keys and times
given, in order, so the same log gives the same answers.

Storage: 8 bytes a key in `bytes` buckets (7 bytes of the fingerprint and a generation tag),
found with a C-level substring search. Python sets or dicts of ints cost 65-105 bytes a key.
Keys are appended, so in every bucket the oldest generation's entries come first and forgetting
it strips a prefix.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

from guard.engine.fingerprints import event_key

GENERATIONS = 8  # over-remembering by at most 1/8 of the horizon; a rotation per 1/8 of it
# `seal` opens a generation early only while fewer are alive (tags stay unique mod 256 beside the regular ones), and
# at most once a SEAL_EVERY of the clock: decisions closer together share one, the later ones waiting for its end
SEALED_GENERATIONS = 128
SEAL_EVERY = 60.0
BUCKET_LOAD = 32  # mean entries per bucket before the table doubles: 256 bytes to search
_MIN_BITS = 8  # the fingerprint's low byte picks the bucket and is not stored: at least 8 bits of it
_ENTRY = 8  # bytes: 7 of the fingerprint, then the generation tag
_U56 = (1 << 56) - 1


@dataclass(slots=True)
class _Generation:
    tag: int  # its sequence number mod 256 (fewer than 256 generations are ever alive)
    start: float  # the partition's clock when it opened
    newest: float  # the clock at its newest key
    keys: int = 0


class DedupeStore:
    """Seen keys within a horizon of event time, in at most `max_keys` keys (None: no budget)."""

    __slots__ = (
        "_horizon", "_span", "_max_keys", "_generation_cap", "_bits", "_mask", "_buckets",
        "_generations", "_open", "_tag", "_rotate_at", "_sequence", "keys", "evicted",
    )  # fmt: skip

    def __init__(self, horizon: float, max_keys: int | None = None) -> None:
        if max_keys is not None and max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._horizon, self._span, self._max_keys = horizon, horizon / GENERATIONS, max_keys
        self._generation_cap = sys.maxsize if max_keys is None else -(-max_keys // GENERATIONS)
        # with a budget, the buckets it needs from the start (8 bytes each): the table never grows
        self._bits = max(_MIN_BITS, (max_keys or 0).bit_length() - BUCKET_LOAD.bit_length() + 1)
        self._mask = (1 << self._bits) - 1
        self._buckets: list[bytes] = [b""] * (1 << self._bits)
        self._generations: deque[_Generation] = deque()  # oldest first; the last is open
        self._open = _Generation(0, float("-inf"), float("-inf"))
        self._tag = b"\0"
        self._rotate_at = float("-inf")  # the first key opens the first generation
        self._sequence = 0
        self.keys = 0  # keys remembered now
        self.evicted = 0  # keys forgotten before their horizon, at the budget

    @property
    def horizon(self) -> float:
        return self._horizon

    @property
    def span(self) -> float:
        """How long a generation stays open."""
        return self._span

    @property
    def max_keys(self) -> int | None:
        return self._max_keys

    @property
    def bits(self) -> int:
        """log2 of the number of buckets."""
        return self._bits

    @property
    def rotate_at(self) -> float:
        return self._rotate_at

    @property
    def sequence(self) -> int:
        return self._sequence

    def buckets(self) -> list[bytes]:
        return list(self._buckets)

    def generations(self) -> list[tuple[int, float, float, int]]:
        """(tag, start, newest, keys) of each generation, oldest first."""
        return [(g.tag, g.start, g.newest, g.keys) for g in self._generations]

    def load(
        self,
        bits: int,
        buckets: list[bytes],
        generations: list[tuple[int, float, float, int]],
        rotate_at: float,
        sequence: int,
        keys: int,
        evicted: int,
    ) -> None:
        """A snapshot's store, checked by the caller (snapshot.py) to add up."""
        if len(buckets) != 1 << bits or any(len(bucket) % _ENTRY for bucket in buckets):
            raise ValueError("dedupe buckets do not match their count")
        self._bits, self._mask, self._buckets = bits, (1 << bits) - 1, list(buckets)
        self._generations = deque(_Generation(*generation) for generation in generations)
        self._rotate_at, self._sequence, self.keys, self.evicted = rotate_at, sequence, keys, evicted
        # the newest generation is the open one: the same object, as keys are added to it
        self._open = self._generations[-1] if self._generations else _Generation(0, float("-inf"), float("-inf"))
        self._tag = bytes((self._open.tag,))

    def seen_event(self, campaign_id: str, signal: str, message_id: str, now: float) -> bool:
        """`seen` of the event's key (fingerprints.py)."""
        return self.seen(event_key(campaign_id, signal, message_id), now)  # type: ignore[arg-type]

    def seal(self, now: float) -> bool:
        """Set the keys seen so far apart from those to come (at a pause decision: `seen_before` then tells the
        campaign's mail before it from the mail of an episode a resume begins): a new generation opens now (the
        partition's clock), or, if the open one opened less than SEAL_EVERY ago, with the first key from then on.
        False when it cannot: SEALED_GENERATIONS are alive (a decision every minute for two hours)."""
        generation = self._open
        if not generation.keys:
            return True  # nothing seen since the last generation opened
        if len(self._generations) >= SEALED_GENERATIONS:
            return False
        due = generation.start + SEAL_EVERY
        if now >= due:
            self._rotate(now if now >= generation.newest else generation.newest)
        elif due < self._rotate_at:
            self._rotate_at = due  # `seen` opens it before the first key from then on
        return True

    def seen_before(self, campaign_id: str, signal: str, message_id: str, time: float) -> bool:
        """Whether the event's key is remembered from a generation whose newest key came before `time` (the
        partition's clock then): first seen before `time` for sure. A key not remembered, or of a generation still
        taking keys at `time`, says nothing (False). Asks; remembers nothing."""
        tag = self._tag_of(campaign_id, signal, message_id)
        return any(generation.tag == tag and generation.newest < time for generation in self._generations)

    def seen_before_generation(self, campaign_id: str, signal: str, message_id: str, sequence: int) -> bool:
        """Whether the event's key is remembered from a generation opened before generation `sequence` (the open one
        when an episode began): first seen before that, for sure, by the order of the partition's log, which one
        record stamped ahead (moving the clock, so every generation's times, past the episode's) cannot blur. Asks;
        remembers nothing."""
        tag = self._tag_of(campaign_id, signal, message_id)
        oldest = self._sequence - len(self._generations) + 1  # generations are consecutive, the open one last
        return any(generation.tag == tag and oldest + n < sequence for n, generation in enumerate(self._generations))

    def _tag_of(self, campaign_id: str, signal: str, message_id: str) -> int | None:
        """The generation tag of the event's key; None when it is not remembered."""
        fingerprint = event_key(campaign_id, signal, message_id)  # type: ignore[arg-type]
        bucket = self._buckets[fingerprint & self._mask]
        stored = (fingerprint >> 8 & _U56).to_bytes(7, "little")
        at = bucket.find(stored)
        while at >= 0:
            if not at & 7:
                return bucket[at + _ENTRY - 1]
            at = bucket.find(stored, at + 1)
        return None

    def seen(self, fingerprint: int, now: float) -> bool:
        """Whether the key was seen within the horizon; if not, it is remembered from `now` (the
        partition's clock, which never goes back)."""
        if now >= self._rotate_at:
            self._rotate(now)
        index = fingerprint & self._mask
        bucket = self._buckets[index]
        stored = (fingerprint >> 8 & _U56).to_bytes(7, "little")  # bits 8-63
        at = bucket.find(stored)
        while at >= 0:
            if not at & 7:  # at an entry's start: a match across two entries is no match
                return True
            at = bucket.find(stored, at + 1)
        self._buckets[index] = bucket + stored + self._tag
        generation = self._open
        generation.keys += 1
        generation.newest = now
        self.keys += 1
        if generation.keys >= self._generation_cap:
            self._rotate(now)
        elif self.keys > BUCKET_LOAD << self._bits:
            self._grow()
        return False

    def _rotate(self, now: float) -> None:
        """Open a new generation; forget those past the horizon, then the oldest while the new
        one would not fit in the budget."""
        generations = self._generations
        horizon = now - self._horizon
        while generations and generations[0].newest < horizon:
            self._forget(generations.popleft())
        if self._max_keys is not None:
            while generations and self.keys > self._max_keys - self._generation_cap:
                gone = generations.popleft()
                self.evicted += gone.keys
                self._forget(gone)
        self._sequence += 1
        self._open = _Generation(self._sequence % 256, now, now)
        self._tag = bytes((self._open.tag,))
        generations.append(self._open)
        self._rotate_at = now + self._span

    def _forget(self, generation: _Generation) -> None:
        """Strip the oldest generation's entries: in every bucket, the entries before any other's."""
        self.keys -= generation.keys
        if not generation.keys:
            return
        tag, tag_byte, buckets = generation.tag, bytes((generation.tag,)), self._buckets
        for index, bucket in enumerate(buckets):
            if bucket and bucket[_ENTRY - 1] == tag:
                tags = bucket[_ENTRY - 1 :: _ENTRY]
                buckets[index] = bucket[_ENTRY * (len(tags) - len(tags.lstrip(tag_byte))) :]

    def _grow(self) -> None:
        """Twice the buckets: each splits on the fingerprint's next bit, keeping its entries' order."""
        bits = self._bits
        shift = bits - _MIN_BITS  # that bit's place in the stored 7 bytes
        byte, bit = shift >> 3, shift & 7
        buckets = self._buckets + [b""] * len(self._buckets)
        for index in range(1 << bits):
            bucket = buckets[index]
            if not bucket:
                continue
            low, high = [], []
            for at in range(0, len(bucket), _ENTRY):
                (high if bucket[at + byte] >> bit & 1 else low).append(bucket[at : at + _ENTRY])
            buckets[index], buckets[index | 1 << bits] = b"".join(low), b"".join(high)
        self._buckets, self._bits, self._mask = buckets, bits + 1, (2 << bits) - 1
