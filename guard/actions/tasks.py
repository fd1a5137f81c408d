"""Background tasks given a grace period at shutdown: the decisions' and the notifications'."""

from __future__ import annotations

import asyncio
from collections.abc import Set


async def wait_then_cancel(tasks: Set[asyncio.Task[None]], timeout: float) -> int:
    """Wait up to `timeout` s for the tasks; cancel the rest and wait for them to end. Returns how many were
    cancelled."""
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout)
    left = list(tasks)
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    return len(left)
