"""Helpers every command shares: one error line through the redaction point, times from the command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

from guard.errors import ConfigError, GuardError
from guard.redact import redact


def print_error(message: str) -> None:
    """A CLI error message, through the redaction point like every other output."""
    print(redact(f"guard: {message}"), file=sys.stderr)


def parse_time(text: str, now: float | None = None) -> float:
    """A time from the command line (`--since`, `--until` of every command): an ISO 8601 time, or a
    duration back from now as the rules write durations (`90m`, `24h`, `7d`). ConfigError otherwise."""
    import time

    from guard.contracts.events import epoch_from_iso
    from guard.rules.durations import parse_duration

    text = text.strip()
    if text[:1].isdigit() and not any(c in text for c in "-:T"):
        try:
            return (time.time() if now is None else now) - parse_duration(text)
        except ValueError:
            pass
    epoch = epoch_from_iso(text)
    if epoch is None:
        raise ConfigError(
            f"{text[:40]!r} is neither an ISO 8601 time (2026-01-01T00:00:00Z) nor a duration back from now (2h, 7d)"
        )
    return epoch


def rules_problem(path: Path, error: Exception, setting: str) -> str:
    """The line for rules that could not be loaded; a path that does not exist names the setting or
    option that chose it (a default relative to the working directory is the usual slip)."""
    if not path.exists():
        return (
            f"no rule file or folder at {path} (from {Path.cwd()}): point {setting} at your rule file or a "
            "folder of them, e.g. the checkout's rules/"
        )
    return f"invalid rules:\n{error}"


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
