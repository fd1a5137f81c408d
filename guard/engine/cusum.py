"""The CUSUM statistic of a `cusum` rule: O(1) state per campaign, fed in arrival order."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from guard.engine.windows import SAMPLE_IDS, skips_late_per, skips_of


class Cusum(msgspec.Struct, gc=False):
    """S = max(0, S + x) over a campaign's events as they arrive: x = `fall` (< 0) for each `per`
    event (a send, clean until its outcome arrives), x = `rise` (> 0) for each `of` event (it turns
    one of those sends into an outcome; rise = ln(bad/healthy) - fall, so a send and its outcome
    add up to the textbook ln(bad/healthy)). A rise never needs the floor, so only `per` events can
    reset the run: the stretch of events since S last left zero, which is the evidence a decision quotes. A send far
    behind the newest one counted is history delivered again and skipped, with its outcomes (windows.LATE_PER_SECONDS).
    """

    kind: ClassVar[str] = "cusum"
    rise: float
    fall: float
    statistic: float = 0.0
    run_from: float | None = None  # the earliest event time in the current run (None: S is 0)
    run_of: int = 0  # `of` events in the current run
    run_per: int = 0  # `per` events in the current run
    samples: list[str] | None = None  # the latest few `of` message ids of the run, newest last
    newest_per: float = float("-inf")  # the newest `per` event time counted
    skipped: list[int] | None = None  # the latest skipped `per` events' message ids, hashed, newest last
    previous_per: float = float("-inf")  # the latest `per` event time counted (-inf: none yet)

    @property
    def total(self) -> float:
        """What the engine compares with a rule's level before evaluating it (as a window's count)."""
        return self.statistic

    def add_per(self, time: float, message_id: str | None, now: float) -> bool:
        if skips_late_per(self, time, message_id, self.previous_per):
            return False
        self.previous_per = time
        statistic = self.statistic + self.fall
        if statistic <= 0.0:
            self.statistic, self.run_from, self.run_of, self.run_per, self.samples = 0.0, None, 0, 0, None
        else:
            self.statistic = statistic
            self.run_per += 1
            self.run_from = time if self.run_from is None else min(self.run_from, time)
        return True

    def add_of(self, time: float, message_id: str | None, now: float) -> bool:
        if skips_of(self, message_id):
            return False
        self.run_from = time if self.run_from is None else min(self.run_from, time)
        self.statistic += self.rise
        self.run_of += 1
        if message_id is not None:
            samples = self.samples = self.samples or []
            samples.append(message_id)
            if len(samples) > SAMPLE_IDS:
                del samples[0]
        return True
