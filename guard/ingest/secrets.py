"""The webhook signing secrets in force, read again from their files while `guard ingest` runs.

Kubernetes rewrites a mounted Secret in place (it swaps a `..data` symlink) and restarts nothing,
so a rotation written there reaches the process only if it reads the files again. Each file is a
KeyFile (guard.actions.keyfiles): its version checked, read in a worker thread only when it changed,
at most every REREAD_SECONDS. `watch` asks them that often and swaps in a new Verifier; a request
only takes the Verifier in force, so it never waits on the file system. A file that becomes
unreadable, blank or invalid keeps the secrets in use: logged and counted once per change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import structlog
from prometheus_client import Counter

from guard.actions import keyfiles
from guard.actions.keyfiles import KeyFile
from guard.ingest.signature import Verifier
from guard.runtime.settings.ingest import read_campaign_secrets, read_secret_file

log = structlog.get_logger("guard.ingest.secrets")

T = TypeVar("T")
CampaignSecrets = Mapping[str, tuple[bytes, ...]]


class WebhookSecrets:
    """`verifier` checks with the secrets in force: those read at start-up, then the newest content of
    LEADTERRA_WEBHOOK_SECRET_FILE and LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE (a secret given in the
    environment cannot change). `reloads` counts the changes by variable and result."""

    def __init__(
        self,
        secrets: tuple[bytes, ...],
        campaign_secrets: CampaignSecrets,
        *,
        secret_file: Path | None,
        campaign_secrets_file: Path | None,
        reloads: Counter,
    ) -> None:
        self.verifier = Verifier(secrets, campaign_secrets)
        self._secrets, self._campaign_secrets = secrets, campaign_secrets
        self._reloads = reloads
        self._secret_file = self._key_file(secret_file, read_secret_file, "LEADTERRA_WEBHOOK_SECRET_FILE")
        self._campaign_file = self._key_file(
            campaign_secrets_file, read_campaign_secrets, "LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE"
        )

    def _key_file(self, path: Path | None, parse: Callable[[Path], T], name: str) -> tuple[str, KeyFile[T]] | None:
        if path is None:
            return None
        return name, KeyFile(path, parse, name=name, refused=self._reloads.labels(name, "rejected").inc)

    @property
    def from_files(self) -> bool:
        return self._secret_file is not None or self._campaign_file is not None

    async def watch(self) -> None:
        """Read the files again every REREAD_SECONDS until cancelled; a failure is logged and tried again, never
        the end of the watch (a rotation would then go unseen, every new signature refused)."""
        while True:
            await asyncio.sleep(keyfiles.REREAD_SECONDS)
            try:
                await self.refresh()
            except Exception:  # a bug, not a bad file (KeyFile keeps the secrets in use for those)
                log.exception("webhook secret files not read again; the secrets in use stay")

    async def refresh(self) -> None:
        """Put the files' newest valid content in force."""
        secrets = await self._newest(self._secret_file, self._secrets)
        campaign_secrets = await self._newest(self._campaign_file, self._campaign_secrets)
        if (secrets, campaign_secrets) != (self._secrets, self._campaign_secrets):
            # the parsers refuse what the Verifier would (no secret, a blank one): this cannot raise
            self.verifier = Verifier(secrets, campaign_secrets)
            self._secrets, self._campaign_secrets = secrets, campaign_secrets

    async def _newest(self, file: tuple[str, KeyFile[T]] | None, in_force: T) -> T:
        if file is None:
            return in_force
        name, key_file = file
        value = await key_file.current()  # None: unreadable or invalid, already logged and counted
        if value is None or value == in_force:
            return in_force
        log.info("webhook signing secrets changed in their file; the new ones are in force", variable=name)
        self._reloads.labels(name, "applied").inc()
        return value
