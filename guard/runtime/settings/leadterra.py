"""How to reach Leadterra (`LEADTERRA_*`): the API, its key or keys, retries."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, FilePath, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from guard import redact
from guard.actions.keyfiles import KeyFile
from guard.actions.pause import KeySource
from guard.actions.workspaces import HEADER_SAFE_KEY, read_api_keys


class LeadterraSettings(BaseSettings):
    """How to reach Leadterra (`LEADTERRA_*`)."""

    model_config = SettingsConfigDict(env_prefix="LEADTERRA_", extra="ignore", allow_inf_nan=False)

    api_url: str = Field("https://app.leadterra.co", description="Base URL; paths under /v1 are appended.")
    api_key: SecretStr | None = Field(None, description="Workspace API key (sk_live_...). Never logged.")
    api_key_file: FilePath | None = Field(None, description="A file holding the key, e.g. a mounted Secret.")
    api_keys_file: FilePath | None = Field(
        None, description="A YAML or JSON file mapping workspace ids to their keys (several workspaces)."
    )
    request_timeout: float = Field(10.0, gt=0, description="Seconds per HTTP attempt.")
    retry_deadline: float = Field(
        300.0, gt=0, description="Seconds a pause keeps retrying 429/5xx/timeouts before it is audited as failed."
    )
    backoff_initial: float = Field(0.5, gt=0, description="Seconds before the first retry; doubles, with jitter.")
    backoff_max: float = Field(30.0, gt=0, description="Longest wait between retries, unless Retry-After asks more.")

    allow_insecure_http: bool = Field(
        False,
        description="Allow an http:// API URL to a host that is not loopback (the key then travels in cleartext).",
    )
    _key: SecretStr | None = PrivateAttr(None)
    _key_file: KeyFile[SecretStr | None] | None = PrivateAttr(None)
    _keys_file: KeyFile[dict[str, SecretStr]] | None = PrivateAttr(None)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"LEADTERRA_API_URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _clean_key(cls, value: Any) -> Any:
        """Whitespace around the key (a pasted newline) is dropped; an empty key is no key."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            redact.register(value)
            value = value.strip() or None
        return value

    @model_validator(mode="after")
    def _usable(self) -> LeadterraSettings:
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
            if not HEADER_SAFE_KEY.fullmatch(key):
                raise ValueError(f"the API key in LEADTERRA_API_KEY {_UNSAFE_KEY}")
            self._key = SecretStr(key)
        elif self.api_key_file is not None:
            self._key = _read_key_file(self.api_key_file)
        url = urlsplit(self.api_url)
        if url.scheme == "http" and not _loopback(url.hostname or "") and not self.allow_insecure_http:
            raise ValueError(
                "LEADTERRA_API_URL is http:// to a host that is not loopback: the API key would travel in cleartext. "
                "Use https://, or set LEADTERRA_ALLOW_INSECURE_HTTP=true"
            )
        return self

    def key(self) -> SecretStr | None:
        """The API key, from the variable or the file (whitespace stripped; empty means none)."""
        return self._key

    def workspace_keys(self) -> dict[str, SecretStr]:
        """workspace -> key from LEADTERRA_API_KEYS_FILE ({} without it); ConfigError when it is wrong."""
        return read_api_keys(self.api_keys_file) if self.api_keys_file is not None else {}

    def key_source(self, workspace: str | None = None) -> KeySource | None:
        """What the key of `workspace` (None: LEADTERRA_API_KEY's) is now, read again from its file (a
        mounted Secret is rewritten in place when the key is rotated); None for a key given in a
        variable. The reader returns None while the file is unreadable or wrong: the key in use stays.
        The clients of all workspaces share one reader of the keys file (guard.actions.keyfiles): a
        burst of 401s reads it once, off the event loop."""
        if workspace is not None and self.api_keys_file is not None:
            if self._keys_file is None:
                self._keys_file = KeyFile(self.api_keys_file, read_api_keys, name="LEADTERRA_API_KEYS_FILE")
            keys_file = self._keys_file

            async def workspace_key() -> SecretStr | None:
                keys = await keys_file.current()
                return keys.get(workspace) if keys is not None else None

            return workspace_key
        if workspace is None and self.api_key is None and self.api_key_file is not None:
            if self._key_file is None:
                self._key_file = KeyFile(self.api_key_file, _read_key_file, name="LEADTERRA_API_KEY_FILE")
            return self._key_file.current
        return None


_UNSAFE_KEY = (
    "holds characters an HTTP header cannot carry (spaces, control or non-ASCII characters inside it); "
    "check how the Secret was written"
)


def _read_key_file(path: Path) -> SecretStr | None:
    """The key in LEADTERRA_API_KEY_FILE (whitespace stripped; empty means none); ValueError when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"LEADTERRA_API_KEY_FILE cannot be read: {type(error).__name__}") from None
    redact.register(text)
    key = text.strip()
    if key and not HEADER_SAFE_KEY.fullmatch(key):
        raise ValueError(f"the API key in the file LEADTERRA_API_KEY_FILE {_UNSAFE_KEY}")
    return SecretStr(key) if key else None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
