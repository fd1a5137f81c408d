"""The rebalance listener: commits what is settled before partitions move, and positions newly assigned ones."""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from guard.runtime.pipeline import Pipeline
from guard.runtime.recovery import Recovery
from guard.runtime.start_offsets import seek_to_start
from guard.runtime.topics import names

log = structlog.get_logger("guard.runtime.rebalance")


class Rebalance(ConsumerRebalanceListener):
    """Commits what is settled before partitions move, and positions newly assigned ones.

    aiokafka runs these in its coordinator task: the poll loop goes on while they await. They
    share no lock with it; a partition joins the pipeline only once it is positioned, and `recovery`
    (guard.runtime.recovery) takes it from there.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pipeline: Pipeline,
        recovery: Recovery,
        checkpoints: Any = None,  # a guard.runtime.checkpoints.Checkpointer: restores on assignment, writes on revoke
    ) -> None:
        self._consumer, self._pipeline, self._recovery = consumer, pipeline, recovery
        self._checkpoints = checkpoints
        self._warned_time_lookup = False

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
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
            self._pipeline.revoke(tp)
            self._recovery.revoked(tp)
        log.info("partitions revoked", partitions=names(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # the rules in force now decide how far back to rebuild (a reload may have changed them)
        since_ms = max(0, int((time.time() - self._pipeline.rules.retention) * 1000))
        fresh = [tp for tp in assigned if not self._pipeline.owns(tp)]
        self._recovery.assigned([(tp, f"{tp.topic}[{tp.partition}]") for tp in fresh], since_ms)
        restored = await self._checkpoints.restore(fresh, since_ms) if self._checkpoints and fresh else {}
        for tp in fresh:
            committed = await self._consumer.committed(tp)
            engine = None
            if tp in restored:  # state as of the checkpoint's offset: read on from there
                engine, offset = restored[tp]
                self._consumer.seek(tp, offset)
            elif await seek_to_start(self._consumer, tp, committed, since_ms) and not self._warned_time_lookup:
                log.warning(
                    "the broker cannot look up offsets by time; reading from the beginning and skipping old records"
                )
                self._warned_time_lookup = True
            recovery = self._recovery.positioned(tp, committed)
            self._pipeline.assign(tp, committed, since_ms, engine, recovery, self._recovery.audit_read(tp))
        log.info("partitions assigned", partitions=names(assigned), fresh=names(fresh))
