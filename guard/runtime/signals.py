"""SIGTERM and SIGINT as a graceful stop, for both services (`guard run`, `guard ingest`)."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Stoppable(Protocol):
    """A service whose `run()` returns once `stop()` was called and it has drained."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def run_until_signalled(service: Stoppable) -> None:
    """Run the service; SIGTERM and SIGINT start its graceful stop (each service drains its own way)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    try:
        await service.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
