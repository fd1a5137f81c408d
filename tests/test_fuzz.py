"""Fuzzing the three doors hostile input comes through: record bytes, rule files and settings.

Each may only ever fail with its documented error; anything else would stop the guard (a crash
in the poll loop, a traceback at start-up). Bounded example counts keep this quick in CI.
"""

from __future__ import annotations

import os
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import env_values, hostile_envelopes, record_times, yaml_texts

from guard.contracts.events import Event, IgnoredEvent, MalformedEvent, decode
from guard.errors import ConfigError
from guard.rules import RuleFileError
from guard.rules.loader import parse_rules
from guard.runtime.settings import GuardSettings, KafkaSettings, LeadterraSettings, Settings

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(value: bytes | None, record_time: float) -> None:
    try:
        event = decode(value, record_time)
    except (MalformedEvent, IgnoredEvent):
        return
    assert isinstance(event, Event) and event.campaign_id


class TestDecoder:
    @FUZZ
    @given(st.binary(max_size=300), record_times)
    def test_arbitrary_bytes_are_an_event_or_a_documented_refusal(self, value: bytes, record_time: float) -> None:
        """Random bytes: MalformedEvent or IgnoredEvent, never another exception."""
        decodes_or_refuses(value, record_time)

    @FUZZ
    @given(hostile_envelopes(), record_times)
    def test_hostile_envelopes_are_an_event_or_a_documented_refusal(self, value: bytes, record_time: float) -> None:
        """Envelope-shaped JSON with any field of any type or value (timestamps of year 1 to 9999 included)."""
        decodes_or_refuses(value, record_time)


class TestRuleLoader:
    @FUZZ
    @given(yaml_texts)
    def test_any_text_is_rules_or_a_rule_file_error(self, text: str) -> None:
        """Arbitrary YAML-ish text: a RuleSet or RuleFileError listing problems, never another exception."""
        try:
            parse_rules([("fuzz.yaml", text)])
        except RuleFileError as error:
            assert error.problems and all(problem.startswith("fuzz.yaml") for problem in error.problems)


_VARIABLES = sorted(
    f"{prefix}{name}".upper()
    for group, prefix in ((KafkaSettings, "KAFKA_"), (LeadterraSettings, "LEADTERRA_"), (GuardSettings, "GUARD_"))
    for name in group.model_fields
)
_PLAUSIBLE = st.sampled_from(("", "0", "-1", "1e400", "nan", "true", "x", "SASL_SSL", "PLAIN", "http://", "/", "a,,b"))


class TestSettings:
    @FUZZ
    @given(st.dictionaries(st.sampled_from(_VARIABLES), st.one_of(env_values, _PLAUSIBLE), max_size=6))
    def test_any_environment_is_settings_or_a_config_error(self, variables: dict[str, str]) -> None:
        """Any values of the documented variables: Settings or ConfigError, never a traceback."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "GUARD_", "LEADTERRA_"))}
        with patch.dict(os.environ, {**clean, **variables}, clear=True):
            try:
                Settings.from_env()
            except ConfigError as error:
                assert str(error).startswith("invalid settings")
