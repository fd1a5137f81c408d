"""The pure parts of `guard ingest`: signatures, webhook bodies, ARF reports, secret settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from guard.contracts.events import Signal, decode
from guard.errors import ConfigError
from guard.ingest.arf import UnusableReport, complaint_event
from guard.ingest.signature import Signer, Verifier, sign
from guard.ingest.webhook import UnusableWebhook, webhook_record
from guard.runtime.settings import IngestSettings, WebhookSettings

ARF = Path(__file__).parent / "arf"
BODY = b'{"event":"message.sent","data":{"campaignId":"camp_1","messageId":"m1"}}'
SECRET = b"whsec_current"


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


class TestVerifier:
    @pytest.mark.parametrize(
        "spelling",
        [
            pytest.param(lambda mac: mac.hex(), id="hex"),
            pytest.param(lambda mac: mac.hex().upper(), id="HEX"),
            pytest.param(lambda mac: "sha256=" + mac.hex(), id="sha256=hex"),
            pytest.param(lambda mac: base64.b64encode(mac).decode(), id="base64"),
            pytest.param(lambda mac: "sha256=" + base64.b64encode(mac).decode(), id="sha256=base64"),
            pytest.param(lambda mac: base64.urlsafe_b64encode(mac).decode().rstrip("="), id="base64url-unpadded"),
        ],
    )
    def test_accepts_every_spelling_of_the_right_mac(self, spelling) -> None:
        """Leadterra does not document the encoding: hex and base64, with or without `sha256=`."""
        assert Verifier((SECRET,)).verify(BODY, spelling(_mac(SECRET, BODY)))

    @pytest.mark.parametrize(
        "header",
        [None, "", "sha256=", "garbage", _mac(b"other", BODY).hex(), _mac(SECRET, BODY + b" ").hex(), "00" * 32],
    )
    def test_rejects_missing_malformed_and_wrong_signatures(self, header: str | None) -> None:
        """Another secret, another body, or no MAC at all: rejected."""
        assert not Verifier((SECRET,)).verify(BODY, header)

    @pytest.mark.parametrize(
        "spelling",
        [
            pytest.param(lambda mac: mac.hex(), id="hex"),
            pytest.param(lambda mac: "sha256=" + mac.hex(), id="sha256=hex"),
            pytest.param(lambda mac: base64.b64encode(mac).decode(), id="base64"),
            pytest.param(lambda mac: base64.urlsafe_b64encode(mac).decode().rstrip("="), id="base64url-unpadded"),
        ],
    )
    @pytest.mark.parametrize(
        "near_miss",
        [
            pytest.param(lambda mac: mac[:-1] + bytes([mac[-1] ^ 0x01]), id="last-byte-wrong"),
            pytest.param(lambda mac: bytes([mac[0] ^ 0x80]) + mac[1:], id="first-byte-wrong"),
            pytest.param(lambda mac: mac[:16] + bytes([mac[16] ^ 0xFF]) + mac[17:], id="middle-byte-wrong"),
            pytest.param(lambda mac: mac[:-1], id="truncated-by-one-byte"),
            pytest.param(lambda mac: mac + b"\x00", id="one-byte-too-long"),
            pytest.param(lambda mac: mac[:4] + _mac(b"whsec_other", BODY)[4:], id="right-prefix-other-secret"),
        ],
    )
    def test_every_byte_of_the_mac_counts(self, near_miss, spelling) -> None:
        """A MAC wrong in one byte only, a byte short or long, or another secret's MAC that begins like
        the right one: rejected in every spelling, so a verifier comparing a prefix could not pass."""
        right = _mac(SECRET, BODY)
        wrong = near_miss(right)
        assert wrong != right
        assert not Verifier((SECRET,)).verify(BODY, spelling(wrong))

    def test_a_mac_of_the_right_length_for_another_secret_is_rejected_also_during_a_rotation(self) -> None:
        """Old and new secrets configured: a third secret's MAC, 32 bytes like theirs, verifies under none."""
        verifier = Verifier((b"old", b"new"))
        third = _mac(b"third", BODY)
        assert len(third) == len(_mac(b"old", BODY))
        assert not verifier.verify(BODY, third.hex())
        assert not verifier.verify(BODY, base64.b64encode(third).decode())

    def test_any_secret_of_a_rotation_verifies(self) -> None:
        """With old and new secret configured, both verify and a third does not."""
        verifier = Verifier((b"old", b"new"))
        assert verifier.verify(BODY, sign(b"old", BODY)) and verifier.verify(BODY, sign(b"new", BODY))
        assert not verifier.verify(BODY, sign(b"third", BODY))

    def test_a_campaign_secret_signs_only_at_its_campaign_url(self) -> None:
        """camp_a's own secret is tried only for ?campaign=camp_a; an account secret anywhere, speaking for
        no campaign of the URL's (the URL is not signed)."""
        verifier = Verifier((SECRET,), {"camp_a": (b"whsec_a",)})
        by_a, by_account = _mac(b"whsec_a", BODY), _mac(SECRET, BODY)
        assert verifier.signer(BODY, by_a, "camp_a") == Signer("camp_a")
        assert verifier.signer(BODY, by_a, "camp_b") is None
        assert verifier.signer(BODY, by_a, None) is None
        assert verifier.signer(BODY, by_account, "camp_a") == Signer(None)
        assert verifier.signer(BODY, _mac(b"whsec_a", BODY + b" "), "camp_a") is None
        assert not Verifier((), {"camp_a": (b"whsec_a",)}).can_verify("camp_b")

    def test_refuses_blank_secrets_and_never_shows_them(self) -> None:
        """An empty secret would let anyone sign; the repr holds no secret."""
        with pytest.raises(ValueError):
            Verifier((b" ",))
        assert "whsec" not in repr(Verifier((SECRET,)))


class TestSecretSettings:
    def test_comma_separated_secrets_are_stripped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LEADTERRA_WEBHOOK_SECRET", " old , new ")
        assert WebhookSettings().secrets() == (b"old", b"new")

    def test_secrets_from_a_file_one_per_line(self, tmp_path: Path) -> None:
        (tmp_path / "secret").write_text("old\nnew\n")
        assert WebhookSettings(secret_file=tmp_path / "secret").secrets() == (b"old", b"new")

    @pytest.mark.parametrize("value", ["", "  ", "hunter2,,b", "hunter2, "])
    def test_a_blank_secret_is_refused_without_echoing_the_others(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("LEADTERRA_WEBHOOK_SECRET", value)
        with pytest.raises(ConfigError, match="empty secret") as raised:
            WebhookSettings().secrets()
        assert "hunter2" not in str(raised.value)

    def test_campaign_secrets_from_a_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """One secret, or a list during a rotation, per campaign; then no account secret is needed."""
        monkeypatch.delenv("LEADTERRA_WEBHOOK_SECRET", raising=False)
        (tmp_path / "campaigns.yaml").write_text("camp_a: whsec_a\ncamp_b: [whsec_b_old, whsec_b_new]\n")
        settings = WebhookSettings(campaign_secrets_file=tmp_path / "campaigns.yaml")
        assert settings.secrets() == ()
        assert settings.campaign_secrets() == {"camp_a": (b"whsec_a",), "camp_b": (b"whsec_b_old", b"whsec_b_new")}

    @pytest.mark.parametrize(
        ("text", "message"),
        [("camp_a: ''\n", "empty secret"), ("- whsec_1\n", "must map campaign ids"), ("camp_a: [1]\n", "not text")],
    )
    def test_a_wrong_campaign_secrets_file_is_refused(self, tmp_path: Path, text: str, message: str) -> None:
        (tmp_path / "campaigns.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            WebhookSettings(campaign_secrets_file=tmp_path / "campaigns.yaml").campaign_secrets()

    def test_no_secret_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("LEADTERRA_WEBHOOK_SECRET", raising=False)
        with pytest.raises(ConfigError, match="LEADTERRA_WEBHOOK_SECRET"):
            WebhookSettings().secrets()


class TestWebhookRecord:
    def test_a_body_with_data_campaign_id_is_forwarded_byte_for_byte(self) -> None:
        assert webhook_record(BODY, None) == ("camp_1", BODY)
        assert webhook_record(BODY, "camp_1") == ("camp_1", BODY)

    @pytest.mark.parametrize(
        ("body", "bound", "expected"),
        [
            ({"event": "reply.received", "data": {"reply": {"id": "r1", "campaignId": "camp_r"}}}, None, "camp_r"),
            ({"event": "message.bounced", "data": {"messageId": "m"}}, "camp_q", "camp_q"),
            ({"event": "campaign.started"}, "camp_s", "camp_s"),
            ({"event": "reply.received", "data": {"reply": {"campaignId": "camp_q"}}}, "camp_q", "camp_q"),
        ],
    )
    def test_the_campaign_id_is_found_and_written_into_data(self, body: dict, bound: str | None, expected: str) -> None:
        """data.campaignId, else data.reply.campaignId, else the campaign the signing secret is bound to."""
        campaign_id, value = webhook_record(json.dumps(body).encode(), bound)
        assert campaign_id == expected
        assert json.loads(value)["data"]["campaignId"] == expected

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"event": "message.sent", "data": {"campaignId": "camp_b"}}, id="data"),
            pytest.param({"event": "reply.received", "data": {"reply": {"campaignId": "camp_b"}}}, id="reply"),
        ],
    )
    def test_a_campaign_secret_cannot_speak_for_another_campaign(self, body: dict) -> None:
        """Signed with camp_a's own secret, a body naming camp_b is unusable: that secret speaks for camp_a only."""
        with pytest.raises(UnusableWebhook, match="signed with the secret of campaign 'camp_a'"):
            webhook_record(json.dumps(body).encode(), "camp_a")

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"not json", "not JSON"),
            (b"[1, 2]", "not an object"),
            (b'{"data": {"campaignId": "c"}}', "no event name"),
            (b'{"event": "message.sent", "data": "x"}', "data is not an object"),
            (b'{"event": "message.sent", "data": {"messageId": "m"}}', "no campaign id"),
            (b'{"event": "message.sent", "data": {"campaignId": ""}}', "no campaign id"),
        ],
    )
    def test_unusable_bodies_say_why(self, body: bytes, reason: str) -> None:
        with pytest.raises(UnusableWebhook, match=reason):
            webhook_record(body, None)


class TestArf:
    def test_an_abuse_report_becomes_a_complaint_of_the_campaign_in_the_original_headers(self) -> None:
        event = complaint_event((ARF / "abuse.eml").read_bytes(), "X-Leadterra-Campaign-Id")
        decoded = decode(json.dumps(event).encode(), 1773000000.0)
        assert (decoded.signal, decoded.campaign_id, decoded.message_id) == (
            Signal.COMPLAINED,
            "camp_fbl_1",
            "msg_8b1f2c@sender.example.com",
        )
        assert decoded.time == 1772992800.0  # Arrival-Date, Thu, 8 Mar 2026 14:00:00 -0400
        assert event["data"]["feedbackType"] == "abuse"
        assert event["data"]["recipientDomain"] == "mail.example.net"
        # the reported message's sender: the complaint counts in the sending domain's scope
        assert event["data"]["from"] == "sdr@sender.example.com" and decoded.sender_domain == "sender.example.com"

    @pytest.mark.parametrize(
        ("header", "sender"),
        [
            (b"From: Sam Doe <sdr@acme.com>", "sdr@acme.com"),
            (b"From: sdr@acme.com", "sdr@acme.com"),
            (b"From: <" + b"x" * 400 + b"@acme.com>", None),  # past what the contract keeps: left out
            (b"From: <sdr\x1b[31m@acme.com>", None),  # a terminal escape: would forge log lines
            (b"From: undisclosed", "undisclosed"),
        ],
    )
    def test_the_sender_is_the_reported_messages_from_and_a_bad_one_loses_no_complaint(
        self, header: bytes, sender: str | None
    ) -> None:
        raw = (ARF / "abuse.eml").read_bytes().replace(b"From: <sdr@sender.example.com>", header)
        event = complaint_event(raw, "X-Leadterra-Campaign-Id")
        assert event["data"].get("from") == sender
        assert decode(json.dumps(event).encode(), 1773000000.0).campaign_id == "camp_fbl_1"

    def test_a_headers_only_report_works_too(self) -> None:
        event = complaint_event((ARF / "abuse-headers-only.eml").read_bytes(), "X-Leadterra-Campaign-Id")
        assert event["data"]["campaignId"] == "camp_fbl_2"

    def test_the_campaign_header_is_configurable(self) -> None:
        with pytest.raises(UnusableReport, match="X-Other"):
            complaint_event((ARF / "abuse.eml").read_bytes(), "X-Other")

    @pytest.mark.parametrize(
        ("sample", "reason"),
        [
            ("abuse-no-campaign.eml", "no X-Leadterra-Campaign-Id header"),
            ("not-a-report.eml", "not an ARF report"),
        ],
    )
    def test_unusable_reports_say_why(self, sample: str, reason: str) -> None:
        with pytest.raises(UnusableReport, match=reason):
            complaint_event((ARF / sample).read_bytes(), "X-Leadterra-Campaign-Id")

    def test_not_spam_is_no_complaint(self) -> None:
        raw = (ARF / "abuse.eml").read_bytes().replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
        with pytest.raises(UnusableReport, match="not-spam is not a complaint"):
            complaint_event(raw, "X-Leadterra-Campaign-Id")

    def test_arf_tokens_are_optional_and_blank_ones_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert IngestSettings().arf_tokens() == ()
        monkeypatch.setenv("GUARD_ARF_TOKEN", "t1,")
        with pytest.raises(ConfigError, match="GUARD_ARF_TOKEN"):
            IngestSettings().arf_tokens()


def _nested_multipart(depth: int) -> bytes:
    """A multipart/report whose first part is a multipart holding a multipart ... `depth` deep."""
    head = b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; boundary="b0"\n\n'
    opening = b"".join(b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i, i + 1) for i in range(depth))
    closing = b"".join(b"--b%d--\n" % i for i in reversed(range(depth + 1)))
    return head + opening + closing


def _many_parts(parts: int) -> bytes:
    head = b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; boundary="b"\n\n'
    return head + b"--b\nContent-Type: text/plain\n\nx\n" * parts + b"--b--\n"


HEADERS_ONLY = (ARF / "abuse-headers-only.eml").read_bytes()


class TestHostileReports:
    """Every report the email package chokes on is an UnusableReport (dead-lettered, 200), never a 500."""

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            pytest.param(
                HEADERS_ONLY.replace(
                    b"Content-Type: text/rfc822-headers\n", b"Content-Type: text/rfc822-headers; charset=x-no-such\n"
                ),
                "charset",
                id="unknown-charset",
            ),
            pytest.param(
                HEADERS_ONLY.replace(
                    b"Content-Type: message/feedback-report\n",
                    b"Content-Type: message/feedback-report " + b"(" * 2000 + b")" * 2000 + b"\n",
                ),
                "unreadable",
                id="content-type-comment-2000-deep",
            ),
            pytest.param(_nested_multipart(3000), "MIME parts", id="multipart-3000-deep"),
            pytest.param(_many_parts(32_000), "MIME parts", id="32000-parts"),
        ],
    )
    def test_is_unusable_with_its_reason(self, raw: bytes, reason: str) -> None:
        with pytest.raises(UnusableReport, match=reason):
            complaint_event(raw, "X-Leadterra-Campaign-Id")

    def test_the_part_count_is_checked_before_the_email_package_parses(self, monkeypatch) -> None:
        """Bounded in work: a report of 32,000 parts is refused without one line parsed."""
        import email

        def parse(*args, **kwargs):
            raise AssertionError("parsed")

        monkeypatch.setattr(email, "message_from_bytes", parse)
        with pytest.raises(UnusableReport, match="MIME parts"):
            complaint_event(_many_parts(32_000), "X-Leadterra-Campaign-Id")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"event": "message.sent", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}", id="json-1000-deep"),
        pytest.param(b'{"event": "x", "data": {"reply": ' + b"[" * 5000 + b"]" * 5000 + b"}}", id="reply-5000-deep"),
    ],
)
def test_a_deeply_nested_webhook_is_unusable_not_an_error(body: bytes) -> None:
    with pytest.raises(UnusableWebhook):
        webhook_record(body, "camp")
