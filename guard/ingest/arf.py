"""Feedback-loop reports (ARF, RFC 5965) -> `message.complained` events in Leadterra's envelope.

A report is a `multipart/report; report-type=feedback-report` with three parts: a human-readable
text, a `message/feedback-report` block of fields (Feedback-Type, Original-Mail-From,
Arrival-Date, ...), and the reported message (`message/rfc822`, or `text/rfc822-headers` when the
provider sends headers only). The campaign comes from a header the sender put on that message.
"""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import HeaderParser
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

from guard.contracts.events import MAX_ADDRESS_LENGTH, MAX_FUTURE_SKEW_SECONDS, MAX_ID_LENGTH, UNSAFE_CHARACTERS
from guard.errors import GuardError

#: Feedback types that mean "a recipient called this spam"; not-spam and auth-failure do not.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
#: an ARF report has three parts; the reported message may add a few (alternatives, attachments)
MAX_MIME_PARTS = 100
_ENCODED = "base64"  # quoted-printable leaves the headers readable: the parser has read them already
_POLICY = email.policy.default


class UnusableReport(GuardError):
    """The bytes are no ARF complaint the guard can count; the reason says why (dead-lettered)."""


def complaint_event(raw: bytes, campaign_header: str, now: float | None = None) -> dict[str, Any]:
    """The `message.complained` event an ARF report stands for; raises UnusableReport, and nothing else. An
    Arrival-Date further past `now` than the guard takes (local time written as UTC, a wrong clock) is left out:
    the record's time stands in, and the complaint still counts.

    The email package's work grows with the parts and their nesting (a 1 MB report of 32,000 parts
    takes seconds), so the delimiter lines are counted first, at C speed, and a report with more than
    MAX_MIME_PARTS is refused unparsed; what the package then raises on hostile input (an unknown
    charset, comments or parts nested past the recursion limit, its own bugs) is a reason too.
    """
    if (delimiters := raw.count(b"\n--")) > MAX_MIME_PARTS:
        raise UnusableReport(f"more than {MAX_MIME_PARTS} MIME parts ({delimiters} delimiter lines): no ARF report")
    try:
        return _complaint_event(raw, campaign_header, now)
    except UnusableReport:
        raise
    except LookupError as error:
        raise UnusableReport(f"unknown charset: {error}") from None
    except Exception as error:  # RecursionError, IndexError, ...: the package's answer to hostile input
        raise UnusableReport(f"unreadable report: {type(error).__name__}: {error}") from None


def _complaint_event(raw: bytes, campaign_header: str, now: float | None) -> dict[str, Any]:
    report = email.message_from_bytes(raw, policy=email.policy.default)
    if report.get_content_type() != "multipart/report":
        raise UnusableReport(f"not an ARF report: content type {report.get_content_type()}, not multipart/report")
    if (report.get_param("report-type") or "").lower() != "feedback-report":
        raise UnusableReport("not an ARF report: report-type is not feedback-report")
    fields, original = _parts(report)
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if not feedback_type:
        raise UnusableReport("the feedback report has no Feedback-Type")
    if feedback_type not in COMPLAINT_TYPES:
        raise UnusableReport(f"Feedback-Type {feedback_type} is not a complaint")
    if original is None:
        raise UnusableReport("the report does not include the original message or its headers")
    campaign_id = str(original.get(campaign_header, "")).strip()
    if not campaign_id:
        raise UnusableReport(f"the original message has no {campaign_header} header")
    data: dict[str, Any] = {"campaignId": campaign_id, "feedbackType": feedback_type}
    # a Message-ID may run to 998 characters (RFC 5322), past what the guard keeps of an id: the complaint counts
    # without it (it is then neither deduplicated nor told apart from an earlier episode's mail) rather than not at all
    message_id = str(original.get("Message-ID", "")).strip().strip("<>")
    if message_id and len(message_id) <= MAX_ID_LENGTH:
        data["messageId"] = message_id
    if mail_from := _address(fields.get("Original-Mail-From")):
        data["originalMailFrom"] = mail_from
    # the reported message's From is the sending address Leadterra's events carry as `from`: its domain puts the
    # complaint in the sender-domain scopes (an envelope sender is often a bounce domain, another one)
    if sender := _address(original.get("From")):
        data["from"] = sender
    if recipient := _address(fields.get("Original-Rcpt-To")):
        data["recipient"] = recipient
        data["recipientDomain"] = recipient.rpartition("@")[2].lower()
    event: dict[str, Any] = {"event": "message.complained"}
    # the complaint's time; without one the guard falls back to the record's time
    when = _time(fields.get("Arrival-Date")) or _time(fields.get("Received-Date"))
    if when is not None and (now is None or when.timestamp() <= now + MAX_FUTURE_SKEW_SECONDS):
        event["timestamp"] = when.isoformat()
    event["data"] = data
    return event


def _address(header: object) -> str | None:
    """The address a header names (`Ann <a@acme.com>` -> `a@acme.com`); None when it names none the event contract
    keeps (too long, control characters): left out, so the complaint still counts."""
    _, address = parseaddr(str(header or ""))
    address = address.strip().strip("<>")
    if not address or len(address) > MAX_ADDRESS_LENGTH or UNSAFE_CHARACTERS.search(address):
        return None
    return address


def _parts(report: EmailMessage) -> tuple[EmailMessage, EmailMessage | None]:
    fields: EmailMessage | None = None
    original: EmailMessage | None = None
    for part in report.iter_parts():
        kind = part.get_content_type()
        if kind == "message/feedback-report":
            # the email package parses message/* bodies as a nested message: its headers are the fields
            payload = part.get_payload()
            fields = payload[0] if isinstance(payload, list) and payload else None
        elif kind in ("message/rfc822", "message/rfc822-headers") and original is None:
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else None
            if original is not None and str(part.get("Content-Transfer-Encoding", "")).strip().lower() == _ENCODED:
                # not allowed on message/* (RFC 2046), but some feedback loops send it: the message is its decoding
                original = email.message_from_bytes(_decoded(original.get_payload()), policy=_POLICY)
        elif kind == "text/rfc822-headers" and original is None:
            original = HeaderParser(policy=email.policy.default).parsestr(part.get_content())
    if fields is None:
        raise UnusableReport("the report has no message/feedback-report part")
    return fields, original


def _decoded(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii", "surrogateescape"))  # non-alphabet characters (line breaks) skipped


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # RFC 5322 "-0000": UTC, zone unknown
