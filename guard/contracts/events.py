"""bytes -> Event: the input contract.

Values are Leadterra's webhook envelope as JSON, `{"event", "timestamp", "data": {...}}`, with
`data.campaignId` required. Decoding is the hot path, so it uses msgspec (typed decoding at
close to the speed of reading the bytes); everything downstream sees the flat `Event`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec

from guard.errors import GuardError


class Signal(StrEnum):
    """What an event says happened; rules count signals."""

    SENT = "sent"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    STARTED = "started"  # not counted: resets a campaign's evidence


class Event(msgspec.Struct, frozen=True, gc=False):
    """One decoded event, as the engine sees it. `time` is event time in epoch seconds."""

    signal: Signal
    campaign_id: str
    time: float
    message_id: str | None = None
    recipient_domain: str | None = None
    bounce_type: str | None = None
    smtp_status: str | None = None  # enhanced status code from bounceReason, e.g. "5.1.1"
    sequence_step: int | None = None
    sender_account_id: str | None = None
    workspace_id: str | None = None
    sender_domain: str | None = None  # the domain of `data.from`, the sending address


class MalformedEvent(GuardError, ValueError):
    """The bytes are not an event of the contract; the reason says why. Goes to the dead-letter topic."""


class IgnoredEvent(Exception):
    """A well-formed event the guard does not count (an unknown name, a reply that is no unsubscribe)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


MAX_ID_LENGTH = 256
MAX_ADDRESS_LENGTH = 320  # an email address: 64 for the local part, 255 for the domain
# Strings the guard keeps (and logs) have bounded lengths, checked by msgspec as it decodes.
_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
# A workspace id's form, the same in events, the keys file and GUARD_TOPIC_WORKSPACES: an empty or odd
# one could never be matched to a key, so it is malformed here rather than a pause that cannot be made.
WORKSPACE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_WORKSPACE_ID = re.compile(WORKSPACE_ID_PATTERN)
_Address = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_LENGTH)]


class _Reply(msgspec.Struct):
    id: _Id | None = None
    classification: str | None = None
    campaignId: _Id | None = None


class _Data(msgspec.Struct):
    campaignId: _Id | None = None
    messageId: _Id | None = None
    workspaceId: _Id | None = None
    recipient: _Address | None = None
    recipientDomain: _Address | None = None
    bounceType: str | None = None
    bounceReason: str | None = None
    sequenceStep: int | None = None
    senderAccountId: _Id | None = None
    from_: _Address | None = msgspec.field(default=None, name="from")
    reply: _Reply | None = None


class _Envelope(msgspec.Struct):
    event: str
    data: msgspec.Raw = msgspec.Raw(b"")  # decoded only for events the guard counts
    timestamp: Any = None  # anything but an ISO 8601 string falls back to the record time


class _WellFormed(msgspec.Struct):
    """The envelope as nearly every webhook is: decoded in one pass, with msgspec's RFC 3339 parser.
    Anything else takes the lenient path, which also names what is wrong."""

    event: str
    data: _Data
    timestamp: datetime | None = None


SIGNALS = {  # event name -> what it says (the compiled decoder takes the same table)
    "message.sent": Signal.SENT,
    "message.bounced": Signal.BOUNCED,
    "message.complained": Signal.COMPLAINED,
    "reply.received": Signal.REPLIED,
    "campaign.started": Signal.STARTED,
}
_BOUNCE_TYPES = frozenset({"hard", "soft"})
# Not inside a longer dotted number: "[40.4.1.10] said: 550 5.1.1 ..." is 5.1.1, not 4.1.10.
_ENHANCED_STATUS = re.compile(r"(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?![\d.])")
# A timestamp further ahead of the record's own time than this is a producer bug, not news.
MAX_FUTURE_SKEW_SECONDS = 3600.0
# An event cannot happen after its record was written: a timestamp further ahead of the record's time than
# two hosts' clocks differ is a producer's clock or time zone gone wrong, and counts at the record's time.
# Taken as it is, one such stamp would move its partition's and its campaign's clocks (the rules' `now`,
# a decision's time, when a resume is recognised) ahead for every event until real time caught up.
MAX_CLOCK_SKEW_SECONDS = 300.0
# Event times an audit event can write (datetime's range from the Unix epoch on): anything else
# is a producer bug, and a decision stamped with it could never be recorded.
EARLIEST_EVENT_TIME = 0.0  # 1970-01-01T00:00:00Z
LATEST_EVENT_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
# Control characters (C0, DEL, C1) and bidirectional formatting characters: in an id they could
# forge log lines or make one id look like another to an operator.
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_decoder = msgspec.json.Decoder(_Envelope)
_data_decoder = msgspec.json.Decoder(_Data)
_well_formed_decoder = msgspec.json.Decoder(_WellFormed)


def decode(value: bytes | None, record_time: float) -> Event:
    """Decode one record value. `record_time` (Kafka's, epoch seconds) stands in for a missing or
    unparseable `timestamp`. Raises MalformedEvent or IgnoredEvent; nothing else escapes."""
    if value is None:
        raise MalformedEvent("empty value (tombstone)")
    try:
        # decoding the text first rejects invalid UTF-8 anywhere, also in fields the guard skips
        # (msgspec checks only what it decodes); ASCII, nearly every webhook, needs no check
        text = value if value.isascii() else value.decode("utf-8")
        # JSON strings hold control characters only as escapes, and bidi ones only as escapes or non-ASCII
        screen = text is not value or b"\\" in value or b"\x7f" in value  # DEL may stand unescaped
    except UnicodeDecodeError as error:
        raise MalformedEvent(f"not an event envelope: {error}") from None
    try:
        envelope = _well_formed_decoder.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return _decode_lenient(text, record_time, screen)
    signal = SIGNALS.get(envelope.event)
    if signal is None:
        raise IgnoredEvent(envelope.event)
    if signal is Signal.STARTED:
        return _decode_lenient(text, record_time, screen)  # named by its stamp, read as every delivery's is
    if envelope.timestamp is None:
        return _event(signal, envelope.data, _record_time(record_time), screen)
    stamp = envelope.timestamp
    time = (stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)).timestamp()
    if time > record_time + MAX_CLOCK_SKEW_SECONDS or not EARLIEST_EVENT_TIME <= time <= LATEST_EVENT_TIME:
        return _decode_lenient(text, record_time, screen)  # which says what is wrong with it, or counts it then
    return _event(signal, envelope.data, time, screen)


def _decode_lenient(text: bytes | str, record_time: float, screen: bool) -> Event:
    """Any envelope: a timestamp of any type (the record time stands in), `data` decoded only for
    events the guard counts; malformed ones get a message that says where."""
    try:
        envelope = _decoder.decode(text)
    except msgspec.DecodeError as error:
        raise MalformedEvent(f"not an event envelope: {error}") from None
    except RecursionError:
        raise MalformedEvent("not an event envelope: nested too deeply") from None
    signal = SIGNALS.get(envelope.event)
    if signal is None:
        raise IgnoredEvent(envelope.event)
    if not envelope.data:
        raise MalformedEvent(f"{envelope.event}: missing required field `data`")
    try:
        data = _data_decoder.decode(envelope.data)
    except msgspec.DecodeError as error:
        raise MalformedEvent(f"{envelope.event}: {_at_data(str(error))}") from None
    except RecursionError:
        raise MalformedEvent(f"{envelope.event}: data nested too deeply") from None
    event = _event(signal, data, _event_time(envelope.timestamp, record_time), screen)
    if signal is Signal.STARTED:
        stamp = envelope.timestamp
        return _named_start(event, epoch_from_iso(stamp) if stamp and isinstance(stamp, str) else None)
    return event


def _named_start(event: Event, stamp: float | None) -> Event:
    """A `campaign.started` named by its stamp, the time Leadterra says it started: it has no messageId, and a retry
    of it must be known as one however late it comes, also where it counts at its record's time (stamped ahead: each
    delivery another). Unnamed without a stamp (it counts at its record's time: nothing tells its deliveries apart).
    Every delivery's stamp is read by one parser (`epoch_from_iso`, which drops digits past the microsecond), so a
    nanosecond stamp gives each the same name."""
    return msgspec.structs.replace(event, message_id=None if stamp is None else f"started {stamp:.6f}")


def _event(signal: Signal, data: _Data, time: float, screen: bool) -> Event:
    """`screen`: the text may hold control or bidi characters (it has escapes or non-ASCII), so strings are checked."""
    reply = data.reply
    message_id = data.messageId
    if signal is Signal.REPLIED:
        if reply is None:
            raise MalformedEvent("reply.received without data.reply")
        message_id = reply.id or message_id
        if reply.classification == "unsubscribe":
            signal = Signal.UNSUBSCRIBED
    campaign_id = data.campaignId or (reply.campaignId if reply is not None else None)
    if not campaign_id:
        raise MalformedEvent("data.campaignId is missing")
    if screen:
        _screen(campaign_id, message_id, data)
    if data.workspaceId is not None and not _WORKSPACE_ID.match(data.workspaceId):
        raise MalformedEvent(
            f"data.workspaceId {data.workspaceId[:40]!r} is not a workspace id (1 to 128 letters, digits, '_', '.', "
            "':' or '-'): no key could be found for it"
        )
    if signal is Signal.BOUNCED:
        return _bounce(data, campaign_id, message_id, time)
    return Event(
        signal,
        campaign_id,
        time,
        message_id,
        _domain(data),
        None,
        None,
        data.sequenceStep,
        data.senderAccountId,
        data.workspaceId,
        _sender_domain(data.from_),
    )


def _screen(campaign_id: str, message_id: str | None, data: _Data) -> None:
    """Strings the guard keeps and logs must not hold characters that forge log lines."""
    for name, value in (
        ("campaignId", campaign_id),
        ("messageId", message_id),
        ("workspaceId", data.workspaceId),
        ("senderAccountId", data.senderAccountId),
        ("recipient", data.recipient),
        ("recipientDomain", data.recipientDomain),
        ("from", data.from_),
    ):
        if value is not None and UNSAFE_CHARACTERS.search(value):
            raise MalformedEvent(f"data.{name} holds control or bidirectional formatting characters")


def _at_data(message: str) -> str:
    """Locations in `data` as seen from the envelope, like the rest of the messages."""
    if "- at `$" in message:
        return message.replace("- at `$", "- at `$.data", 1)
    return f"{message} - at `$.data`"


def _bounce(data: _Data, campaign_id: str, message_id: str | None, time: float) -> Event:
    bounce_type = data.bounceType
    if bounce_type is not None and bounce_type not in _BOUNCE_TYPES:
        raise MalformedEvent(f"data.bounceType must be 'hard' or 'soft', got {bounce_type[:40]!r}")
    status = _ENHANCED_STATUS.search(data.bounceReason) if data.bounceReason else None
    return Event(
        Signal.BOUNCED,
        campaign_id,
        time,
        message_id,
        _domain(data),
        bounce_type,
        status.group(0) if status else None,
        data.sequenceStep,
        data.senderAccountId,
        data.workspaceId,
        _sender_domain(data.from_),
    )


def _domain(data: _Data) -> str | None:
    if data.recipientDomain:
        return data.recipientDomain.lower()
    if data.recipient and "@" in data.recipient:
        return data.recipient.rsplit("@", 1)[1].lower()
    return None


def _sender_domain(address: str | None) -> str | None:
    """The domain of a sending address, bare ('a@acme.com') or named ('Ann <a@acme.com>'), in lower case."""
    if not address or "@" not in address:
        return None
    domain = address.rsplit("@", 1)[1].rstrip("> ").lower()
    return domain or None


def epoch_from_iso(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time (UTC when it names no zone), or None if it is not one. RFC 3339's lowercase
    `t` and `z` are taken too, as msgspec takes them."""
    try:
        parsed = datetime.fromisoformat(text.upper())
        return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _event_time(timestamp: object, record_time: float) -> float:
    if not timestamp or not isinstance(timestamp, str):
        return _record_time(record_time)
    time = epoch_from_iso(timestamp)
    if time is None:
        return _record_time(record_time)
    if time > record_time + MAX_FUTURE_SKEW_SECONDS:
        raise MalformedEvent(f"timestamp {timestamp[:40]!r} is more than an hour ahead of the record's time")
    if not EARLIEST_EVENT_TIME <= time <= LATEST_EVENT_TIME:
        raise MalformedEvent(f"timestamp {timestamp[:40]!r} is outside 1970-01-01..9999-12-31 UTC")
    if time > record_time + MAX_CLOCK_SKEW_SECONDS:
        return _record_time(record_time)
    return time


def _record_time(record_time: float) -> float:
    """The record time standing in for the event time, when an audit event can write it."""
    if not EARLIEST_EVENT_TIME <= record_time <= LATEST_EVENT_TIME:
        raise MalformedEvent(f"no usable event time: no timestamp, and the record time {record_time!r} is out of range")
    return record_time


def in_workspace(event: Event, workspace_id: str, source: str) -> Event:
    """The event read from `source` (e.g. "topic leadterra.acme"), whose events are in `workspace_id`:
    in that workspace when it names none; one naming another workspace is misrouted (MalformedEvent,
    so dead-lettered): acted on, it would be paused with the key of a workspace it is not in."""
    if event.workspace_id is None:
        return msgspec.structs.replace(event, workspace_id=workspace_id)
    if event.workspace_id != workspace_id:
        raise MalformedEvent(
            f"misrouted: data.workspaceId {event.workspace_id!r} is not {workspace_id}, the workspace of {source}"
        )
    return event
