"""Webhook signatures: HMAC-SHA256 of the raw body, as hex or base64, with an optional `sha256=` prefix.

Leadterra documents the header (`X-Leadterra-Signature`) and the MAC, not the encoding or a
prefix, so every plausible spelling is accepted. The header is decoded to the 32 MAC bytes first
(that depends only on what the caller sent), then compared with each secret's MAC in constant time.

The MAC covers the body only, not the URL, so which secret signed decides what the body may speak
for: an account secret (LEADTERRA_WEBHOOK_SECRET) speaks for the campaigns its signed body names, a
campaign's own secret (LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE, the secret of the webhook registered
with `?campaign=<id>`) for that campaign alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Leadterra-Signature"
_DIGEST_SIZE = hashlib.sha256().digest_size


def _decode(signature: str) -> bytes | None:
    """The MAC bytes a header value spells, or None when it spells none."""
    text = signature.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:]
    try:
        if len(text) == 2 * _DIGEST_SIZE:
            return bytes.fromhex(text)
        padded = (text + "=" * (-len(text) % 4)).replace("-", "+").replace("_", "/")  # url-safe alphabet too
        decoded = base64.b64decode(padded, validate=True)
    except (ValueError, binascii.Error):
        return None
    return decoded if len(decoded) == _DIGEST_SIZE else None


@dataclass(frozen=True)
class Signer:
    """Whose secret signed a body: `campaign` is the one campaign it is bound to, None for an account
    secret (it speaks for whichever campaign the signed body names)."""

    campaign: str | None


class Verifier:
    """Checks signatures against one or more secrets (several while a secret is being rotated): the
    account's, and each campaign's own (`campaign_secrets`), tried only for that campaign's URL."""

    def __init__(
        self, secrets: tuple[bytes, ...], campaign_secrets: Mapping[str, tuple[bytes, ...]] | None = None
    ) -> None:
        campaign_secrets = dict(campaign_secrets or {})
        every = secrets + tuple(s for bound in campaign_secrets.values() for s in bound)
        if not every or any(not secret.strip() for secret in every) or not all(campaign_secrets.values()):
            raise ValueError("a webhook signature needs non-empty secrets")
        self._secrets, self._campaign_secrets = secrets, campaign_secrets

    def __repr__(self) -> str:  # never the secrets
        return f"<Verifier of {len(self._secrets)} secret(s) and {len(self._campaign_secrets)} campaign(s)' own>"

    def can_verify(self, campaign: str | None) -> bool:
        """Whether any secret could sign for a request to the URL of `campaign` (None: no `?campaign=`)."""
        return bool(self._secrets) or campaign in self._campaign_secrets

    def signer(self, body: bytes, claimed: bytes, campaign: str | None) -> Signer | None:
        """Who signed `body` with `claimed` (see `claimed`), posted to the URL of `campaign`: a secret
        bound to that campaign, else an account secret; None when neither did."""
        bound = self._campaign_secrets.get(campaign, ()) if campaign is not None else ()
        if bound and self._matches(body, claimed, bound):
            return Signer(campaign)
        return Signer(None) if self._matches(body, claimed, self._secrets) else None

    def claimed(self, signature: str | None) -> bytes | None:
        """The MAC a header value spells, or None: checked before a byte of the body is read."""
        return _decode(signature) if signature else None

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when `signature` is the HMAC-SHA256 of `body` under any of the account secrets."""
        claimed = self.claimed(signature)
        return claimed is not None and self._matches(body, claimed, self._secrets)

    @staticmethod
    def _matches(body: bytes, claimed: bytes, secrets: tuple[bytes, ...]) -> bool:
        """True when `claimed` is the HMAC-SHA256 of `body` under any of `secrets`."""
        matched = False
        for secret in secrets:  # no early exit: the time does not say which secret matched
            matched |= hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), claimed)
        return matched


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender puts on `body` (`sha256=<hex>`): for tests, the demo and load tools."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
