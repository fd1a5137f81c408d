"""guard run | ingest | validate | schema | audit-schema | replay | decisions | exempt | test | generate | demo |
standin"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import traceback
from datetime import UTC
from pathlib import Path
from typing import Any

from guard.audit import audit_json_schema
from guard.errors import ConfigError, GuardError
from guard.redact import redact
from guard.rules import RuleFileError, load_rules
from guard.rules.models import RuleFile


def _run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from guard.logs import configure_logging
    from guard.service import Service, run_until_signalled
    from guard.settings import Settings

    try:
        settings = Settings.from_env()
        rules = load_rules(settings.guard.rules)
    except ConfigError as error:
        _error(str(error))
        return 2
    except RuleFileError as error:
        _error(f"invalid rules:\n{error}")
        return 2
    configure_logging(settings.guard.log_level)
    try:
        asyncio.run(run_until_signalled(Service(settings, rules)))
    except GuardError as error:  # Kafka not reachable in time, or refusing the idempotent producer
        _error(str(error))
        return 2
    except KafkaError as error:  # the brokers went away between answering and starting
        _error(f"cannot start on Kafka at {settings.kafka.bootstrap_servers}: {error or type(error).__name__}")
        return 2
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from guard.ingest.app import Ingest, IngestConfig, run_until_signalled
    from guard.logs import configure_logging

    try:
        config = IngestConfig.from_env()
    except ConfigError as error:
        print(f"guard: {error}", file=sys.stderr)
        return 2
    configure_logging(config.guard.log_level)
    asyncio.run(run_until_signalled(Ingest(config)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.paths:
        try:
            rules = load_rules(path)
        except RuleFileError as error:
            print(error, file=sys.stderr)
            failed = True
            continue
        print(f"{path}: {len(rules.rules)} rules OK ({', '.join(rule.name for rule in rules.rules)})")
        if args.explain:
            from guard.explain import explain_rules

            print("".join(f"  {line}\n" for line in explain_rules(rules)), end="")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(RuleFile.model_json_schema(by_alias=True), indent=2))
    return 0


def _audit_schema(args: argparse.Namespace) -> int:
    print(json.dumps(audit_json_schema(), indent=2))
    return 0


def _error(message: str) -> None:
    """A CLI error message, through the redaction point like every other output."""
    print(redact(f"guard: {message}"), file=sys.stderr)


def _replay(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    try:
        return _replay_to_stdout(args)
    except ConfigError as error:
        _error(str(error))
        return 2
    except (KafkaError, OSError) as error:
        _error(f"cannot read {args.source}: {error or type(error).__name__}")
        return 1


def _replay_to_stdout(args: argparse.Namespace) -> int:
    from guard import replay as replaying
    from guard.report import Timelines, render_report
    from guard.why import ClosestApproach

    try:
        rules = load_rules(args.rules)
        options = _engine_options(args)
    except RuleFileError as error:
        _error(f"invalid rules:\n{error}")
        return 2
    except ConfigError as error:
        print(f"guard: {error}", file=sys.stderr)
        return 2
    if args.why and not args.campaign:
        _error("--why needs --campaign CAMPAIGN_ID: it explains one campaign")
        return 2
    if problem := _unreadable(args.source):
        _error(problem)
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
                _error(str(error))
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
    return {
        "since": _timestamp(args.since) if args.since else None,
        "until": _timestamp(args.until) if args.until else None,
    }


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine settings `guard run` reads (GUARD_DEDUPE_HORIZON, GUARD_RESUME_GRACE), read the same
    way, so that a replay decides what the live guard decides; and the workspace of the events
    (--workspace, else GUARD_TOPIC_WORKSPACES' for a kafka: topic)."""
    from pydantic import ValidationError

    from guard.settings import GuardSettings

    try:
        guard = GuardSettings()
    except ValidationError as error:
        problems = [f"GUARD_{'_'.join(map(str, d['loc'])).upper()}: {d['msg']}" for d in error.errors()]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None
    topic = args.source.removeprefix("kafka:") if args.source.startswith("kafka:") else None
    workspace = args.workspace or (guard.topic_workspaces.get(topic) if topic is not None else None)
    return {"dedupe_horizon": guard.dedupe_horizon, "resume_grace": guard.resume_grace, "workspace": workspace}


def _replay_source(args: argparse.Namespace):  # noqa: ANN202
    from guard import replay as replaying

    if args.source.startswith("kafka:"):
        from guard.settings import kafka_settings_from_env

        since = int(_timestamp(args.since) * 1000) if args.since else 0
        until = int(_timestamp(args.until) * 1000) if args.until else None
        settings = kafka_settings_from_env()  # before reading: a ConfigError, not a traceback quoting the input
        return replaying.kafka_records(settings, args.source.removeprefix("kafka:"), since, until)
    return replaying.jsonl_records(args.source)


def _timestamp(text: str) -> float:
    from guard.events import epoch_from_iso

    epoch = epoch_from_iso(text)
    if epoch is None:
        raise SystemExit(f"guard: {text!r} is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
    return epoch


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


def _decisions(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from guard import decisions
    from guard.kafka import UnknownTopic

    campaign = args.campaign or args.campaign_option
    if args.explain and not campaign:
        _error("--explain needs a CAMPAIGN: it explains that campaign's latest decision")
        return 2
    try:
        since = _since(args.since)
        settings, topic = _audit_source(args.topic)
        folded = asyncio.run(_read_audit(settings, topic, int(since * 1000)))
    except ConfigError as error:
        _error(str(error))
        return 2
    except UnknownTopic as error:
        _error(str(error))
        return 1
    except (KafkaError, OSError) as error:
        _error(f"cannot read the audit topic: {error or type(error).__name__}")
        return 1
    filters = decisions.Filters(since, campaign, args.rule, args.outcome, args.workspace)
    found = [record for record in folded.decisions if filters.keep(record)]
    if folded.unreadable:
        print(f"{folded.unreadable} records of the audit topic are not audit events; skipped", file=sys.stderr)
    if args.explain:
        if not found:
            _error(f"no decision for {campaign} since {_iso(since)}")
            return 1
        if len(found) > 1:
            print(f"the latest of {len(found)} decisions; narrow with --rule or --since", file=sys.stderr)
        sys.stdout.write(decisions.explain(found[-1]))
        return 0
    sys.stdout.write(decisions.json_lines(found) if args.format == "json" else decisions.table(found))
    print(f"{len(found)} decisions since {_iso(since)}", file=sys.stderr)
    return 0


def _since(text: str) -> float:
    """An ISO 8601 time, or a duration back from now (`24h`, `7d`)."""
    import time

    from guard.rules.durations import parse_duration

    if text[:1].isdigit() and not any(c in text for c in "-:T"):
        try:
            return time.time() - parse_duration(text)
        except ValueError:
            pass
    return _timestamp(text)


def _audit_source(topic: str | None):  # noqa: ANN202
    from pydantic import ValidationError

    from guard.settings import GuardSettings, kafka_settings_from_env

    settings = kafka_settings_from_env()
    if topic:
        return settings, topic
    try:
        return settings, GuardSettings().audit_topic
    except ValidationError as error:
        problems = [f"GUARD_{'_'.join(map(str, d['loc'])).upper()}: {d['msg']}" for d in error.errors()]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None


async def _read_audit(settings, topic: str, since_ms: int):  # noqa: ANN001, ANN202
    from guard.decisions import fold
    from guard.kafka import read_topic

    values: list[bytes | None] = []
    async with contextlib.aclosing(read_topic(settings, topic, since_ms)) as batches:
        async for records in batches:
            values.extend(record.value for record in records)
    return fold(values)


MAX_EXEMPTION_SECONDS = 90 * 86400.0  # a longer one is a rule change: write it into the rule's `campaigns`


def _exempt(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    modes = sum(map(bool, (args.campaign, args.list, args.revoke)))
    if modes != 1:
        _error("give a CAMPAIGN (with --for and --reason), or --list, or --revoke ID")
        return 2
    try:
        settings, topic = _control_source()
        if args.list:
            return asyncio.run(_exempt_list(settings, topic))
        if args.revoke:
            return asyncio.run(_exempt_revoke(settings, topic, args.revoke))
        return asyncio.run(_exempt_add(settings, topic, args))
    except ConfigError as error:
        _error(str(error))
        return 2
    except (KafkaError, OSError) as error:
        _error(f"cannot reach the control topic: {error or type(error).__name__}")
        return 1


def _control_source():  # noqa: ANN202
    from pydantic import ValidationError

    from guard.settings import GuardSettings, kafka_settings_from_env

    settings = kafka_settings_from_env()
    try:
        return settings, GuardSettings().control_topic
    except ValidationError as error:
        problems = [f"GUARD_{'_'.join(map(str, d['loc'])).upper()}: {d['msg']}" for d in error.errors()]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None


async def _exempt_add(settings, topic: str, args: argparse.Namespace) -> int:  # noqa: ANN001
    import getpass
    import time

    from pydantic import ValidationError

    from guard import control
    from guard.exemptions import new_exemption
    from guard.rules.durations import parse_duration

    if not args.for_ or not args.reason:
        _error("an exemption needs --for (e.g. 24h) and --reason")
        return 2
    try:
        seconds = parse_duration(args.for_)
    except ValueError as error:
        _error(f"--for: {error}")
        return 2
    if not 0 < seconds <= MAX_EXEMPTION_SECONDS:
        _error("--for is more than 0 and at most 90d; for longer, exclude the campaign in the rule's `campaigns`")
        return 2
    now = time.time()
    try:
        exemption = new_exemption(
            args.campaign, seconds=seconds, reason=args.reason, by=args.by or getpass.getuser(), rule=args.rule, now=now
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in error.errors())
        _error(f"invalid exemption: {problems}")
        return 2
    if not await control.ensure_topic(settings, topic):
        _error(f"the control topic {topic!r} does not exist and cannot be created; create it (compacted)")
        return 1
    # expired exemptions are tombstoned on the way, so compaction can drop them
    expired = [e for e in (await control.read_all(settings, topic)).all() if e.expires_at.timestamp() <= now]
    records = [(exemption.key, exemption.model_dump_json().encode())] + [(e.key, None) for e in expired]
    await control.write(settings, topic, records)
    scope = f"rule {exemption.rule}" if exemption.rule else "every rule"
    print(
        f"{exemption.id}: {exemption.campaigns} exempted from {scope} until "
        f"{exemption.expires_at:%Y-%m-%d %H:%M:%S} UTC (by {exemption.by}: {exemption.reason})"
    )
    return 0


async def _exempt_list(settings, topic: str) -> int:  # noqa: ANN001
    import time

    from guard import control

    now = time.time()
    exemptions = list((await control.read_all(settings, topic)).all())
    active = [e for e in exemptions if e.expires_at.timestamp() > now]
    rows = [("ID", "CAMPAIGNS", "RULE", "UNTIL (UTC)", "BY", "REASON")]
    rows += [(e.id, e.campaigns, e.rule or "*", f"{e.expires_at:%Y-%m-%d %H:%M:%S}", e.by, e.reason) for e in active]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"{len(active)} exemptions in force ({len(exemptions) - len(active)} expired)", file=sys.stderr)
    return 0


async def _exempt_revoke(settings, topic: str, exemption_id: str) -> int:  # noqa: ANN001
    from guard import control

    known = {e.id: e for e in (await control.read_all(settings, topic)).all()}
    if exemption_id not in known:
        _error(f"no exemption {exemption_id!r} (guard exempt --list shows them)")
        return 1
    await control.write(settings, topic, [(known[exemption_id].key, None)])
    print(f"{exemption_id} revoked: {known[exemption_id].campaigns} is guarded again")
    return 0


def _test(args: argparse.Namespace) -> int:
    from guard.ruletest import RuleTestError, report, run_file

    failed = False
    for path in args.files:
        try:
            outcomes = run_file(path)
        except (RuleTestError, RuleFileError) as error:
            print(error, file=sys.stderr)
            failed = True
            continue
        print(report(path, outcomes, verbose=args.verbose))
        failed = failed or not all(outcome.passed for outcome in outcomes)
    return 1 if failed else 0


def _generate(args: argparse.Namespace) -> int:
    import gzip

    from guard.generate import generate

    if problem := _traffic_problem(args):
        _error(problem)
        return 2
    traffic = generate(args.seed, args.campaigns, args.bad, duration=args.duration)
    opener = gzip.open if str(args.out).endswith(".gz") else open
    try:
        with opener(args.out, "wb") as out:
            for record in traffic.records:
                out.write(record.value + b"\n")
    except OSError as error:
        _error(f"cannot write {args.out}: {error.strerror or error}")
        return 2
    bad = ", ".join(f"{c} at {_iso(t)}" for c, t in sorted(traffic.bad.items()))
    print(
        f"{len(traffic.records)} events for {args.campaigns} campaigns; turning bad: {bad or 'none'}", file=sys.stderr
    )
    return 0


def _traffic_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with --campaigns/--bad/--duration of `generate` and `demo`, or None."""
    if args.campaigns < 1:
        return f"--campaigns must be at least 1, got {args.campaigns}"
    if not 0 <= args.bad <= args.campaigns:
        return f"--bad must be between 0 and --campaigns ({args.campaigns}), got {args.bad}"
    if args.duration <= 0:
        return f"--duration must be above 0 seconds, got {args.duration:g}"
    return None


def _iso(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def _without_test_tools(command: str, error: ModuleNotFoundError) -> int:
    """`guard demo` and `guard standin` run the stand-ins of guard/testing, which a runtime install
    (the container image) leaves out: one clear line instead of an ImportError's traceback."""
    _error(
        f"`guard {command}` needs guard/testing and the test extra, which this installation leaves out (the "
        f"container image does): run it from a source checkout after `pip install -e '.[test]'` "
        f"(missing: {error.name})"
    )
    return 2


def _demo(args: argparse.Namespace) -> int:
    try:
        from guard.demo import run_demo
    except ModuleNotFoundError as error:
        return _without_test_tools("demo", error)

    if problem := _traffic_problem(args):
        _error(problem)
        return 2
    try:
        load_rules(args.rules)  # before the broker starts: a wrong path is one line
    except RuleFileError as error:
        _error(f"invalid rules (--rules):\n{error}")
        return 2
    return asyncio.run(
        run_demo(duration=args.duration, campaigns=args.campaigns, bad=args.bad, seed=args.seed, rules_path=args.rules)
    )


def _standin(args: argparse.Namespace) -> int:
    try:
        from guard.testing.leadterra import serve
    except ModuleNotFoundError as error:
        return _without_test_tools("standin", error)

    try:
        asyncio.run(serve(args.host, args.port, args.api_key, args.create_unknown))
    except KeyboardInterrupt:
        pass
    except OSError as error:  # the port is taken, or the address is not this host's
        _error(f"cannot serve on {args.host}:{args.port}: {error.strerror or error}")
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="guard", description="Pauses Leadterra campaigns when rules fire.")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the service (settings from the environment, see README)").set_defaults(
        func=_run
    )
    commands.add_parser(
        "ingest", help="serve signed Leadterra webhooks and ARF complaints into Kafka (settings: README)"
    ).set_defaults(func=_ingest)
    validate = commands.add_parser("validate", help="check rule files; exit 1 on any problem")
    validate.add_argument("paths", nargs="+", type=Path, help="rule files or directories")
    validate.add_argument(
        "--explain", action="store_true", help="say for each rule, in counts of events, when it fires"
    )
    validate.set_defaults(func=_validate)
    commands.add_parser("schema", help="print the JSON Schema of a rule file").set_defaults(func=_schema)
    commands.add_parser("audit-schema", help="print the JSON Schema of audit events").set_defaults(func=_audit_schema)
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
        "--since", help="only from this ISO time: record time of a kafka: topic, event time of a file's lines"
    )
    replay.add_argument("--until", help="only up to this ISO time (as --since)")
    replay.add_argument("--campaign", help="show only this campaign's decisions")
    replay.add_argument(
        "--workspace", help="the workspace of events without workspaceId (default: the topic's GUARD_TOPIC_WORKSPACES)"
    )
    replay.add_argument("--why", action="store_true", help="with --campaign: how close each rule came to firing for it")
    replay.set_defaults(func=_replay)
    decisions = commands.add_parser("decisions", help="what the guard decided, read from the audit topic")
    decisions.add_argument("campaign", nargs="?", help="only this campaign (an id or a glob)")
    decisions.add_argument("--campaign", dest="campaign_option", help="the same as CAMPAIGN")
    decisions.add_argument("--since", default="7d", help="an ISO time, or a duration back from now (default 7d)")
    decisions.add_argument("--rule", help="only this rule (a name or a glob)")
    decisions.add_argument(
        "--outcome",
        choices=("fired", "paused", "already_paused", "not_running", "dry_run", "failed", "exempted"),
        help="only decisions with this outcome (`fired`: not settled yet)",
    )
    decisions.add_argument("--workspace", help="only this Leadterra workspace")
    decisions.add_argument("--format", choices=("table", "json"), default="table", help="table, or JSON lines")
    decisions.add_argument("--explain", action="store_true", help="with CAMPAIGN: its latest decision in full")
    decisions.add_argument("--topic", help="the audit topic (default: GUARD_AUDIT_TOPIC, else guard.audit)")
    decisions.set_defaults(func=_decisions)
    exempt = commands.add_parser(
        "exempt", help="keep a campaign running despite the rules, for a while (the control topic)"
    )
    exempt.add_argument("campaign", nargs="?", help="a campaign id, or a glob such as 'camp_seed_*'")
    exempt.add_argument("--for", dest="for_", metavar="DURATION", help="how long, e.g. 24h (at most 90d)")
    exempt.add_argument("--reason", help="why: shown in the audit and in --list")
    exempt.add_argument("--rule", help="only from this rule (a name or a glob); default every rule")
    exempt.add_argument("--by", help="who asks (default: the OS user)")
    exempt.add_argument("--list", action="store_true", help="the exemptions in force")
    exempt.add_argument("--revoke", metavar="ID", help="end an exemption now")
    exempt.set_defaults(func=_exempt)
    test = commands.add_parser("test", help="run rule tests (YAML); exit 1 on any failure")
    test.add_argument("files", nargs="+", type=Path)
    test.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print every decision: when, on what counts, with what outcome",
    )
    test.set_defaults(func=_test)
    generate = commands.add_parser("generate", help="write seeded synthetic traffic as JSONL")
    generate.add_argument("out", type=Path, help="output file (.gz to compress)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--campaigns", type=int, default=20)
    generate.add_argument("--bad", type=int, default=3, help="how many campaigns turn bad")
    generate.add_argument("--duration", type=float, default=7200.0, help="seconds of sending")
    generate.set_defaults(func=_generate)
    demo = commands.add_parser("demo", help="embedded broker + Leadterra stand-in + synthetic traffic, live view")
    demo.add_argument("--duration", type=float, default=40.0, help="wall-clock seconds of traffic")
    demo.add_argument("--campaigns", type=int, default=12)
    demo.add_argument("--bad", type=int, default=3)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--rules", type=Path, default=Path("rules"), help="rule file or directory (default: rules)")
    demo.set_defaults(func=_demo)
    standin = commands.add_parser("standin", help="serve the local Leadterra stand-in (for tests and demos)")
    try:  # the container image leaves guard/testing out: then `guard standin` says so when run
        from guard.testing.leadterra import add_arguments as standin_arguments
    except ModuleNotFoundError:
        standin.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    else:
        standin_arguments(standin)
    standin.set_defaults(func=_standin)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception:  # a bug: its traceback still goes through the redaction point
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


if __name__ == "__main__":
    sys.exit(main())
