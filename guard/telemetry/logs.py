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


class RepeatedLines(logging.Filter):
    """Kafka and HTTP clients repeat themselves during an outage (hundreds of lines a minute, one
    per reconnect attempt), drowning the guard's own lines. Of each kind of line (logger, level
    and message template) from a logger not the guard's own, the first passes, then at most one
    per `interval` seconds, carrying how many were held back meanwhile."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._kinds: dict[tuple[str, int, object], tuple[float, int]] = {}  # kind -> (last passed, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("guard"):
            return True  # the guard's own state changes always pass
        kind = (record.name, record.levelno, record.msg)
        passed, held = self._kinds.get(kind, (float("-inf"), 0))
        if record.created - passed < self.interval:
            self._kinds[kind] = (passed, held + 1)
            return False
        self._kinds[kind] = (record.created, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {record.created - passed:.0f} s]"
        return True


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
    handler.addFilter(RepeatedLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; one line per pause is ours to write
    logging.getLogger("httpx").setLevel(logging.WARNING)


def configure_tool_logging() -> None:
    """What the CLI's tools (exempt, decisions, replay...) log goes to stderr as readable lines, redacted: their
    stdout stays what a script reads (`ID=$(guard exempt ...)`). `guard run` and `guard ingest` configure JSON
    lines over this. The stream is looked up at each line, so a redirected stderr is followed."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=True),
            redact_log_event,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
