"""Records that arrive stamped far behind the guard's clock: told, once it lasts (guard.runtime.stamps)."""

from __future__ import annotations

from guard.runtime.stamps import StaleStamps, StampWatch
from guard.telemetry.health import Health

GRACE = 300.0


def watch(batches: list[tuple[float, float, bool]]) -> list[float | None]:
    """(handled at, newest stamp in seconds, reached the log end) per batch: what the watch says of each."""
    stamps = StampWatch()
    return [stamps.batch(int(stamp * 1000), at_end, now, GRACE) for now, stamp, at_end in batches]


def test_records_arriving_stamped_minutes_behind_are_told_once_it_lasts_a_minute() -> None:
    """A producer whose clock runs 8 minutes behind, read live: told from the third batch a minute on."""
    said = watch([(t, t - 480, True) for t in range(1000, 1100, 10)])
    assert said[:7] == [None] * 7  # the first batch has nothing to compare with; then under a minute
    assert said[7] == 470  # at least: stamped 480 s before now, appended after the batch before (10 s ago)


def test_a_live_stream_a_first_deploys_backlog_and_one_retried_record_are_not() -> None:
    live = [(t, t - 0.2, True) for t in range(1000, 1200, 5)]
    backlog = [(1000 + n, 1000 - 3 * 3600 + n * 60, False) for n in range(100)] + live  # hours old, then live
    retried = [*live[:10], (1050.5, 1050 - 7200, True), *live[10:]]  # one webhook retried hours late
    assert set(watch(live)) == {None}
    assert set(watch(backlog)) == {None}
    assert set(watch(retried)) == {None}


def test_a_pause_in_the_stale_stamps_starts_the_count_again() -> None:
    stale = [(t, t - 480, True) for t in range(1000, 1050, 10)]
    fresh = [(1055, 1054.9, True)]
    again = [(t, t - 480, True) for t in range(1060, 1110, 10)]
    assert set(watch(stale + fresh + again)) == {None}  # never a minute on end


def test_the_warning_names_the_partition_the_skew_and_what_it_costs() -> None:
    health = Health()
    StaleStamps(health, GRACE, 300.0).report("events", 3, 482.0)
    [warning] = health.warnings()
    assert warning.startswith("records appended to events[3] now are stamped 8.0 min behind this guard's clock")
    assert "NTP" in warning and "GUARD_CATCH_UP_LIMIT (300 s)" in warning
