"""`guard run`: wires settings, Kafka, the pipeline, the pause client and the health server.

The poll loop never waits on Leadterra: pauses run in tasks (guard.actions.dispatch). After each
batch while some partition recovers, and every `commit_interval`, it tells guard.runtime.recovery how far
the replaying partitions have read; every `commit_interval` it also commits what is settled and
looks for changed rule files.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from guard.actions.dispatch import Dispatcher, Publish
from guard.actions.exemptions import Exemptions
from guard.actions.notify import Notifier
from guard.actions.pause import PauseClient
from guard.actions.workspaces import WorkspaceMap
from guard.contracts.audit import AuditEvent
from guard.engine import Decision
from guard.rules import RuleSet
from guard.rules.watch import RulesWatcher
from guard.runtime.checkpoints import Checkpointer, CheckpointStore
from guard.runtime.control import follow
from guard.runtime.dead_letters import DeadLetters
from guard.runtime.input_topics import InputTopics
from guard.runtime.internal_topics import (
    audit_topic,
    control_topic,
    create_if_missing,
    dead_letter_topic,
    ensure,
    scope_topic,
    state_topic,
)
from guard.runtime.kafka import PROBE_SECONDS, InputConsumer, consumer_lag, make_consumer, make_producer, start_producer
from guard.runtime.pipeline import Pipeline
from guard.runtime.placement import Placement
from guard.runtime.rebalance import Rebalance
from guard.runtime.recovery import Recovery
from guard.runtime.scope_forwards import ScopeForwards
from guard.runtime.server import HealthServer
from guard.runtime.settings import Settings
from guard.runtime.settled import SettledDecisions
from guard.runtime.stamps import StaleStamps
from guard.runtime.startup import log_configuration, reach_kafka, serve_probes
from guard.runtime.topics import topic_partitions
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.service")

MAX_RECORDS_PER_POLL = 500  # small batches: pause tasks, probes and heartbeats run between them
POLL_TIMEOUT_MS = 200
AUDIT_RETRY_SECONDS = 1.0
NOTIFY_GRACE_SECONDS = 2.0  # messages still under way at shutdown get this long, after the pauses settled
RELEASE_SECONDS = 1.0  # how often partitions holding a backlog's decisions are checked for a quiet log end


class Service:
    """One guard process. `run()` returns after `stop()` (or SIGTERM) once it has drained."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings, self.rules = settings, rules
        self.kinds = settings.guard.engine_kinds()  # the engine's series: compiled or Python (GUARD_ENGINE)
        self._slack_url = settings.guard.slack_url()  # a ConfigError here stops start-up with one line
        self.metrics = Metrics()
        self.health = Health()
        self._stop = asyncio.Event()
        self.server = HealthServer(self.health, self.metrics, settings.guard.http_host, settings.guard.http_port)
        self.pipeline: Pipeline | None = None
        self._dispatcher: Dispatcher | None = None
        self._settled = SettledDecisions(settings.kafka, settings.guard.audit_topic)
        self.exemptions = Exemptions(self.metrics)
        self._background: set[asyncio.Task[None]] = set()
        self._probe: asyncio.Task[None] | None = None
        self._checkpointer: Checkpointer | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._inputs: InputTopics | None = None
        self._forwards: ScopeForwards | None = None  # events forwarded for rules over a scope
        self._unsettled_at_stop = False  # decisions cancelled at shutdown: no checkpoint may cover them

    @property
    def assigned(self) -> int:
        """How many partitions this guard owns now."""
        return len(self.pipeline.assigned) if self.pipeline is not None else 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        settings = self.settings.guard
        await serve_probes(self.server, settings)
        producer = make_producer(self.settings.kafka)
        consumer = make_consumer(self.settings.kafka, settings.group_id)
        pause_client = self._pause_client(self.settings.leadterra.key())
        workspace_clients = {
            workspace: client
            for workspace, key in self.settings.leadterra.workspace_keys().items()
            if (client := self._pause_client(key, workspace)) is not None
        }
        if not settings.dry_run:
            for workspace, why in self.settings.unkeyed_workspaces().items():
                if pause_client is not None:
                    log.warning(
                        "a workspace without its own key is paused with LEADTERRA_API_KEY", workspace=workspace, why=why
                    )
                else:  # told at once, not at its first pause: a typo in the mapping or the file
                    log.error(
                        "no API key for a workspace: its campaigns cannot be paused", workspace=workspace, why=why
                    )
                    self.health.no_key(workspace, why)
        workspaces = WorkspaceMap(settings.max_campaigns)
        publish = _publisher(producer, settings.audit_topic, self.health)
        notifier = Notifier(
            publish,
            self.metrics,
            global_slack_url=self._slack_url,
            global_link=settings.notify_link,
            deadline=settings.notify_deadline,
            backlog_after=settings.resume_grace,  # what the catch-up holds pauses for (catchup.py)
        )
        self._dispatcher = dispatcher = Dispatcher(
            pause_client,
            publish,
            self.metrics,
            self.health,
            self._settled,
            dry_run=settings.dry_run,
            exemptions=self.exemptions,
            notifier=notifier,
            workspace_clients=workspace_clients,
            workspaces=workspaces,
            left_running=lambda decision: self.pipeline.left_running(decision),  # a scope's firing decides again
        )
        self._forwards = forwards = ScopeForwards(producer, settings.scope_topic, self.metrics)
        self.pipeline = pipeline = Pipeline(
            self.rules,
            dispatcher,
            DeadLetters(producer, settings.dlq_topic, self.metrics),
            self.metrics,
            dedupe_horizon=settings.dedupe_horizon,
            max_campaigns=settings.max_campaigns,
            max_dedupe_keys=settings.max_dedupe_keys,
            partition_count=lambda: sum(len(consumer.partitions_for_topic(t) or ()) for t in settings.input_topics),
            resume_grace=settings.resume_grace,
            catch_up_limit=settings.catch_up_limit,
            workspaces=workspaces,
            topic_workspaces=settings.topic_workspaces,
            kinds=self.kinds,
            scope_topic=settings.scope_topic,
            forwards=forwards,
            placement=Placement(
                lambda topic: len(consumer.partitions_for_topic(topic) or ()), self.metrics, self.health
            ).check,
            stamped_behind=StaleStamps(self.health, settings.resume_grace, settings.catch_up_limit).report,
        )
        recovery = Recovery(
            self.health,
            self._settled.scan,
            functools.partial(self._settled.unsettled, dry_run=dispatcher.dry_run),
            self._resume,
            in_flight=functools.partial(self._in_flight, pipeline),
            judge=functools.partial(self._judge_replayed, pipeline),
        )
        listener: Rebalance | None = None
        self.metrics.rules_loaded.set(len(self.rules.rules))
        self.metrics.campaigns_limit.set(settings.max_campaigns)
        self.metrics.dedupe_keys_limit.set(settings.max_dedupe_keys)
        log_configuration(self.settings, self.rules, self.server.port, self.kinds)
        try:
            if not await reach_kafka(self.settings.kafka, settings.kafka_connect_timeout, self.health, self._stop):
                return
            await start_producer(producer, self.settings.kafka)
            self._spawn(self._ensure_outputs())
            self._spawn(self._follow_control())
            await consumer.start()
            self._checkpointer = await self._checkpoints(producer, pipeline, dispatcher, recovery)
            listener = Rebalance(consumer, pipeline, recovery, self._checkpointer)
            if self.rules.scope_kinds:  # before the group is joined: the first assignment reads it
                await self._ensure_scope_topic()
            # the scope topic is read whenever it exists: rules over scopes added by a reload find it there
            consumer.subscribe_exactly((*settings.input_topics, settings.scope_topic), listener)
            self._inputs = InputTopics(consumer, settings.input_topics, self.health, self.metrics)
            await self._inputs.check()
            self._spawn(self._inputs.watch())
            log.info("guard started", topics=list(settings.input_topics), http_port=self.server.port)
            await self._poll(consumer, pipeline, recovery)
            self.health.stopping = True
            await listener.close()
            if held := pipeline.held():
                log.info("held decisions of a backlog not recorded; a restart derives them again", count=held)
            cancelled = await dispatcher.drain(settings.shutdown_grace)
            if cancelled:
                log.warning("decisions not settled at shutdown; a restart resumes them", count=cancelled)
                self._unsettled_at_stop = True
            await self._commit(consumer, pipeline)
            if self._checkpointing is not None:
                await asyncio.gather(self._checkpointing, return_exceptions=True)
            if self._checkpointer is not None:
                await self._checkpointer.write(pipeline.assigned)
        finally:
            self.health.stopping = True
            pending = [*self._background, *(task for task in (self._probe, self._checkpointing) if task)]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if listener is not None:
                await listener.close()
            await recovery.aclose()
            await notifier.aclose(NOTIFY_GRACE_SECONDS)
            await consumer.stop()
            await producer.stop()
            for client in [pause_client, *workspace_clients.values()]:
                if client is not None:
                    await client.aclose()
            await self.server.stop()
            log.info("guard stopped")

    async def _checkpoints(
        self, producer: AIOKafkaProducer, pipeline: Pipeline, dispatcher: Dispatcher, recovery: Recovery
    ) -> Checkpointer | None:
        """Checkpoints, when they are on and their topic exists (made here when missing)."""
        settings = self.settings.guard
        if not settings.checkpoint_interval:
            return None
        topic = state_topic(settings.state_topic)
        if not await ensure(
            self.settings.kafka, topic, settings.internal_replication_factor, self.health, self.metrics
        ):
            return None
        store = CheckpointStore(self.settings.kafka, producer, settings.state_topic, settings.group_id)

        def idle() -> bool:  # every decision so far settled (see Checkpointer)
            return dispatcher.inflight == 0 and not recovery.resuming and not self._unsettled_at_stop

        return Checkpointer(store, pipeline, self.metrics, idle)

    def _checkpoint_due(self, pipeline: Pipeline) -> None:
        if self._checkpointer is not None and (self._checkpointing is None or self._checkpointing.done()):
            self._checkpointing = asyncio.create_task(self._checkpointer.write(pipeline.assigned))

    def _pause_client(self, key: SecretStr | None, workspace: str | None = None) -> PauseClient | None:
        leadterra = self.settings.leadterra
        if self.settings.guard.dry_run or key is None:
            return None
        return PauseClient(
            leadterra.api_url,
            key,
            timeout=leadterra.request_timeout,
            deadline=leadterra.retry_deadline,
            backoff_initial=leadterra.backoff_initial,
            backoff_max=leadterra.backoff_max,
            key_source=leadterra.key_source(workspace),
            workspace=workspace,
        )

    async def _poll(self, consumer: AIOKafkaConsumer, pipeline: Pipeline, recovery: Recovery) -> None:
        settings = self.settings.guard
        watcher = RulesWatcher(settings.rules, self.rules) if settings.rules_reload_interval else None
        next_tick = next_reload = next_probe = next_release = time.monotonic()
        next_checkpoint = next_tick + settings.checkpoint_interval
        self.health.polling = True
        while not self._stop.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS_PER_POLL)
            self.health.polled()
            for tp, records in batches.items():
                await pipeline.handle(tp, records, _log_end(consumer, tp))
            await asyncio.sleep(0)  # aiokafka returns buffered records without yielding; let others run
            if recovery.recovering:  # ready as soon as the replay is done, not at the next tick
                await self._track_recovery(consumer, recovery)
            now = time.monotonic()
            if now >= next_probe and self._probe is None:
                self._probe = asyncio.create_task(self._probe_kafka(consumer))
                next_probe = now + PROBE_SECONDS
            if now >= next_release:  # every second whatever the commit interval: a quiet log end is seconds
                await self._release_caught_up(consumer, pipeline)
                next_release = now + RELEASE_SECONDS
            if now >= next_tick:
                await self._commit(consumer, pipeline)
                await self._track_recovery(consumer, recovery)
                self.metrics.campaigns.set(pipeline.campaigns())
                self.metrics.dedupe_keys.set(pipeline.dedupe_keys())
                self.health.evictions(pipeline.evicted, settings.max_campaigns)
                self.metrics.partitions.set(len(pipeline.assigned))
                self.metrics.consumer_lag.set(await consumer_lag(consumer, pipeline.assigned))
                next_tick = now + settings.commit_interval
            if settings.checkpoint_interval and now >= next_checkpoint:
                self._checkpoint_due(pipeline)
                next_checkpoint = now + settings.checkpoint_interval
            if watcher is not None and now >= next_reload:
                self._reload(watcher, pipeline)
                next_reload = now + settings.rules_reload_interval

    async def _probe_kafka(self, consumer: InputConsumer) -> None:
        """Readiness follows the brokers: a metadata request that fails or hangs means unreachable
        (the consumer itself just retries quietly and returns empty batches)."""
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                known = await consumer.partition_counts()
            if self._inputs is not None:
                await self._inputs.check(known)
            if self.health.kafka_error is not None:
                log.info("Kafka reachable again")
            self.health.kafka_error = None
        except (KafkaError, OSError, TimeoutError) as error:
            if self.health.kafka_error is None:
                log.warning("Kafka unreachable", error=repr(error))
            self.health.kafka_error = repr(error) or "no answer"
        finally:
            self._probe = None

    async def _commit(self, consumer: AIOKafkaConsumer, pipeline: Pipeline) -> None:
        offsets = pipeline.committable()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:  # uncommitted offsets are replayed later: late, never lost
            self.metrics.commits.labels("failed").inc()
            log.warning("commit failed", error=str(error))
            return
        pipeline.committed(offsets)
        self.metrics.commits.labels("ok").inc()

    async def _release_caught_up(self, consumer: AIOKafkaConsumer, pipeline: Pipeline) -> None:
        """Partitions holding decisions that caught up with no batch to say so (guard.runtime.catchup)."""
        for tp in pipeline.holding():
            try:
                position = await consumer.position(tp)
            except KafkaError:  # revoked meanwhile
                continue
            pipeline.caught_up(tp, position, _log_end(consumer, tp))

    async def _track_recovery(self, consumer: AIOKafkaConsumer, recovery: Recovery) -> None:
        """How far each replaying partition has read, for guard.runtime.recovery to move on those caught up."""
        positions = {}
        for tp in recovery.replaying():
            try:
                positions[tp] = await consumer.position(tp)
            except KafkaError:  # revoked meanwhile (the rebalance listener runs alongside this loop)
                continue
        self.metrics.recovering.set(recovery.progress(positions))

    def _in_flight(self, pipeline: Pipeline, tp: TopicPartition) -> list[Decision]:
        """Pause decisions other processes recorded for campaigns of `tp` and never saw through: to resume. Each lands
        in `tp`'s reading at the call, as a pause acted on at catch-up does."""
        assert self._dispatcher is not None
        carried = functools.partial(pipeline.carries, tp)
        decisions = self._settled.in_flight(carried, self.rules, dry_run=self._dispatcher.dry_run)
        for decision in decisions:
            pipeline.resumed(tp, decision)
        return decisions

    def _judge_replayed(self, pipeline: Pipeline, tp: TopicPartition, decisions: list[Decision]) -> None:
        """Pause decisions a replay under other rules derived for `tp` and the audit holds no record of: held, and
        judged at catch-up as a backlog's are (a campaign bad now is paused once, one healthy since is not). Not those
        of a breach the previous rules paused already: acted on again, a campaign its user resumed since would be
        paused again."""
        settled = self._settled
        unrecorded = [
            d
            for d in decisions
            if d.id not in settled and settled.recorded(d.id) is None and not settled.paused_in_episode(d)
        ]
        pipeline.hold_replayed(tp, unrecorded)

    def _resume(self, decision: Decision, tp: TopicPartition) -> None:
        """A decision of `tp` recorded (`fired`) before a restart but never given an outcome: act on it."""
        if self._dispatcher is not None:
            self.metrics.resumed.inc()
            self._dispatcher.resume(decision, partition=tp)

    async def _ensure_outputs(self) -> None:
        """The audit and dead-letter topics made if missing, with as many partitions as the largest input topic.
        A refusal is one error line: where the topic then stays missing, failing audit writes make /readyz 503."""
        settings = self.settings.guard
        counts = [len(await topic_partitions(self.settings.kafka, topic)) for topic in settings.input_topics]
        partitions = max(counts, default=1) or 1
        for topic in (audit_topic(settings.audit_topic, partitions), dead_letter_topic(settings.dlq_topic, partitions)):
            refused = await create_if_missing(self.settings.kafka, topic, settings.internal_replication_factor)
            if refused is not None:
                log.error(
                    f"the {topic.role} does not exist and cannot be created",
                    topic=topic.name,
                    setting=topic.setting,
                    create=topic.what_to_create(settings.internal_replication_factor),
                    without=topic.without,
                    error=refused,
                )

    async def _ensure_scope_topic(self) -> None:
        """The scope topic made if missing, with as many partitions as the largest input topic."""
        settings = self.settings.guard
        counts = [len(await topic_partitions(self.settings.kafka, topic)) for topic in settings.input_topics]
        topic = scope_topic(settings.scope_topic, max(counts, default=1) or 1, self.rules.retention)
        made = await ensure(self.settings.kafka, topic, settings.internal_replication_factor, self.health, self.metrics)
        if made and self._forwards is not None:
            await self._forwards.learn(PROBE_SECONDS)  # known to the producer before the first event is forwarded

    async def _follow_control(self) -> None:
        """Exemptions: the control topic made if missing, read whole before any pause, then followed."""
        settings = self.settings.guard
        # `follow` retries, and says when it cannot read
        await ensure(
            self.settings.kafka,
            control_topic(settings.control_topic),
            settings.internal_replication_factor,
            self.health,
            self.metrics,
        )
        await follow(self.settings.kafka, settings.control_topic, self.exemptions, self.metrics)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _reload(self, watcher: RulesWatcher, pipeline: Pipeline) -> None:
        change = watcher.poll()
        if change is None:
            return
        if change.rules is None:
            self.metrics.rule_reloads.labels("rejected").inc()
            log.error("new rules rejected; the previous rules stay in force", problems=change.problems)
            return
        if change.rules.scope_kinds and not self.rules.scope_kinds:
            self._spawn(self._ensure_scope_topic())  # read once it exists (the subscription names it)
        self.rules = change.rules
        pipeline.set_rules(change.rules)
        self.metrics.rule_reloads.labels("applied").inc()
        self.metrics.rules_loaded.set(len(change.rules.rules))
        log.info("rules reloaded", rules=[rule.name for rule in change.rules.rules])


def _log_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The partition's end as the consumer last saw it (its high watermark); None when not known (yet)."""
    return consumer.highwater(tp) if tp in consumer.assignment() else None


def _publisher(producer: AIOKafkaProducer, topic: str, health: Health) -> Publish:
    async def publish(event: AuditEvent) -> None:
        """Retries until the audit record is written; shutdown cancels, leaving the offset uncommitted.
        While writes fail, /readyz says so."""
        value, key = event.model_dump_json().encode(), event.campaign_id.encode()
        while True:
            try:
                await producer.send_and_wait(topic, value=value, key=key)
                health.audit_written()
                return
            except KafkaError as error:
                log.warning("audit write failed; retrying", error=str(error), audit_id=event.id)
                health.audit_write_failed(f"the audit topic {topic} (GUARD_AUDIT_TOPIC) cannot be written: {error!r}")
                await asyncio.sleep(AUDIT_RETRY_SECONDS)

    return publish
