"""The one redaction point: secrets are masked in everything that leaves the process.

Log lines (a structlog processor that also sees aiokafka's and httpx's lines), audit events'
`result.error`, the health endpoints' reasons and the CLI's error messages all pass through
`redact`. Secrets are registered the moment settings read them (guard.runtime.settings), before any
validation could quote them: the Leadterra API key and the Kafka SASL password.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4  # a shorter value would mask ordinary words; no real key or password is this short

_secrets: set[str] = set()


def register(*values: str | None) -> None:
    """Mask these from now on (as given and with surrounding whitespace stripped)."""
    for value in values:
        if value:
            _secrets.update(v for v in {value, value.strip()} if len(v) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: a secret may contain another
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_log_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every string in the event (formatted tracebacks included) redacted."""
    if not _secrets:
        return event
    return {key: _redact_value(value) for key, value in event.items()}


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(item) for item in value]
    if isinstance(value, bytes | BaseException):
        return redact(repr(value))
    return value
