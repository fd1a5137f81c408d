"""guard run | ingest | validate | schema | audit-schema | replay | decisions | exempt | test | generate | demo |
standin"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from guard.cli import dev, operate, replay, rules, service
from guard.redact import redact
from guard.telemetry.logs import configure_tool_logging


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="guard", description="Pauses Leadterra campaigns when rules fire.")
    commands = root.add_subparsers(dest="command", required=True)
    for group in (service, rules, replay, operate, dev):
        group.add(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    missing = dev.test_tools_missing()
    if missing and words[:1] and words[0] in dev.TEST_TOOL_COMMANDS:  # not offered here: say why, not "invalid choice"
        print(f"guard: {missing.format(command=words[0])}", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    configure_tool_logging()  # `run` and `ingest` configure their own
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`guard schema | head`): as quiet as other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1
    except Exception:  # a bug: its traceback still goes through the redaction point
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1
