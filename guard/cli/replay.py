"""`guard replay`: what the rules would have done over a history, from a file, stdin or a topic."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from guard.cli.common import exit_code, parse_time, print_error, rules_problem
from guard.contracts.events import WORKSPACE_ID_PATTERN
from guard.errors import ConfigError, GuardError
from guard.rules import RuleFileError, load_rules


def _replay(args: argparse.Namespace) -> int:
    return exit_code(lambda: _replay_to_stdout(args), f"cannot read {args.source}")


def _replay_to_stdout(args: argparse.Namespace) -> int:
    from guard.tools import replay as replaying
    from guard.tools.report import Timelines, render_report
    from guard.tools.why import ClosestApproach

    try:
        rules = load_rules(args.rules)
        options = _engine_options(args)
        args.since_at = parse_time(args.since) if args.since else None  # once: a duration counts back from now
        args.until_at = parse_time(args.until) if args.until else None
    except RuleFileError as error:
        print_error(rules_problem(args.rules, error, "--rules"))
        return 2
    except ConfigError as error:
        print_error(str(error))
        return 2
    if args.why and not args.campaign:
        print_error("--why needs --campaign CAMPAIGN_ID: it explains one campaign")
        return 2
    if problem := _unreadable(args.source):
        print_error(problem)
        return 2
    window = _file_window(args)
    why = ClosestApproach(args.campaign) if args.why else None
    with tempfile.TemporaryDirectory() as scratch, _progress() as progress:
        records = _replay_source(args)
        if args.report and (args.source.startswith("kafka:") or args.source == "-"):
            copy = Path(scratch) / "spool"
            records, again = replaying.spool(records, copy), lambda: replaying.read_spool(copy)
        else:
            again = lambda: _replay_source(args)  # noqa: E731
        result = replaying.replay(records, rules, progress=progress, on_event=why, **window, **options)
        decisions = [d for d in result.decisions if args.campaign in (None, d.campaign_id)]
        if args.report:
            timelines = Timelines(decisions)
            replaying.replay(again(), rules, on_event=timelines, **window, **options)
            try:
                Path(args.report).write_text(render_report(decisions, timelines), encoding="utf-8")
            except GuardError as error:
                print_error(str(error))
                return 2
    if args.format == "json":
        sys.stdout.write(replaying.decisions_json(decisions))
    else:
        sys.stdout.write(replaying.decisions_table(decisions))
    if why is not None:
        print(why.report(rules, decisions), end="", file=sys.stderr if args.format == "json" else sys.stdout)
    counts = ", ".join(f"{name} {count}" for name, count in sorted(result.counts.items()))
    print(f"{len(decisions)} decisions ({counts}): {replaying.outcome_counts(decisions)}", file=sys.stderr)
    return 0


def _unreadable(source: str) -> str | None:
    """Why a replay source file cannot be read, or None (stdin and kafka: are checked as they are read)."""
    if source == "-" or source.startswith("kafka:"):
        return None
    try:
        with open(source, "rb"):
            return None
    except OSError as error:
        return f"cannot read {source}: {error.strerror or type(error).__name__}"


def _file_window(args: argparse.Namespace) -> dict[str, float | None]:
    """--since/--until for a file or stdin: by event time (the lines carry no record time); a
    Kafka topic is cut by record time where it is read."""
    if args.source.startswith("kafka:"):
        return {}
    return {"since": args.since_at, "until": args.until_at}


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine settings `guard run` reads (GUARD_DEDUPE_HORIZON, GUARD_RESUME_GRACE, GUARD_ENGINE), read the
    same way, so that a replay decides what the live guard decides, with the engine it runs; and the workspace
    of the events (--workspace, else GUARD_TOPIC_WORKSPACES' for a kafka: topic)."""
    from guard.runtime.settings import guard_settings_from_env

    guard = guard_settings_from_env()
    topic = args.source.removeprefix("kafka:") if args.source.startswith("kafka:") else None
    if args.workspace is not None and not re.fullmatch(WORKSPACE_ID_PATTERN, args.workspace):
        raise ConfigError(f"--workspace {args.workspace[:40]!r} is not a workspace id, e.g. ws_acme")
    workspace = args.workspace or (guard.topic_workspaces.get(topic) if topic is not None else None)
    return {
        "dedupe_horizon": guard.dedupe_horizon,
        "resume_grace": guard.resume_grace,
        "workspace": workspace,
        "kinds": guard.engine_kinds(),
    }


def _replay_source(args: argparse.Namespace):  # noqa: ANN202
    from guard.tools import replay as replaying

    if args.source.startswith("kafka:"):
        from guard.runtime.settings import kafka_settings_from_env

        since = int(args.since_at * 1000) if args.since_at is not None else 0
        until = int(args.until_at * 1000) if args.until_at is not None else None
        settings = kafka_settings_from_env()  # before reading: a ConfigError, not a traceback quoting the input
        return replaying.kafka_records(settings, args.source.removeprefix("kafka:"), since, until)
    return replaying.jsonl_records(args.source)


@contextlib.contextmanager
def _progress():  # noqa: ANN202
    """A progress callback drawing on stderr, or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.completed:,.0f} records"),
        TextColumn("{task.speed} /s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay", total=None)
        yield lambda count: bar.advance(task, count)


def add(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="what the rules would have done over a history (no API calls)")
    replay.add_argument(
        "source", help="a JSONL file of events (gzip ok), - for stdin, or kafka:TOPIC (KAFKA_* settings)"
    )
    replay.add_argument("--rules", type=Path, default=Path("rules"), help="rule file or directory (default: rules)")
    replay.add_argument(
        "--format", choices=("table", "json"), default="table", help="table, or JSON lines of audit events"
    )
    replay.add_argument("--report", type=Path, help="write an HTML report with a timeline per campaign that fired")
    replay.add_argument(
        "--since",
        help="only from this ISO time or duration back from now (2h): record time of a kafka: topic, event time "
        "of a file's lines",
    )
    replay.add_argument("--until", help="only up to this ISO time or duration back from now (as --since)")
    replay.add_argument("--campaign", help="show only this campaign's decisions")
    replay.add_argument(
        "--workspace", help="the workspace of events without workspaceId (default: the topic's GUARD_TOPIC_WORKSPACES)"
    )
    replay.add_argument("--why", action="store_true", help="with --campaign: how close each rule came to firing for it")
    replay.set_defaults(func=_replay)
