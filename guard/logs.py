"""structlog configuration: JSON lines on stderr, stdlib logs (aiokafka, httpx) in the same stream,
every line through the redaction point (guard.redact)."""

from __future__ import annotations

import logging
import sys

import structlog

from guard.redact import redact, redact_log_event

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _redact_rendered(_: object, __: str, line: str) -> str:
    return redact(line)


def configure_logging(level: str = "INFO") -> None:
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_log_event,  # after tracebacks are text, so they are redacted too
                structlog.processors.JSONRenderer(),
                _redact_rendered,  # what the renderer made of values that were not strings
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; one line per pause is ours to write
    logging.getLogger("httpx").setLevel(logging.WARNING)
