"""What a rule looks at: signals narrowed by event fields, and the campaigns and workspaces it covers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from guard.contracts.events import UNSAFE_CHARACTERS

CountedSignal = Literal["sent", "bounced", "complained", "unsubscribed", "replied"]


def _as_tuple(value: object) -> object:
    return (value,) if isinstance(value, str) else value


def _matchable(pattern: str) -> str:
    """An id or domain holding such characters makes its event malformed: the glob would match nothing."""
    if UNSAFE_CHARACTERS.search(pattern):
        raise ValueError(f"{pattern!r} holds control or bidirectional formatting characters: it could match nothing")
    return pattern


# an empty glob or list would match nothing, which is never what a rule means: say so instead
Glob = Annotated[str, Field(min_length=1), AfterValidator(_matchable)]
Globs = Annotated[tuple[Glob, ...], BeforeValidator(_as_tuple), Field(min_length=1)]
StatusPatterns = Annotated[
    tuple[Annotated[str, Field(pattern=r"^[245](\.(\d{1,3}|x)){2}$")], ...],
    BeforeValidator(_as_tuple),
    Field(min_length=1),
]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Where(Frozen):
    """Filters on event fields; all given filters must match."""

    bounce_type: Literal["hard", "soft"] | None = Field(None, description="Only bounces of this type.")
    recipient_domain: Globs | None = Field(
        None, description="Recipient domain globs, e.g. 'gmail.com' or ['outlook.*', 'hotmail.*']."
    )
    smtp_status: StatusPatterns | None = Field(
        None,
        description="Enhanced status codes parsed from bounceReason, with x as a wildcard: '5.1.x', '5.7.1'.",
    )


class Selector(Frozen):
    """A signal, optionally narrowed by `where`. A bare signal name is accepted: `per: sent`."""

    signal: CountedSignal
    where: Where = Where()

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: object) -> object:
        return {"signal": value} if isinstance(value, str) else value


class CampaignFilter(Frozen):
    """Campaign id globs the rule applies to; exclude wins over include."""

    include: Globs = ("*",)
    exclude: Annotated[tuple[str, ...], BeforeValidator(_as_tuple)] = ()


class WorkspaceFilter(Frozen):
    """Leadterra workspace id globs the rule applies to; exclude wins over include. A bare list is
    the `include` list: `workspaces: [ws_acme, ws_eu_*]`. A campaign whose events name no
    workspace (and come from no mapped topic) is in none, so a rule with this filter skips it."""

    include: Globs = ("*",)
    exclude: Annotated[tuple[str, ...], BeforeValidator(_as_tuple)] = ()

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, value: object) -> object:
        return {"include": value} if isinstance(value, str | list | tuple) else value

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The bare forms too, so that an editor checking a rule file against `guard schema` takes them."""
        schema = handler(core)
        bare = [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
        return {
            "anyOf": [{key: value for key, value in schema.items() if key != "description"}, *bare],
            "description": schema.get("description", ""),
        }
