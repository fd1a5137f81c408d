"""The rebalance listener: commits what is settled before partitions move, and positions newly assigned ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_before_delay, wait_exponential_jitter

from guard.engine import Engine
from guard.runtime.pipeline import Pipeline
from guard.runtime.recovery import Recovery, Stage
from guard.runtime.start_offsets import start_offsets
from guard.runtime.topics import names

log = structlog.get_logger("guard.runtime.rebalance")

T = TypeVar("T")
POSITIONING_DEADLINE = 300.0  # seconds of retriable broker errors before the partitions are given up


def retriable(error: BaseException) -> bool:
    """A broker error worth another try (a leader moving, a timeout); not an authorization or a bug."""
    if isinstance(error, (OSError, KafkaTimeoutError)):  # aiokafka does not mark its timeout retriable
        return True
    return isinstance(error, KafkaError) and error.retriable


class Rebalance(ConsumerRebalanceListener):
    """Commits what is settled before partitions move, and positions newly assigned ones.

    aiokafka runs these in its coordinator task: the poll loop goes on while they await, and while
    `on_partitions_assigned` runs the consumer sends no heartbeats. So the assignment only pauses
    the new partitions and hands them to a positioning task (restore the checkpoint, look up the
    committed and start offsets); a restore slower than the session timeout would otherwise get
    the guard expelled from its group, and expelled again on every join. A partition joins the
    pipeline, and is resumed, once it is positioned; `recovery` (guard.runtime.recovery) takes it
    from there.

    aiokafka revokes every partition at each rebalance and most come back to the same process. A
    ready partition is parked on revoke, its engine and progress kept. Given back by the very next
    generation of the group (so no other member can have owned it in between) with its committed
    offset unchanged, it is ready again at once, before the others are positioned, and read on from
    where it stopped: a rebalance holds up only the partitions it moved.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pipeline: Pipeline,
        recovery: Recovery,
        checkpoints: Any = None,  # a guard.runtime.checkpoints.Checkpointer: restores on assignment, writes on revoke
        *,
        generation: Callable[[], int | None] | None = None,
        deadline: float = POSITIONING_DEADLINE,
    ) -> None:
        self._consumer, self._pipeline, self._recovery = consumer, pipeline, recovery
        self._checkpoints, self._deadline = checkpoints, deadline
        self._generation = generation or partial(group_generation, consumer)
        self._last_generation: int | None = None
        self._positioning: set[asyncio.Task[None]] = set()
        self._closed = False
        self._warned_time_lookup = False

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._cancel()  # partitions still positioning are positioned again by their next assignment
        offsets = {tp: offset for tp, offset in self._pipeline.committable().items() if tp in revoked}
        if offsets:
            try:
                await self._consumer.commit(offsets)
                self._pipeline.committed(offsets)
            except Exception as error:  # the new owner replays from the last commit: late, not lost
                log.warning("commit on revoke failed", error=str(error))
        if self._checkpoints is not None:  # the next owner restores from here
            await self._checkpoints.write([tp for tp in revoked if self._pipeline.owns(tp)])
        for tp in revoked:
            if self._recovery.stage(tp) is Stage.READY:
                self._pipeline.park(tp)
            else:
                self._pipeline.revoke(tp)
            self._recovery.revoked(tp)
        log.info("partitions revoked", partitions=names(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # the rules in force now decide how far back to rebuild (a reload may have changed them)
        since_ms = max(0, int((time.time() - self._pipeline.rules.retention) * 1000))
        generation = self._generation()
        if generation is None or self._last_generation is None or generation != self._last_generation + 1:
            self._pipeline.drop_parked()  # a generation went by without this process: others may have read them
        else:
            self._pipeline.drop_parked(keep=assigned)  # those not given back belong to another process now
        self._last_generation = generation
        returning = [tp for tp in assigned if self._pipeline.parked(tp) is not None]
        fresh = [tp for tp in assigned if not self._pipeline.owns(tp) and tp not in returning]
        log.info("partitions assigned", partitions=names(assigned), fresh=names(fresh), returning=names(returning))
        self._recovery.assigned([(tp, f"{tp.topic}[{tp.partition}]") for tp in fresh], since_ms)
        if not fresh and not returning:
            return
        self._consumer.pause(*fresh, *returning)  # nothing is read from them before their start is known
        if self._closed:  # shutting down: the next owner positions them
            return
        task = asyncio.create_task(self._position(returning, fresh, since_ms))
        self._positioning.add(task)
        task.add_done_callback(self._positioning.discard)

    async def _position(self, returning: list[TopicPartition], fresh: list[TopicPartition], since_ms: int) -> None:
        """Keep the `returning` partitions whose committed offset did not move (ready at once), then
        restore or look up the others and hand them to the pipeline together. Retriable broker errors are
        retried until the deadline; then, or on any other error, the guard reports itself not live
        (guard.runtime.recovery: stuck) so that the group hands them on."""
        started = time.monotonic()
        try:
            kept: list[TopicPartition] = []
            if returning:
                offsets = await self._retrying(lambda: asyncio.gather(*map(self._consumer.committed, returning)))
                kept = [tp for tp, offset in zip(returning, offsets, strict=True) if self._untouched(tp, offset)]
                # no await from here: owned and ready again, or dropped and positioned as new
                self._pipeline.drop_parked(keep=kept)
                for tp in kept:
                    recovery, next_offset = self._pipeline.unpark(tp)
                    self._consumer.seek(tp, next_offset)
                    self._recovery.kept(tp, recovery)
                self._consumer.resume(*kept)
                moved = [tp for tp in returning if tp not in kept]
                self._recovery.assigned([(tp, f"{tp.topic}[{tp.partition}]") for tp in moved], since_ms)
                fresh = moved + fresh
            if fresh:
                await self._position_fresh(fresh, since_ms)
        except Exception as error:
            log.exception("partitions not positioned; reporting not live", partitions=names({*returning, *fresh}))
            self._recovery.stuck(names({*returning, *fresh}), error)
            return
        log.info(
            "partitions positioned",
            partitions=names([*kept, *fresh]),
            kept=names(kept),
            seconds=round(time.monotonic() - started, 3),
        )

    def _untouched(self, tp: TopicPartition, committed: int | None) -> bool:
        """A parked partition's committed offset is the one this process last committed or saw."""
        parked = self._pipeline.parked(tp)
        return parked is not None and parked[1] is not None and parked[0] == committed

    async def _position_fresh(self, fresh: list[TopicPartition], since_ms: int) -> None:
        """Restore or look up `fresh`, then hand them to the pipeline, all at once."""
        rules = self._pipeline.rules
        offsets = await self._retrying(lambda: asyncio.gather(*map(self._consumer.committed, fresh)))
        committed = dict(zip(fresh, offsets, strict=True))
        restored = await self._checkpoints.restore(fresh, since_ms) if self._checkpoints else {}
        unrestored = {tp: committed[tp] for tp in fresh if tp not in restored}
        starts, from_beginning = await self._retrying(lambda: start_offsets(self._consumer, unrestored, since_ms))
        ends = await self._retrying(lambda: self._consumer.end_offsets(fresh))  # what a backlog reads up to
        starts |= {tp: offset for tp, (_, offset) in restored.items()}
        if missing := [tp for tp in fresh if starts.get(tp, -1) < 0]:
            raise KafkaError(f"no start offset for {names(missing)}")
        if from_beginning and not self._warned_time_lookup:
            self._warned_time_lookup = True
            log.warning(
                "the broker cannot look up offsets by time; reading from the beginning and skipping old records"
            )
        # from here on no await: the partitions join the pipeline together, or not at all if revoked before
        for tp in fresh:
            engine: Engine | None = restored[tp][0] if tp in restored else None
            if engine is not None and self._pipeline.rules is not rules:  # reloaded meanwhile
                engine.set_rules(self._pipeline.rules)
            self._consumer.seek(tp, starts[tp])
            other_rules = self._checkpoints is not None and self._checkpoints.other_rules(tp)
            recovery = self._recovery.positioned(tp, committed[tp], other_rules=other_rules)
            self._pipeline.assign(
                tp, committed[tp], since_ms, engine, recovery, self._recovery.audit_read(tp), ends.get(tp)
            )
        self._consumer.resume(*fresh)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(retriable),
            wait=wait_exponential_jitter(multiplier=0.5, max=10),
            stop=stop_before_delay(self._deadline),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity returns or raises")

    async def close(self) -> None:
        """At shutdown: stop positioning, and position nothing assigned from now on."""
        self._closed = True
        await self._cancel()

    async def _cancel(self) -> None:
        for task in list(self._positioning):
            task.cancel()
        await asyncio.gather(*self._positioning, return_exceptions=True)


def group_generation(consumer: AIOKafkaConsumer) -> int | None:
    """The consumer group generation this consumer joined last, or None where aiokafka does not say
    (a private attribute: without it nothing is kept over a rebalance)."""
    generation = getattr(getattr(consumer, "_coordinator", None), "generation", None)
    return generation if isinstance(generation, int) and generation >= 0 else None


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("positioning new partitions failed; retrying", error=repr(error), attempt=state.attempt_number)
