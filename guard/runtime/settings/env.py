"""Reading settings from the environment: every problem at once, and never a value in a message."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from guard.errors import ConfigError


def read_groups(groups: dict[str, type[BaseSettings]]) -> dict[str, Any]:
    """Each group from the environment, or ConfigError listing every problem."""
    read, problems = read_each(groups)
    if problems:
        raise invalid(problems)
    return read


def read_each(groups: dict[str, type[BaseSettings]]) -> tuple[dict[str, Any], list[str]]:
    """The groups that read well, and a `VARIABLE: message` line for each problem of the others.
    The messages are pydantic's without the input values, which may be secrets."""
    problems, read = [], {}
    for name, group in groups.items():
        prefix = group.model_config.get("env_prefix", "")
        aliases = {field.validation_alias.upper() for field in group.model_fields.values() if field.validation_alias}
        try:
            read[name] = group()
        except ValidationError as error:
            for detail in error.errors():
                message = detail["msg"].removeprefix("Value error, ")
                loc = "_".join(str(part) for part in detail["loc"]).upper()
                variable = loc if loc in aliases else prefix + loc  # an aliased field is named in full
                problems.append(f"{variable}: {message}" if loc else message)
    return read, problems


def invalid(problems: list[str]) -> ConfigError:
    return ConfigError("invalid settings:\n  " + "\n  ".join(problems))


def secret_list(name: str, text: str) -> tuple[str, ...]:
    """Comma- or newline-separated secrets, whitespace stripped; an empty one is refused (it would
    make every signature computable by anyone)."""
    items = tuple(item.strip() for item in text.strip().replace("\n", ",").split(","))
    if not items or any(not item for item in items):
        raise ConfigError(f"{name} holds an empty secret (comma-separated, none may be blank)")
    return items
