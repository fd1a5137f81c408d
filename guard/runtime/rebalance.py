"""The rebalance listener: commits what is settled before partitions move, and positions newly assigned ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential_jitter

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
    ready partition is parked on revoke, its engine and progress kept; given back with its committed
    offset unchanged (no other process read it meanwhile), it is ready again at once, read on from
    where it stopped: a rebalance holds up only the partitions it moved.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pipeline: Pipeline,
        recovery: Recovery,
        checkpoints: Any = None,  # a guard.runtime.checkpoints.Checkpointer: restores on assignment, writes on revoke
        *,
        deadline: float = POSITIONING_DEADLINE,
    ) -> None:
        self._consumer, self._pipeline, self._recovery = consumer, pipeline, recovery
        self._checkpoints, self._deadline = checkpoints, deadline
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
        self._pipeline.drop_parked(keep=assigned)  # those not given back belong to another process now
        fresh = [tp for tp in assigned if not self._pipeline.owns(tp)]
        log.info("partitions assigned", partitions=names(assigned), fresh=names(fresh))
        if not fresh:
            self._recovery.assigned([], since_ms)
            return
        self._consumer.pause(*fresh)  # nothing is read from them before their start is known
        if self._closed:  # shutting down: the next owner positions them
            return
        self._recovery.assigned([(tp, f"{tp.topic}[{tp.partition}]") for tp in fresh], since_ms)
        task = asyncio.create_task(self._position(fresh, since_ms))
        self._positioning.add(task)
        task.add_done_callback(self._positioning.discard)

    async def _position(self, fresh: list[TopicPartition], since_ms: int) -> None:
        """Keep, restore or look up each of `fresh`, then hand them to the pipeline, all at once.
        Retriable broker errors are retried until the deadline; then, or on any other error, the guard
        reports itself not live (guard.runtime.recovery: stuck) so that the group hands them on."""
        started = time.monotonic()
        try:
            rules = self._pipeline.rules
            offsets = await self._retrying(lambda: asyncio.gather(*map(self._consumer.committed, fresh)))
            committed = dict(zip(fresh, offsets, strict=True))
            kept = {tp: parked[1] for tp in fresh if (parked := self._kept(tp, committed[tp])) is not None}
            rest = [tp for tp in fresh if tp not in kept]
            restored = await self._checkpoints.restore(rest, since_ms) if self._checkpoints and rest else {}
            unrestored = {tp: committed[tp] for tp in rest if tp not in restored}
            starts, from_beginning = await self._retrying(lambda: start_offsets(self._consumer, unrestored, since_ms))
            starts |= {tp: offset for tp, (_, offset) in restored.items()} | kept
            if missing := [tp for tp in fresh if starts.get(tp, -1) < 0]:
                raise KafkaError(f"no start offset for {names(missing)}")
            if from_beginning and not self._warned_time_lookup:
                self._warned_time_lookup = True
                log.warning(
                    "the broker cannot look up offsets by time; reading from the beginning and skipping old records"
                )
            # from here on no await: the partitions join the pipeline together, or not at all if revoked before
            self._pipeline.drop_parked(keep=kept)  # parked, but read by another process meanwhile: start afresh
            for tp in fresh:
                self._consumer.seek(tp, starts[tp])
                if tp in kept:
                    self._recovery.kept(tp, self._pipeline.unpark(tp))
                    continue
                engine: Engine | None = restored[tp][0] if tp in restored else None
                if engine is not None and self._pipeline.rules is not rules:  # reloaded meanwhile
                    engine.set_rules(self._pipeline.rules)
                recovery = self._recovery.positioned(tp, committed[tp])
                self._pipeline.assign(tp, committed[tp], since_ms, engine, recovery, self._recovery.audit_read(tp))
            self._consumer.resume(*fresh)
        except Exception as error:
            log.exception("partitions not positioned; reporting not live", partitions=names(fresh))
            self._recovery.stuck(names(fresh), error)
            return
        log.info(
            "partitions positioned",
            partitions=names(fresh),
            kept=names(kept),
            seconds=round(time.monotonic() - started, 3),
        )

    def _kept(self, tp: TopicPartition, committed: int | None) -> tuple[int | None, int] | None:
        """A parked partition given back untouched: no offset committed since this process parked it."""
        parked = self._pipeline.parked(tp)
        if parked is None or parked[1] is None or parked[0] != committed:
            return None
        return parked[0], parked[1]

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(retriable),
            wait=wait_exponential_jitter(multiplier=0.5, max=10),
            stop=stop_after_delay(self._deadline),
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


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("positioning new partitions failed; retrying", error=repr(error), attempt=state.attempt_number)
