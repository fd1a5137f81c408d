"""pydantic's validation errors -> messages for the people who write rule and rule-test files.

Each message says what is wrong, what is expected with an example, and for a misspelt key or
value the nearest valid one ("did you mean") and every allowed one. pydantic's own wording
("Extra inputs are not permitted") never reaches the user.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

# One example per field name, shown with problems of that field. A field missing here is
# described by its model description instead.
EXAMPLES = {
    "groups": "groups: [{name: bounces, rules: [...]}]",
    "rules": "rules: [{name: hard-bounce-rate, description: ..., rate: ..., last: 150, threshold: 4%, min_volume: 50}]",
    "name": "name: hard-bounce-rate",
    "description": "description: Hard bounces mean a stale or scraped list.",
    "rate": "rate: {of: {signal: bounced, where: {bounce_type: hard}}, per: sent}",
    "count": "count: complained",
    "cusum": "cusum: {of: {signal: bounced, where: {bounce_type: hard}}, per: sent, healthy: 2%, bad: 8%, "
    "false_alarms: 5%, campaign_size: 50000}",
    "healthy": "healthy: 2% (the rate of a good campaign)",
    "bad": "bad: 8% (the rate worth pausing on, above healthy)",
    "false_alarms": "false_alarms: 5% (of campaigns at the healthy rate paused by chance)",
    "campaign_size": "campaign_size: 50000 (sends of a large campaign)",
    "delay": "delay: {median: 2h, max: 2d}",
    "of": "of: {signal: bounced, where: {bounce_type: hard}}",
    "per": "per: sent",
    "signal": "signal: bounced",
    "where": "where: {bounce_type: hard}",
    "bounce_type": "bounce_type: hard",
    "recipient_domain": "recipient_domain: [gmail.com, googlemail.com]",
    "smtp_status": "smtp_status: 5.1.x",
    "window": "window: 1h",
    "last": "last: 150",
    "threshold": "threshold: 4% (a rate; or 0.04), threshold: 10 (a count)",
    "min_volume": "min_volume: 50",
    "confidence": "confidence: 0.99",
    "keep_firing_for": "keep_firing_for: 10m",
    "for": "for: 5m",
    "cooldown": "cooldown: 1h",
    "action": "action: pause",
    "severity": "severity: critical",
    "labels": "labels: {team: deliverability}",
    "campaigns": "campaigns: {include: ['*'], exclude: ['camp_test_*']}",
    "workspaces": "workspaces: [ws_acme, 'ws_eu_*'] (or {include: [...], exclude: [...]})",
    "include": "include: ['camp_eu_*']",
    "exclude": "exclude: ['camp_test_*']",
    # rule-test files
    "tests": "tests: [{name: a stale list is paused, input: {camp_a: 200 sent over 20m}, expect: []}]",
    "input": "input: {camp_a: '200 sent over 20m, then 15 hard_bounce over 5m'}",
    "expect": "expect: [{campaign: camp_a, rule: hard-bounce-rate, at: 20m40s, action: pause}]",
    "RuleTest.workspaces": "workspaces: {camp_a: ws_acme} (campaign id: the workspace its events name)",
    "campaign": "campaign: camp_a",
    "rule": "rule: hard-bounce-rate",
    "at": "at: 20m40s",
    "outcome": "outcome: paused",
}


# keys whose example shows their parts too: `workspaces.include` is shown workspace ids, not campaign ids
_WHOLE_EXAMPLES = frozenset({"workspaces"})


def describe(root: type[BaseModel], loc: tuple, detail: dict[str, Any]) -> str:
    """The message for one pydantic error `detail` at `loc` under the model `root`."""
    kind, given = detail["type"], detail.get("input")
    key = next((part for part in reversed(loc) if isinstance(part, str)), None)
    # the example of the innermost key that has one; the file's first key at the top
    shown = (
        next((part for part in loc if part in _WHOLE_EXAMPLES), None)
        or next((part for part in reversed(loc) if part in EXAMPLES), None)
        or next(iter(root.model_fields))
    )
    # a key two files use differently has its example per model: `RuleTest.workspaces`
    owner = model_at(root, loc[: loc.index(shown)]) if shown in loc else None
    if owner is not None and f"{owner.__name__}.{shown}" in EXAMPLES:
        shown = f"{owner.__name__}.{shown}"
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, loc[:-1])
        return unknown(str(loc[-1]), allowed, "key")
    if kind == "literal_error" or kind == "enum":
        choices = _literal_choices(root, loc)
        if choices:
            return unknown(str(given), choices, "value") + _example(shown)
    if kind == "string_pattern_mismatch" and key in PATTERN_HINTS:
        return f"{_shown(given)} is not {PATTERN_HINTS[key]}{_example(shown)}"
    message = _MESSAGES.get(kind)
    if message is None:
        text = detail["msg"].removeprefix("Value error, ")
        # our own validators already teach; anything else from pydantic gets an example at least
        return text if kind == "value_error" else f"{_plain(text)}{_example(shown)}"
    if kind == "string_type" and isinstance(given, int | float) and not isinstance(given, bool):
        message += f" (quote it: '{given}')"  # YAML read a number where text was meant
    return message.format(got=_shown(given), **(detail.get("ctx") or {})) + _example(shown)


def problem(
    file: str, data: object, lines: dict[tuple, int], detail: dict[str, Any], root: type[BaseModel], scope: tuple
) -> str:
    """One line `FILE:LINE: NOUN NAME: FIELD: message` for a pydantic error in a parsed file.

    `scope` is the location of the items the file is made of, with None for list positions and
    the noun last: ("groups", None, "rules", None, "rule") names rules, ("tests", None, "test")
    names tests. `lines` maps locations to line numbers."""
    # pydantic puts union and validator details in the location; keep the keys a user wrote
    raw = detail["loc"]
    kept = raw[:-1] if detail["type"] == "extra_forbidden" else raw  # an unknown key is the user's, whatever it holds
    loc = tuple(part for part in kept if not (isinstance(part, str) and ("[" in part or part.startswith("function"))))
    if kept is not raw:
        loc += raw[-1:]
    *pattern, noun = scope
    inside = len(loc) >= len(pattern) and all(p is None or p == part for p, part in zip(pattern, loc, strict=False))
    field = loc[len(pattern) :] if inside else loc
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    where = f"{file}:{line}" if line else file
    item = f" {noun} {_item_name(data, loc[: len(pattern)])}:" if inside else ""
    field_text = f" {'.'.join(map(str, field))}:" if field else ""
    return f"{where}:{item}{field_text} {describe(root, loc, detail)}"


def _item_name(data: object, loc: tuple) -> str:
    """The `name` of the item at `loc`, or its position when it has none."""
    item = data
    try:
        for part in loc:
            item = item[part]  # type: ignore[index]
        name = str(item["name"])  # type: ignore[index]
        if name.strip():
            return name
    except (KeyError, IndexError, TypeError):
        pass
    positions = [part + 1 for part in loc if isinstance(part, int)]
    return " of group ".join(f"#{n}" for n in reversed(positions))


def unknown(given: str, allowed: list[str], what: str) -> str:
    """`given` is not among `allowed`: the nearest one, and all of them."""
    near = difflib.get_close_matches(given, allowed, n=1, cutoff=0.6)
    hint = f", did you mean {near[0]!r}?" if near else ""
    return f"unknown {what} {given!r}{hint} (allowed: {', '.join(allowed)})"


def allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the mapping at `loc` may hold, as a file writes them (aliases, e.g. `for`)."""
    model = model_at(root, loc)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` (list positions skipped), if any."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = _field(model, part)
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _field(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (found := _model_in(argument)) is not None:
            return found
    return None


def _literal_choices(root: type[BaseModel], loc: tuple) -> list[str]:
    parent = model_at(root, tuple(part for part in loc[:-1]))
    field = _field(parent, loc[-1]) if parent is not None and isinstance(loc[-1], str) else None
    return [str(value) for value in _literals(field.annotation)] if field is not None else []


def _literals(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return [value for argument in typing.get_args(annotation) for value in _literals(argument)]
    return []


def _example(key: str | None) -> str:
    example = EXAMPLES.get(key or "")
    return f"; e.g. `{example}`" if example else ""


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else _yaml_kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _yaml_kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


def _plain(text: str) -> str:
    return text.replace("Input should be", "expected", 1)


# what a value of a field with a pattern looks like
PATTERN_HINTS = {
    "name": "a valid name (letters, digits, '-', '_' and '.', starting with a letter or digit)",
    "smtp_status": "an enhanced status code (class 2, 4 or 5, then two numbers or x)",
}

# pydantic error type -> message; {got} is the value given, other fields come from the error's ctx
_MESSAGES = {
    "missing": "required but missing",
    "float_parsing": "expected a number, got {got}",
    "float_type": "expected a number, got {got}",
    "int_parsing": "expected a whole number, got {got}",
    "int_type": "expected a whole number, got {got}",
    "int_from_float": "expected a whole number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "bool_parsing": "expected true or false, got {got}",
    "string_type": "expected text, got {got}",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "greater_than": "must be more than {gt}, got {got}",
    "less_than_equal": "must be at most {le}, got {got}",
    "less_than": "must be less than {lt}, got {got}",
    "string_pattern_mismatch": "{got} does not have the expected form",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "needs at least {min_length} item(s), got none",
    "dict_type": "expected a mapping (key: value), got {got}",
    "model_type": "expected a mapping (key: value), got {got}",
    "model_attributes_type": "expected a mapping (key: value), got {got}",
    "tuple_type": "expected a list, got {got}",
    "list_type": "expected a list, got {got}",
    "finite_number": "expected a finite number, got {got}",
}
