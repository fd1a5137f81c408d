"""bytes -> Event: the input contract of DESIGN.md ("Event contract (input)")."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import T0

from guard.contracts.events import (
    MAX_ADDRESS_LENGTH,
    MAX_CLOCK_SKEW_SECONDS,
    MAX_FUTURE_SKEW_SECONDS,
    MAX_ID_LENGTH,
    Event,
    IgnoredEvent,
    MalformedEvent,
    Signal,
    decode,
)

RECORD_TIME = T0 + 60.0  # Kafka's record time: a minute after the event happened
TIMESTAMP = "2024-05-01T12:00:00Z"  # == T0


def envelope(event: str, data: object, timestamp: object = TIMESTAMP, **extra: object) -> bytes:
    value: dict = {"event": event, "data": data, **extra}
    if timestamp is not None:
        value["timestamp"] = timestamp
    return json.dumps(value).encode()


class TestEveryEventKind:
    """Each event name of the contract decodes to the flat Event the engine counts."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(
                envelope(
                    "message.sent",
                    {
                        "campaignId": "camp-1",
                        "messageId": "msg-1",
                        "workspaceId": "ws-1",
                        "recipient": "Ann.Smith@Example.COM",
                        "sequenceStep": 2,
                        "senderAccountId": "sender-9",
                    },
                ),
                Event(Signal.SENT, "camp-1", T0, "msg-1", "example.com", None, None, 2, "sender-9", "ws-1"),
                id="message.sent-with-every-field",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "camp-1"}),
                Event(Signal.SENT, "camp-1", T0),
                id="message.sent-with-only-campaignId",
            ),
            pytest.param(
                envelope(
                    "message.bounced",
                    {
                        "campaignId": "camp-1",
                        "messageId": "msg-1",
                        "recipient": "bob@Gmail.com",
                        "bounceType": "hard",
                        "bounceReason": "550 5.1.1 user unknown",
                    },
                ),
                Event(Signal.BOUNCED, "camp-1", T0, "msg-1", "gmail.com", "hard", "5.1.1"),
                id="message.bounced-hard-5.1.1",
            ),
            pytest.param(
                envelope(
                    "message.bounced",
                    {
                        "campaignId": "camp-1",
                        "bounceType": "hard",
                        "bounceReason": "550-5.1.1 The email account that you tried to reach does not exist.",
                    },
                ),
                Event(Signal.BOUNCED, "camp-1", T0, bounce_type="hard", smtp_status="5.1.1"),
                id="message.bounced-gmail-multiline-reply-code",
            ),
            pytest.param(
                envelope(
                    "message.bounced",
                    {"campaignId": "camp-1", "bounceType": "soft", "bounceReason": "452 4.2.2 mailbox full"},
                ),
                Event(Signal.BOUNCED, "camp-1", T0, bounce_type="soft", smtp_status="4.2.2"),
                id="message.bounced-soft-4.2.2",
            ),
            pytest.param(
                envelope("message.bounced", {"campaignId": "camp-1", "bounceReason": "550 user unknown"}),
                Event(Signal.BOUNCED, "camp-1", T0),
                id="message.bounced-reason-without-enhanced-status",
            ),
            pytest.param(
                envelope(
                    "message.complained", {"campaignId": "camp-1", "messageId": "msg-1", "recipientDomain": "AOL.com"}
                ),
                Event(Signal.COMPLAINED, "camp-1", T0, "msg-1", "aol.com"),
                id="message.complained",
            ),
            pytest.param(
                envelope(
                    "reply.received",
                    {"reply": {"id": "reply-1", "classification": "unsubscribe", "campaignId": "camp-1"}},
                ),
                Event(Signal.UNSUBSCRIBED, "camp-1", T0, "reply-1"),
                id="reply.received-unsubscribe-campaign-from-reply",
            ),
            pytest.param(
                envelope(
                    "reply.received",
                    {
                        "campaignId": "camp-1",
                        "messageId": "msg-1",
                        "reply": {"id": "reply-1", "classification": "interested"},
                    },
                ),
                Event(Signal.REPLIED, "camp-1", T0, "reply-1"),
                id="reply.received-interested-reply-id-wins-over-messageId",
            ),
            pytest.param(
                envelope("reply.received", {"campaignId": "camp-1", "messageId": "msg-1", "reply": {}}),
                Event(Signal.REPLIED, "camp-1", T0, "msg-1"),
                id="reply.received-without-reply-id-uses-messageId",
            ),
            pytest.param(
                envelope("campaign.started", {"campaignId": "camp-1"}),
                Event(Signal.STARTED, "camp-1", T0, f"started {T0:.6f}"),  # named by its stamp
                id="campaign.started",
            ),
        ],
    )
    def test_a_valid_envelope_decodes_to_its_event(self, value: bytes, expected: Event) -> None:
        """A valid envelope of each kind gives exactly the expected Event."""
        assert decode(value, RECORD_TIME) == expected

    @pytest.mark.parametrize(
        "classification", ["interested", "not_interested", "out_of_office", "bounce", "brand-new", None]
    )
    def test_a_reply_that_is_no_unsubscribe_counts_as_replied(self, classification: str | None) -> None:
        """Every reply classification other than `unsubscribe` (even unknown ones) is a plain reply."""
        value = envelope("reply.received", {"reply": {"id": "r", "classification": classification, "campaignId": "c"}})
        assert decode(value, RECORD_TIME).signal is Signal.REPLIED

    def test_data_campaign_id_wins_over_the_reply_campaign_id(self) -> None:
        """When both are given, `data.campaignId` (the Kafka key) is the campaign."""
        value = envelope("reply.received", {"campaignId": "outer", "reply": {"id": "r", "campaignId": "inner"}})
        assert decode(value, RECORD_TIME).campaign_id == "outer"

    @pytest.mark.parametrize(
        ("data", "domain"),
        [
            pytest.param({"recipient": "Ann@Example.COM"}, "example.com", id="from-recipient"),
            pytest.param({"recipient": "weird@name@Sub.Example.com"}, "sub.example.com", id="last-at-sign"),
            pytest.param(
                {"recipientDomain": "GMAIL.com", "recipient": "x@other.org"}, "gmail.com", id="recipientDomain-wins"
            ),
            pytest.param({"recipient": "no-at-sign"}, None, id="recipient-without-at"),
            pytest.param({}, None, id="absent"),
        ],
    )
    def test_the_recipient_domain_is_lower_cased(self, data: dict, domain: str | None) -> None:
        """The domain comes from recipientDomain or the recipient address, lower-cased."""
        assert decode(envelope("message.sent", {"campaignId": "c", **data}), RECORD_TIME).recipient_domain == domain

    def test_a_bounce_reason_with_an_ip_address_before_the_status_keeps_the_status(self) -> None:
        """Postfix-style reasons name the remote host's address before the status code; the status is 5.1.1."""
        reason = "host mx.example.com[40.4.1.10] said: 550 5.1.1 <bob@example.com>: user unknown"
        value = envelope("message.bounced", {"campaignId": "c", "bounceType": "hard", "bounceReason": reason})
        assert decode(value, RECORD_TIME).smtp_status == "5.1.1"


class TestEventTime:
    """Event time is `timestamp`; a missing or unparseable one falls back to the record time."""

    @pytest.mark.parametrize(
        ("timestamp", "expected"),
        [
            pytest.param("2024-05-01T12:00:00Z", T0, id="Z-suffix"),
            pytest.param("2024-05-01T12:00:00+00:00", T0, id="explicit-utc-offset"),
            pytest.param("2024-05-01T14:00:00+02:00", T0, id="other-offset"),
            pytest.param("2024-05-01T12:00:00", T0, id="naive-is-utc"),
            pytest.param("2024-05-01T12:00:00.250Z", T0 + 0.25, id="fractional-seconds"),
            pytest.param("2024-05-01 12:00:00Z", T0, id="space-separator"),
            pytest.param("2024-05-01t12:00:00z", T0, id="lower-case-t-and-z"),  # RFC 3339 allows it
            pytest.param("2024-05-01T12:00:00.2500001Z", T0 + 0.25, id="beyond-microseconds"),
        ],
    )
    def test_an_iso_timestamp_is_the_event_time(self, timestamp: str, expected: float) -> None:
        """ISO 8601 timestamps, with Z, an offset or none (then UTC), give epoch seconds."""
        assert decode(envelope("message.sent", {"campaignId": "c"}, timestamp), RECORD_TIME).time == expected

    @pytest.mark.parametrize(
        "timestamp",
        [
            pytest.param(None, id="missing"),
            pytest.param("", id="empty"),
            pytest.param("yesterday", id="words"),
            pytest.param("2024-13-01T00:00:00Z", id="month-13"),
            pytest.param("1714564800", id="epoch-digits-as-string"),
            pytest.param(1714564800, id="epoch-number"),
            pytest.param({"at": "now"}, id="object"),
        ],
    )
    def test_a_missing_or_unparseable_timestamp_falls_back_to_the_record_time(self, timestamp: str | None) -> None:
        """Without a usable timestamp the Kafka record time is the event time."""
        assert decode(envelope("message.sent", {"campaignId": "c"}, timestamp), RECORD_TIME).time == RECORD_TIME

    def test_an_explicit_null_timestamp_falls_back_to_the_record_time(self) -> None:
        """`"timestamp": null` is a missing timestamp."""
        value = b'{"event": "message.sent", "timestamp": null, "data": {"campaignId": "c"}}'
        assert decode(value, RECORD_TIME).time == RECORD_TIME

    def test_a_timestamp_up_to_two_clocks_apart_ahead_is_kept(self) -> None:
        """Producer clocks run a little ahead of the record's: up to five minutes ahead of it, the stamp stands."""
        ahead = datetime.fromtimestamp(RECORD_TIME + MAX_CLOCK_SKEW_SECONDS, UTC).isoformat()
        assert decode(envelope("message.sent", {"campaignId": "c"}, ahead), RECORD_TIME).time == RECORD_TIME + 300

    @pytest.mark.parametrize("ahead", [MAX_CLOCK_SKEW_SECONDS + 0.001, 1800.0, MAX_FUTURE_SKEW_SECONDS])
    def test_a_timestamp_further_ahead_counts_at_the_record_time(self, ahead: float) -> None:
        """An event cannot happen after its record was written: a stamp further ahead (local time written as UTC)
        counts at the record's time, so it moves no clock into the future; nothing is lost."""
        stamp = datetime.fromtimestamp(RECORD_TIME + ahead, UTC).isoformat()
        value = envelope("message.bounced", {"campaignId": "c", "messageId": "m", "bounceType": "hard"}, stamp)
        assert decode(value, RECORD_TIME).time == RECORD_TIME

    @pytest.mark.parametrize("retried_after", [600.0, 1500.0, 7200.0])
    def test_a_start_is_named_by_its_stamp_however_late_its_retry(self, retried_after: float) -> None:
        """A `campaign.started` has no messageId; its stamp names it, so a retry is known as one by the engine's
        dedupe store: stamped 30 minutes ahead of its record, the first delivery counts at its record's time and a
        retry (its record later) at its own or at its stamp, yet both have one name."""
        stamp = datetime.fromtimestamp(RECORD_TIME + 1800, UTC).isoformat()
        first = decode(envelope("campaign.started", {"campaignId": "c"}, stamp), RECORD_TIME)
        retry = decode(envelope("campaign.started", {"campaignId": "c"}, stamp), RECORD_TIME + retried_after)
        assert first.time == RECORD_TIME
        ahead = RECORD_TIME + 1800 > RECORD_TIME + retried_after + MAX_CLOCK_SKEW_SECONDS
        assert retry.time == (RECORD_TIME + retried_after if ahead else RECORD_TIME + 1800)
        assert first.message_id == retry.message_id == f"started {RECORD_TIME + 1800:.6f}"
        in_step = decode(envelope("campaign.started", {"campaignId": "c", "messageId": "m"}, TIMESTAMP), RECORD_TIME)
        assert in_step.message_id == f"started {T0:.6f}"  # its stamp, not a messageId Leadterra does not send
        assert decode(envelope("campaign.started", {"campaignId": "c"}, None), RECORD_TIME).message_id is None

    @pytest.mark.parametrize("fraction", [".123456789Z", ".9999996Z", ".5z", "Z"])
    def test_a_starts_name_is_one_whether_its_delivery_was_stamped_ahead_or_not(self, fraction: str) -> None:
        """Nanoseconds (Go's RFC3339Nano, Java's Instant) or RFC 3339's lowercase `t` and `z`: the first delivery
        stamped ahead of its record and its retry in step are read alike, so they have one name (rounded one way and
        cut the other, the retry was a restart)."""
        stamp = datetime.fromtimestamp(RECORD_TIME + 1800, UTC).strftime("%Y-%m-%dT%H:%M:%S") + fraction
        stamp = stamp.replace("T", "t") if fraction.endswith("z") else stamp
        first = decode(envelope("campaign.started", {"campaignId": "c"}, stamp), RECORD_TIME)
        retry = decode(envelope("campaign.started", {"campaignId": "c"}, stamp), RECORD_TIME + 7200)
        assert first.time == RECORD_TIME and retry.time > RECORD_TIME + 1799
        assert first.message_id == retry.message_id is not None

    def test_a_timestamp_ahead_of_a_file_line_without_a_record_time_stands(self) -> None:
        """A replayed file has no record times (NaN): its stamps are all there is, and stand."""
        assert (
            decode(envelope("message.sent", {"campaignId": "c"}, "2030-01-01T00:00:00Z"), math.nan).time == 1893456000.0
        )

    def test_a_timestamp_in_the_past_is_kept(self) -> None:
        """Old event times are the engine's business (late events), not a decode error."""
        assert (
            decode(envelope("message.sent", {"campaignId": "c"}, "2020-01-01T00:00:00Z"), RECORD_TIME).time
            == 1577836800.0
        )


def _long(n: int) -> str:
    return "x" * n


class TestMalformedInput:
    """Bytes that break the contract raise MalformedEvent with a reason an operator can act on."""

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            pytest.param(None, "empty value (tombstone)", id="none-value-tombstone"),
            pytest.param(b"", "not an event envelope", id="empty-bytes"),
            pytest.param(b"not json at all", "JSON is malformed", id="not-json"),
            pytest.param(b'{"event": "message.sent", "data": {"campaignId": "\xff"}}', "utf-8", id="invalid-utf-8"),
            pytest.param(b'[{"event": "message.sent"}]', "Expected `object`, got `array`", id="json-array"),
            pytest.param(b'"message.sent"', "Expected `object`, got `str`", id="json-string"),
            pytest.param(b'{"data": {"campaignId": "c"}}', "missing required field `event`", id="missing-event"),
            pytest.param(b'{"event": "message.sent"}', "missing required field `data`", id="missing-data"),
            pytest.param(b'{"event": "message.sent", "data": null}', "got `null` - at `$.data`", id="null-data"),
            pytest.param(b'{"event": "message.sent", "data": []}', "got `array` - at `$.data`", id="array-data"),
            pytest.param(b'{"event": 7, "data": {"campaignId": "c"}}', "at `$.event`", id="event-name-number"),
            pytest.param(
                envelope("message.sent", {"campaignId": 42}), "at `$.data.campaignId`", id="campaignId-number"
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "sequenceStep": "2"}),
                "at `$.data.sequenceStep`",
                id="sequenceStep-string",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "messageId": ["m"]}),
                "at `$.data.messageId`",
                id="messageId-list",
            ),
            pytest.param(
                envelope("reply.received", {"campaignId": "c", "reply": "unsubscribe"}),
                "at `$.data.reply`",
                id="reply-string",
            ),
            pytest.param(
                envelope("message.sent", {"messageId": "m"}), "data.campaignId is missing", id="missing-campaignId"
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": ""}), "data.campaignId is missing", id="empty-campaignId"
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": None}), "data.campaignId is missing", id="null-campaignId"
            ),
            pytest.param(
                envelope("reply.received", {"reply": {"id": "r"}}),
                "data.campaignId is missing",
                id="reply-without-any-campaignId",
            ),
            pytest.param(
                envelope("reply.received", {"campaignId": "c"}),
                "reply.received without data.reply",
                id="reply-without-reply-object",
            ),
            pytest.param(
                envelope("message.bounced", {"campaignId": "c", "bounceType": "permanent"}),
                "data.bounceType must be 'hard' or 'soft', got 'permanent'",
                id="bad-bounceType",
            ),
            pytest.param(
                envelope("message.bounced", {"campaignId": "c", "bounceType": "HARD"}),
                "data.bounceType must be 'hard' or 'soft'",
                id="upper-case-bounceType",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": _long(MAX_ID_LENGTH + 1)}),
                "length <= 256",
                id="campaignId-too-long",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "messageId": _long(MAX_ID_LENGTH + 1)}),
                "length <= 256",
                id="messageId-too-long",
            ),
            pytest.param(
                envelope("reply.received", {"campaignId": "c", "reply": {"id": _long(MAX_ID_LENGTH + 1)}}),
                "length <= 256",
                id="reply-id-too-long",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "workspaceId": _long(MAX_ID_LENGTH + 1)}),
                "length <= 256 - at `$.data.workspaceId`",
                id="workspaceId-too-long",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "senderAccountId": _long(MAX_ID_LENGTH + 1)}),
                "length <= 256 - at `$.data.senderAccountId`",
                id="senderAccountId-too-long",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "recipient": "a@" + _long(MAX_ADDRESS_LENGTH)}),
                "length <= 320 - at `$.data.recipient`",
                id="recipient-too-long",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "recipientDomain": _long(MAX_ADDRESS_LENGTH + 1)}),
                "length <= 320 - at `$.data.recipientDomain`",
                id="recipientDomain-too-long",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": 'camp_1\n{"event": "forged"}'}),
                "data.campaignId holds control or bidirectional formatting characters",
                id="newline-in-campaignId",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "camp_\u202eevil"}),
                "data.campaignId holds control or bidirectional formatting characters",
                id="bidi-override-in-campaignId",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "messageId": "m\u0000"}),
                "data.messageId holds control",
                id="nul-in-messageId",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c", "workspaceId": "ws\u2066x"}),
                "data.workspaceId holds control or bidirectional",
                id="bidi-isolate-in-workspaceId",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c"}, "0001-01-01T00:00:00+23:59"),
                "timestamp '0001-01-01T00:00:00+23:59' is outside 1970-01-01..9999-12-31 UTC",
                id="timestamp-before-year-1-in-utc",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c"}, "1969-12-31T23:59:59Z"),
                "is outside 1970-01-01..9999-12-31 UTC",
                id="timestamp-before-the-epoch",
            ),
            pytest.param(
                envelope("message.sent", {"campaignId": "c"}, "2099-01-01T00:00:00Z"),
                "timestamp '2099-01-01T00:00:00Z' is more than an hour ahead",
                id="timestamp-far-in-the-future",
            ),
        ],
    )
    def test_malformed_input_raises_with_a_reason(self, value: bytes | None, reason: str) -> None:
        """The reason names what is wrong (and where, for type errors)."""
        with pytest.raises(MalformedEvent) as raised:
            decode(value, RECORD_TIME)
        assert reason in str(raised.value)

    def test_an_id_of_exactly_the_maximum_length_is_accepted(self) -> None:
        """The limit is inclusive: 256 characters pass."""
        event = decode(
            envelope("message.sent", {"campaignId": _long(MAX_ID_LENGTH), "messageId": _long(MAX_ID_LENGTH)}),
            RECORD_TIME,
        )
        assert (len(event.campaign_id), len(event.message_id or "")) == (MAX_ID_LENGTH, MAX_ID_LENGTH)

    def test_a_raw_bidi_character_is_rejected_too(self) -> None:
        """Not only escapes: a UTF-8 encoded right-to-left override is caught as well."""
        value = json.dumps({"event": "message.sent", "data": {"campaignId": "camp_\u202e1"}}, ensure_ascii=False)
        with pytest.raises(MalformedEvent, match="bidirectional"):
            decode(value.encode(), RECORD_TIME)

    def test_a_raw_delete_character_is_rejected_too(self) -> None:
        """DEL (0x7f) may stand unescaped in a JSON string, ASCII and all: it is caught as well (it was kept)."""
        value = b'{"event": "message.sent", "data": {"campaignId": "camp_\x7f1"}}'
        with pytest.raises(MalformedEvent, match="data.campaignId holds control"):
            decode(value, RECORD_TIME)

    def test_ids_with_escapes_of_ordinary_characters_are_accepted(self) -> None:
        """An escaped slash or letter is no control character: the id decodes as written."""
        event = decode(envelope("message.sent", {"campaignId": "camp\\/1\u00e9"}), RECORD_TIME)
        assert event.campaign_id == "camp\\/1\u00e9"

    @pytest.mark.parametrize("record_time", [-0.001, 1e15])
    def test_without_a_timestamp_a_record_time_the_audit_cannot_write_is_malformed(self, record_time: float) -> None:
        """The record time stands in for a missing timestamp only inside 1970..9999."""
        with pytest.raises(MalformedEvent, match="no usable event time"):
            decode(envelope("message.sent", {"campaignId": "c"}, None), record_time)

    def test_a_timestamp_just_beyond_the_allowed_skew_is_malformed(self) -> None:
        """One second more than an hour ahead of the record time is rejected."""
        ahead = datetime.fromtimestamp(RECORD_TIME + MAX_FUTURE_SKEW_SECONDS + 1, UTC).isoformat()
        with pytest.raises(MalformedEvent, match="more than an hour ahead"):
            decode(envelope("message.sent", {"campaignId": "c"}, ahead), RECORD_TIME)

    def test_a_long_bad_value_is_cut_short_in_the_reason(self) -> None:
        """A reason quotes at most 40 characters of a bad value, so dead-letter headers stay small."""
        with pytest.raises(MalformedEvent) as raised:
            decode(envelope("message.bounced", {"campaignId": "c", "bounceType": "h" * 1000}), RECORD_TIME)
        assert len(str(raised.value)) < 120

    def test_malformed_event_is_a_value_error(self) -> None:
        """Callers that catch ValueError also catch MalformedEvent."""
        assert issubclass(MalformedEvent, ValueError)


class TestUnknownEvents:
    """Unknown event names are skipped (IgnoredEvent), not dead-lettered."""

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(envelope("message.opened", {"campaignId": "c", "messageId": "m"}), id="with-campaignId"),
            pytest.param(envelope("lead.created", {}), id="without-campaignId"),
            pytest.param(
                envelope("webhook.test", {"anything": {"nested": [1, 2]}}, None), id="unknown-fields-no-timestamp"
            ),
            pytest.param(envelope("MESSAGE.SENT", {"campaignId": "c"}), id="names-are-case-sensitive"),
        ],
    )
    def test_an_unknown_event_name_is_ignored(self, value: bytes) -> None:
        """IgnoredEvent carries the name so the service can count it."""
        with pytest.raises(IgnoredEvent) as raised:
            decode(value, RECORD_TIME)
        assert raised.value.name == json.loads(value)["event"]

    def test_ignored_event_is_no_malformed_event(self) -> None:
        """An ignored event must never be mistaken for a dead-letter case."""
        assert not issubclass(IgnoredEvent, MalformedEvent)

    def test_an_unknown_event_with_differently_typed_data_is_ignored(self) -> None:
        """A future Leadterra event may use `senderAccountId` as a number; being unknown, it is skipped."""
        with pytest.raises(IgnoredEvent):
            decode(envelope("sender.disconnected", {"senderAccountId": 42}), RECORD_TIME)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def near_envelopes(draw: st.DrawFn) -> bytes:
    """Envelopes with the right keys and arbitrary values in them."""
    data = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "campaignId": st.none() | st.text(max_size=300) | json_values,
                "messageId": st.none() | st.text(max_size=5) | json_values,
                "recipient": st.none() | st.emails() | json_values,
                "bounceType": st.sampled_from(["hard", "soft", "x"]) | json_values,
                "bounceReason": st.text(max_size=40) | json_values,
                "sequenceStep": st.integers() | json_values,
                "reply": st.fixed_dictionaries(
                    {}, optional={"id": json_values, "classification": json_values, "campaignId": json_values}
                )
                | json_values,
            },
        )
    )
    event = draw(
        st.sampled_from(
            ["message.sent", "message.bounced", "reply.received", "campaign.started", "message.complained", "other"]
        )
    )
    timestamp = draw(st.none() | st.text(max_size=30) | st.datetimes().map(lambda d: d.isoformat()) | json_values)
    return json.dumps({"event": event, "timestamp": timestamp, "data": data}).encode()


class TestNothingElseEscapes:
    """decode returns an Event or raises MalformedEvent or IgnoredEvent, whatever the bytes."""

    @settings(max_examples=300, deadline=None)
    @given(value=st.binary(max_size=200) | near_envelopes())
    def test_decode_raises_only_its_own_errors(self, value: bytes) -> None:
        """Arbitrary bytes and near-valid envelopes never crash the decoder."""
        try:
            event = decode(value, RECORD_TIME)
        except (MalformedEvent, IgnoredEvent):
            return
        assert isinstance(event, Event)
        assert event.campaign_id
        assert 0 <= event.time <= RECORD_TIME + MAX_CLOCK_SKEW_SECONDS
