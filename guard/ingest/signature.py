"""Webhook signatures: HMAC-SHA256 of the raw body, as hex or base64, with an optional `sha256=` prefix.

Leadterra documents the header (`X-Leadterra-Signature`) and the MAC, not the encoding or a
prefix, so every plausible spelling is accepted. The header is decoded to the 32 MAC bytes first
(that depends only on what the caller sent), then compared with each secret's MAC in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

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


class Verifier:
    """Checks signatures against one or more secrets (several while a secret is being rotated)."""

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        if not secrets or any(not secret.strip() for secret in secrets):
            raise ValueError("a webhook signature needs non-empty secrets")
        self._secrets = secrets

    def __repr__(self) -> str:  # never the secrets
        return f"<Verifier of {len(self._secrets)} secret(s)>"

    def claimed(self, signature: str | None) -> bytes | None:
        """The MAC a header value spells, or None: checked before a byte of the body is read."""
        return _decode(signature) if signature else None

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when `signature` is the HMAC-SHA256 of `body` under any of the secrets."""
        claimed = self.claimed(signature)
        return claimed is not None and self.matches(body, claimed)

    def matches(self, body: bytes, claimed: bytes) -> bool:
        """True when `claimed` (see `claimed`) is the HMAC-SHA256 of `body` under any of the secrets."""
        matched = False
        for secret in self._secrets:  # no early exit: the time does not say which secret matched
            matched |= hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), claimed)
        return matched


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender puts on `body` (`sha256=<hex>`): for tests, the demo and load tools."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
