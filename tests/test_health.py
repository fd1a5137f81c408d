"""What /readyz says about the topics the guard reads and keeps, without a broker."""

from __future__ import annotations

from guard.telemetry.health import Health


class TestReadiness:
    """Readiness and the input and internal topics (DESIGN promise 11)."""

    def ready(self, **state: object) -> tuple[bool, str]:
        health = Health()
        health.polling = health.joined = True
        for name, value in state.items():
            setattr(health, name, value)
        return health.ready()

    def test_every_missing_topic_is_unready_by_name_even_beside_existing_ones(self) -> None:
        ok, reason = self.ready(missing_topics=("evnets",))
        assert not ok and "evnets" in reason and "GUARD_INPUT_TOPICS" in reason

    def test_a_topic_whose_partitions_are_not_seen_yet_is_unready(self) -> None:
        ok, reason = self.ready(unread_topics=("late",))
        assert not ok and "late" in reason

    def test_a_refused_internal_topic_is_a_warning_not_unready(self) -> None:
        health = Health()
        health.polling = health.joined = True
        health.internal_topics["guard.state"] = "create guard.state ..."
        assert health.ready() == (True, "ok")
        assert health.warnings() == ["create guard.state ..."]

    def test_failing_audit_writes_are_unready_while_they_go_on(self, monkeypatch) -> None:
        """Decisions are acted on but cannot be recorded: not ready, naming the topic, while writes keep
        failing; ready again once one is written, or once the failures stop (nothing left to write)."""
        health = Health()
        health.polling = health.joined = True
        health.audit_write_failed("the audit topic guard.audit (GUARD_AUDIT_TOPIC) cannot be written: X")
        ok, reason = health.ready()
        assert not ok and "guard.audit" in reason and "pauses go ahead" in reason
        health.audit_written()
        assert health.ready() == (True, "ok")
        health.audit_write_failed("again")
        monkeypatch.setattr(Health, "AUDIT_FAILING_SECONDS", 0.0)
        assert health.ready() == (True, "ok")
