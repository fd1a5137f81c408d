"""Helpers every command shares: one error line through the redaction point, times from the command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC

from guard.errors import ConfigError, GuardError
from guard.redact import redact


def print_error(message: str) -> None:
    """A CLI error message, through the redaction point like every other output."""
    print(redact(f"guard: {message}"), file=sys.stderr)


def parse_time(text: str) -> float:
    from guard.contracts.events import epoch_from_iso

    epoch = epoch_from_iso(text)
    if epoch is None:
        raise SystemExit(f"guard: {text!r} is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
    return epoch


def parse_since(text: str) -> float:
    """An ISO 8601 time, or a duration back from now (`24h`, `7d`)."""
    import time

    from guard.rules.durations import parse_duration

    if text[:1].isdigit() and not any(c in text for c in "-:T"):
        try:
            return time.time() - parse_duration(text)
        except ValueError:
            pass
    return parse_time(text)


def iso_time(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def exit_code(work: Callable[[], int], unreachable: str) -> int:
    """`work`'s exit code; a wrong setting is 2, Kafka or a file out of reach is 1, each said in one line
    (`unreachable` says what could not be done, e.g. "cannot read the audit topic")."""
    from aiokafka.errors import KafkaError

    from guard.runtime.kafka import PROBE_SECONDS, KafkaUnreachable

    try:
        return work()
    except ConfigError as error:
        print_error(str(error))
        return 2
    except KafkaUnreachable as error:  # the probe a command makes before it reads or writes Kafka
        print_error(
            f"{unreachable}: Kafka refused or did not answer within {PROBE_SECONDS:g} s ({error}); "
            "check KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*"
        )
        return 1
    except GuardError as error:  # e.g. the topic does not exist
        print_error(str(error))
        return 1
    except (KafkaError, OSError) as error:
        print_error(f"{unreachable}: {error or type(error).__name__}")
        return 1
