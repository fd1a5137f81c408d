"""A key file read again while the guard runs: a mounted Secret rewritten when a key is rotated.

A 401 makes every pause client ask its key file what it holds now. With many workspaces the keys
file is large (2,000 workspaces: ~100 ms of parsing), and a burst of rejected pauses asks at once:
read on the event loop, once per call, it would stall every other task and the health probes. So
the file is read in a worker thread, only when it changed since the last read (inode, size, mtime),
at most once per `min_interval`, and one read answers every caller waiting meanwhile.

`guard ingest` reads its webhook signing secrets the same way (guard.ingest.secrets).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import structlog

from guard.errors import ConfigError

log = structlog.get_logger("guard.actions.keyfiles")

T = TypeVar("T")

REREAD_SECONDS = 3.0  # a file rewritten over and over is still read only this often
# A version written this close to our read may have changed again within the file system's clock tick
# (same size and mtime): it is read once more at its next change check rather than trusted.
_RACY_NANOSECONDS = 2_000_000_000

_Version = tuple[int, int, int, int, int]  # device, inode, size, mtime and ctime in ns


class KeyFile(Generic[T]):
    """What a key file holds now, parsed by `parse` (which raises ValueError or ConfigError when the
    file is wrong); `name` (the setting's variable) is what the logs call it. `refused` is called once
    for each version of the file that is wrong (a metric counts them)."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[Path], T],
        *,
        name: str,
        min_interval: float | None = None,
        refused: Callable[[], None] | None = None,
    ) -> None:
        self._path, self._parse, self._name, self._refused = path, parse, name, refused
        self._min_interval = REREAD_SECONDS if min_interval is None else min_interval
        # a wrong version read again (written too recently to trust, or the file gone) is reported once
        self._refusal: tuple[_Version | None, str] | None = None
        self._version: _Version | None = None  # of the content last parsed; None: not read yet, or gone
        self._trusted = False  # whether an unchanged version means unchanged content
        self._value: T | None = None
        self._read_at = -float("inf")  # monotonic time the last read ended
        self._pending: asyncio.Future[T | None] | None = None

    async def current(self) -> T | None:
        """The file's content now, or None while it cannot be read or parsed (the key in use stays).
        Never raises; callers arriving while a read is under way share its answer."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._refresh())
            self._pending.add_done_callback(self._read_done)
        return await asyncio.shield(self._pending)

    def _read_done(self, done: asyncio.Future[T | None]) -> None:
        self._pending = None

    async def _refresh(self) -> T | None:
        try:
            version = await asyncio.to_thread(_version_of, self._path)
            if version == self._version and self._trusted:
                return self._value
            wait = self._read_at + self._min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                self._version, self._trusted, self._value = await asyncio.to_thread(self._read)
            finally:  # the interval runs from a read's end: a worker thread slow to start cannot shorten it
                self._read_at = time.monotonic()
        except Exception:  # a bug here must not reach a pause: its key stays as it is
            log.exception("a key file cannot be read again; what it held stays in use", variable=self._name)
            self._version, self._trusted, self._value = None, False, None
        return self._value

    def _read(self) -> tuple[_Version | None, bool, T | None]:
        """(the version read, whether it can be trusted, its content or None); in a worker thread."""
        started = time.time_ns()
        version = _version_of(self._path)  # before the read: a change during it is seen next time
        try:
            value = self._parse(self._path)
        except (ValueError, ConfigError) as error:  # mid-rotation or broken: keep the key in use
            self._refuse(version, str(error))
            value = None
        else:
            self._refusal = None
        trusted = version is not None and version[3] < started - _RACY_NANOSECONDS
        return version, trusted, value

    def _refuse(self, version: _Version | None, error: str) -> None:
        if self._refusal == (version, error):
            return
        self._refusal = (version, error)
        log.warning("a key file cannot be read again; what it held stays in use", variable=self._name, error=error)
        if self._refused is not None:
            self._refused()


def _version_of(path: Path) -> _Version | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns
