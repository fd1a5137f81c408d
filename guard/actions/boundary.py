"""The one way a decision consults a side surface (exemptions, notifications, the audit read): fail toward the pause.

A pause is the guard's reason to exist; exemptions, notifications and earlier outcomes only refine it. So the
decision path never calls one directly: it goes through `consult` (awaited, bounded in time) or `tell` (started
and forgotten), which turn any failure of the surface, an exception or a hang, into `Unavailable`: the decision goes
on as if the surface had nothing to say (no exemption, no notification), and its audit event says why in `note`.
Nothing a surface does, or holds, can reach the decision task.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.actions.boundary")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A side surface that failed or did not answer in time; the decision acts without it."""

    surface: str
    reason: str

    @property
    def note(self) -> str:
        return f"{self.surface} not consulted ({self.reason}); acted without it"


def _failed(surface: str, error: BaseException, metrics: Metrics, **context: object) -> Unavailable:
    reason = "no answer in time" if isinstance(error, TimeoutError) else f"{type(error).__name__}: {error}"[:200]
    metrics.side_surface_errors.labels(surface).inc()
    log.error("side surface failed; the decision goes on without it", surface=surface, reason=reason, **context)
    return Unavailable(surface, reason)


async def consult(
    surface: str, ask: Callable[[], Awaitable[T]], timeout: float, metrics: Metrics, **context: object
) -> T | Unavailable:
    """`ask()`'s answer, or Unavailable when it raises or takes longer than `timeout` seconds. `ask()` runs in a
    task of its own: whatever it does with a cancel, the caller's cancel (a shutdown's) ends the caller."""
    try:
        asking = asyncio.ensure_future(ask())
    except Exception as error:  # failed before it could be awaited
        return _failed(surface, error, metrics, **context)
    try:
        # asyncio.wait, not wait_for: on 3.11 wait_for returns an answer that lands in the turn of a cancel
        done, _ = await asyncio.wait((asking,), timeout=timeout)
    except BaseException:  # the caller is cancelled: so is the surface
        asking.cancel()
        raise
    if not done:
        asking.cancel()  # a hang: the surface is let go, and what it raises on its way out is not waited for
        asking.add_done_callback(functools.partial(_retrieved, surface))
        return _failed(surface, TimeoutError(), metrics, **context)
    try:
        return asking.result()
    except asyncio.CancelledError:  # the surface's own doing: not the caller's cancel, which raised above
        return _failed(surface, RuntimeError("cancelled"), metrics, **context)
    except Exception as error:
        return _failed(surface, error, metrics, **context)


def _retrieved(surface: str, asking: asyncio.Future[object]) -> None:
    if not asking.cancelled() and (error := asking.exception()) is not None:
        log.warning("side surface failed after its answer was given up", surface=surface, error=repr(error))


def tell(surface: str, do: Callable[[], None], metrics: Metrics, **context: object) -> Unavailable | None:
    """Run `do()`, which only starts work of its own; a failure is logged and counted, never raised."""
    try:
        do()
    except Exception as error:
        return _failed(surface, error, metrics, **context)
    return None
