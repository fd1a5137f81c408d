"""The one redaction point: secrets are masked in everything that leaves the process.

Log lines (a structlog processor that also sees aiokafka's and httpx's lines), audit events'
`result.error`, the health endpoints' reasons and the CLI's error messages all pass through
`redact`. Secrets are registered the moment settings read them (guard.runtime.settings), before any
validation could quote them: the Leadterra API key and the Kafka SASL password.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import yaml

from guard.errors import ConfigError

MASK = "***"
MIN_SECRET_LENGTH = 4  # a shorter value would mask ordinary words; no real key or password is this short

_secrets: set[str] = set()


class _Unusable(yaml.YAMLError):
    """A mapping the secrets files cannot take, said by line: its text may be a secret (a file written the wrong way
    round holds keys where ids go)."""


_MERGE = "tag:yaml.org,2002:merge"


# libyaml's safe loader where PyYAML was built with it: the same documents, a tenth of the parse time (2,000
# workspaces: ~10 ms instead of ~100 ms), which matters when a rotation re-reads the file.
class _SecretsLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A mapping's keys (ids) as they are written: YAML 1.1 reads an unquoted `0123` as 83, `on` as true, `1:30` as 90.
    A key written twice is refused (a loader keeps the last one without a word), and so is one that is not text.
    Values, and merge keys (`<<`), are read as YAML reads them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if key.tag == _MERGE:
                continue
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise _Unusable(f"the key on line {line} is not text")
            if key.value in seen:
                raise _Unusable(f"the key on line {line} is written twice; keep one")
            seen.add(key.value)
        self.flatten_mapping(node)  # merged entries first, then the node's own: those win, as YAML has it
        return {key.value: self.construct_object(value, deep) for key, value in node.value}


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


def read_secrets_file(path: Path, name: str, shape: str, example: str) -> dict[Any, Any]:
    """The mapping a secrets file holds (YAML or JSON), its values masked before anything could quote them, a
    parse error included; ConfigError naming `name` and never a secret otherwise. `shape` says what it maps
    ("workspace ids to keys"), `example` is one line of it, for the errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{name} cannot be read: {type(error).__name__}") from None
    register(text)
    for line in text.splitlines():
        register(*(part.strip(" \"'") for part in line.split(":", 1)[1:]))
    try:
        data = yaml.load(text, Loader=_SecretsLoader)
    except _Unusable as error:
        raise ConfigError(f"{name}: {error}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{name} is neither YAML nor JSON; write `{example.split()[0]} ...` lines") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{name} must map {shape}, e.g. `{example}`")
    return data
