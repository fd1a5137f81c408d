"""Prometheus metrics: one `guard_` prefix, base units, and no campaign ids as labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # `_created` series double the output and no dashboard reads them


class Metrics:
    """The service's metrics on their own registry (so several guards can run in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "guard_records_total",
            "Input records by what became of them: counted (evaluated live), replayed (rebuilt state only), "
            "too_old, ignored (unknown event), dead_lettered, redelivered (an offset handled already, skipped), "
            "invalid (a scope topic record that is no forwarded event, skipped); "
            "duplicate, late (not counted by some rule: from before the campaign's episode or about its mail, older "
            "than a window, or "
            "a send delivered again long after it happened, with its outcomes) and ahead (stamped over a day past "
            "the partition's clock, counted at the clock) are "
            "subsets of counted and replayed.",
            ["outcome"],
            registry=r,
        )
        self.scope_forwards = Counter(
            "guard_scope_forwards_total",
            "Events forwarded to the scope topic for rules over a workspace, sender or domain, by result: written, "
            "failed (not written after the producer's retries: that scope misses the event; logged with its offset).",
            ["result"],
            registry=r,
        )
        self.dead_letters = Counter(
            "guard_dead_letters_total",
            "Dead-letter writes by result: written (as it came), truncated (too big to copy whole: cut, naming "
            "its source offset), failed (not written; the record was skipped and logged with its offset).",
            ["result"],
            registry=r,
        )
        self.decisions = Counter(
            "guard_decisions_total", "Rules that fired, by rule and action.", ["rule", "action"], registry=r
        )
        self.actions = Counter(
            "guard_actions_total",
            "Pause outcomes: paused, already_paused, not_running, dry_run, failed, exempted, superseded (a decision "
            "of a backlog whose episode ended before the guard caught up: not acted on).",
            ["outcome"],
            registry=r,
        )
        self.api_attempts = Counter("guard_api_attempts_total", "HTTP attempts made to the pause API.", registry=r)
        self.action_seconds = Histogram(
            "guard_action_duration_seconds",
            "From decision to the API's final answer, retries included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.decision_lag = Histogram(
            "guard_decision_lag_seconds",
            "Wall clock at decision minus the event time of the crossing event.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
            registry=r,
        )
        self.decision_errors = Counter(
            "guard_decision_errors_total",
            "Crashes of a decision before it was settled (logged with its id), each retried: above zero is a bug.",
            registry=r,
        )
        self.side_surface_errors = Counter(
            "guard_side_surface_errors_total",
            "A side surface (exemptions, notifications, audit_read, left_running) that failed or did not answer "
            "while a decision consulted it; the decision went on without it and its audit event says so.",
            ["surface"],
            registry=r,
        )
        self.inflight = Gauge(
            "guard_inflight_actions",
            "Decisions whose action is not settled yet: being acted on, or held until a backlog is caught up.",
            registry=r,
        )
        self._acting, self._held = 0, 0
        self.held = Gauge(
            "guard_held_decisions",
            "Pause decisions of a backlog held until their partition catches up: then acted on if still current, "
            "else audited as superseded.",
            registry=r,
        )
        self.topics_missing = Gauge(
            "guard_input_topics_missing",
            "Configured input topics (GUARD_INPUT_TOPICS) the brokers do not know: nothing on them is protected.",
            registry=r,
        )
        self.topics_unread = Gauge(
            "guard_input_topics_unread",
            "Input topics the brokers know with partitions this replica's consumer has not seen yet (created or "
            "grown since it last looked): not protected until the group assigns them, seconds later.",
            registry=r,
        )
        self.internal_topics_missing = Gauge(
            "guard_internal_topics_missing",
            "The guard's own topics (GUARD_STATE_TOPIC, GUARD_CONTROL_TOPIC) missing because the brokers refused "
            "to create them; /readyz says what to create.",
            registry=r,
        )
        self.partitions = Gauge("guard_assigned_partitions", "Input partitions this replica owns.", registry=r)
        self.consumer_lag = Gauge(
            "guard_consumer_lag_records",
            "Records of this replica's input partitions not read yet: each partition's log end as last fetched "
            "minus the read position, summed (at each commit interval).",
            registry=r,
        )
        self.campaigns = Gauge("guard_campaigns_tracked", "Campaigns with state in memory.", registry=r)
        self.campaigns_limit = Gauge(
            "guard_campaigns_limit", "Most campaigns this process keeps state for (GUARD_MAX_CAMPAIGNS).", registry=r
        )
        self.evicted = Counter(
            "guard_campaigns_evicted_total",
            "Campaigns whose state was dropped to stay within GUARD_MAX_CAMPAIGNS (their evidence starts again).",
            registry=r,
        )
        self.misplaced = Counter(
            "guard_misplaced_campaigns_total",
            "Campaigns whose first event a partition read is on another partition than Kafka's default partitioner "
            "(murmur2 of the campaign id) gives it: a producer keys or partitions them otherwise, and a campaign's "
            "evidence can be split (guard.runtime.placement).",
            ["topic"],
            registry=r,
        )
        self.dedupe_keys = Gauge(
            "guard_dedupe_keys", "(campaign, event, messageId) keys remembered to count retries once.", registry=r
        )
        self.dedupe_keys_limit = Gauge(
            "guard_dedupe_keys_limit", "Most dedupe keys this process remembers (GUARD_MAX_DEDUPE_KEYS).", registry=r
        )
        self.dedupe_evicted = Counter(
            "guard_dedupe_keys_evicted_total",
            "Dedupe keys forgotten before GUARD_DEDUPE_HORIZON to stay within GUARD_MAX_DEDUPE_KEYS, oldest first "
            "(a retry of one counts again).",
            registry=r,
        )
        self.unsealed = Counter(
            "guard_pauses_unsealed_total",
            "Pauses whose mail before them could not be set apart in the dedupe keys (a decision a minute for two "
            "hours on one partition): late outcomes of that mail count in a resumed episode, as before.",
            registry=r,
        )
        self.auth_failed = Gauge(
            "guard_api_authentication_failed",
            "1 after Leadterra rejected the API key: nothing is protected.",
            registry=r,
        )
        self.workspace_auth_failed = Gauge(
            "guard_workspace_authentication_failed",
            "1 for a workspace (of LEADTERRA_API_KEYS_FILE) whose key Leadterra rejected: its campaigns are not "
            "protected, the others are.",
            ["workspace"],
            registry=r,
        )
        self.rule_reloads = Counter(
            "guard_rule_reloads_total",
            "Rule file changes seen, by result: applied or rejected.",
            ["result"],
            registry=r,
        )
        self.rules_loaded = Gauge("guard_rules_loaded", "Rules in force.", registry=r)
        self.recovering = Gauge(
            "guard_recovery_records_remaining",
            "Records still to replay before every partition is caught up.",
            registry=r,
        )
        self.resumed = Counter(
            "guard_resumed_decisions_total",
            "Decisions recorded before a restart without an outcome, acted on after it.",
            registry=r,
        )
        self.notifications = Counter(
            "guard_notifications_total",
            "Notifications by channel kind (slack, webhook; notifier: a failure before a channel was chosen) and "
            "result: sent, or failed (after retries; audited).",
            ["channel", "result"],
            registry=r,
        )
        self.control_records = Counter(
            "guard_control_records_total",
            "Records read from the control topic (GUARD_CONTROL_TOPIC) by result: applied (an exemption held), "
            "revoked (a tombstone), ignored (another kind of record), invalid (not a valid exemption for its key: "
            "skipped and logged, what the key held is dropped), over_limit (a valid exemption not held: too many "
            "in force). Every replica reads the whole topic at start-up and counts it again, and again whenever it "
            "reads it afresh.",
            ["result"],
            registry=r,
        )
        self.control_topic_replaced = Counter(
            "guard_control_topic_replaced_total",
            "Times the control topic was found deleted, recreated or truncated under its reader: the exemptions "
            "read from it were dropped and the topic read again from its beginning.",
            registry=r,
        )
        self.commits = Counter("guard_commits_total", "Offset commits, by result.", ["result"], registry=r)
        self.checkpoints = Counter(
            "guard_checkpoints_total",
            "State checkpoints by result: written, failed (not written), restored (used on assignment), torn (a write "
            "cut by a crash, its chunks without a manifest: the previous checkpoint is used, else the look-back "
            "replayed), corrupt (damaged: ignored), invalid (out of bounds: an offset outside the partition, times "
            "ahead of the partition's clock, sizes the rules and settings do not give), mismatch (other settings "
            "or format; one of other rules is restored under its own, then reloaded), stale (older than the "
            "look-back), unreadable (the state topic could not be read); after corrupt or invalid the whole "
            "checkpoint before it is used if it was read, else these replay the look-back.",
            ["result"],
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "guard_checkpoint_bytes",
            "Bytes the last checkpoint written took in the state topic (one partition, compressed).",
            registry=r,
        )
        self.checkpoint_records_read = Gauge(
            "guard_checkpoint_records_read",
            "Records of the state topic the last restore read: its tail, back to each partition's newest checkpoint.",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "guard_checkpoint_seconds", "Time to take (encode) and write one partition's checkpoint.", registry=r
        )

    def unsettled(self, *, acting: int | None = None, held: int | None = None) -> None:
        """Decisions being acted on (the dispatcher's) and held (the pipeline's): `guard_inflight_actions` is both."""
        self._acting = self._acting if acting is None else acting
        if held is not None:
            self._held = held
            self.held.set(held)
        self.inflight.set(self._acting + self._held)
