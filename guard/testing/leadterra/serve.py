"""`python -m guard.testing.leadterra` and `guard standin`: serve a stand-in from a shell."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime

from guard.testing.leadterra.records import DEFAULT_API_KEY, RecordedRequest
from guard.testing.leadterra.standin import LeadterraStandIn


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _log_request(request: RecordedRequest) -> None:
    """One line per request; never prints header values (the key stays out of logs)."""
    elapsed_ms = (time.time() - request.received_at) * 1000
    answer = request.status if request.status is not None else "dropped"
    stamp = datetime.fromtimestamp(request.received_at, UTC).strftime("%H:%M:%S.%f")[:-3]
    _log(f"{stamp} {request.method} {request.path} -> {answer} ({elapsed_ms:.1f} ms)")


def accepted_key(given: str | None) -> tuple[str, str]:
    """The key the stand-in accepts and where it came from, for its start line (which never shows
    a key the user chose): --api-key, else $LEADTERRA_API_KEY (as the guard beside it reads it), else the default."""
    if given is not None:
        return given, "the key given by --api-key"
    if from_env := os.environ.get("LEADTERRA_API_KEY", "").strip():
        return from_env, "the key in LEADTERRA_API_KEY"
    return DEFAULT_API_KEY, f"key {DEFAULT_API_KEY}"


async def serve(
    host: str = "127.0.0.1",
    port: int = 8099,
    api_key: str | None = None,
    create_unknown: bool = False,
) -> None:
    """Run a stand-in until cancelled, logging one line per request to stderr."""
    api_key, key_hint = accepted_key(api_key)
    standin = LeadterraStandIn(api_key=api_key, create_unknown=create_unknown, on_request=_log_request)
    await standin.start(host=host, port=port)
    unknown = "unknown campaigns act as running" if create_unknown else "unknown campaigns are 404"
    _log(f"Leadterra stand-in on {standin.url} (Bearer {key_hint}; {unknown})")
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m guard.testing.leadterra [--host H] [--port P] [--api-key K] [--create-unknown]``."""
    parser = argparse.ArgumentParser(
        prog="python -m guard.testing.leadterra",
        description="Serve a local stand-in for the Leadterra API.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.api_key, args.create_unknown))
    except KeyboardInterrupt:
        pass
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stand-in's options (`guard standin` has the same)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8099, help="0 picks a free port (default 8099)")
    parser.add_argument(
        "--api-key",
        help=f"the accepted bearer key (default: $LEADTERRA_API_KEY, else {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--create-unknown",
        action="store_true",
        help="treat any unknown campaign id as an existing running campaign",
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535)")
    return port
