"""`guard decisions` and `guard exempt`: what the running guard decided, and what it must leave alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from guard.cli.common import exit_code, iso_time, parse_time, print_error


def _decisions(args: argparse.Namespace) -> int:
    campaign = args.campaign or args.campaign_option
    if args.explain and not campaign:
        print_error("--explain needs a CAMPAIGN: it explains that campaign's latest decision")
        return 2
    return exit_code(lambda: _show_decisions(args, campaign), "cannot read the audit topic")


def _show_decisions(args: argparse.Namespace, campaign: str | None) -> int:
    from guard.tools import decisions

    since = parse_time(args.since)
    settings, topic = _audit_source(args.topic)
    folded = asyncio.run(_read_audit(settings, topic, int(since * 1000)))
    filters = decisions.Filters(since, campaign, args.rule, args.outcome, args.workspace)
    found = [record for record in folded.decisions if filters.keep(record)]
    if folded.unreadable:
        print(f"{folded.unreadable} records of the audit topic are not audit events; skipped", file=sys.stderr)
    if args.explain:
        if not found:
            print_error(f"no decision for {campaign} since {iso_time(since)}")
            return 1
        if len(found) > 1:
            print(f"the latest of {len(found)} decisions; narrow with --rule or --since", file=sys.stderr)
        sys.stdout.write(decisions.explain(found[-1], folded.decisions))
        return 0
    sys.stdout.write(decisions.json_lines(found) if args.format == "json" else decisions.table(found))
    print(f"{len(found)} decisions since {iso_time(since)}", file=sys.stderr)
    return 0


def _audit_source(topic: str | None):  # noqa: ANN202
    from guard.runtime.settings import guard_settings_from_env, kafka_settings_from_env

    settings = kafka_settings_from_env()
    if topic:
        return settings, topic
    return settings, guard_settings_from_env().audit_topic


async def _read_audit(settings, topic: str, since_ms: int):  # noqa: ANN001, ANN202
    from guard.runtime.kafka import PROBE_SECONDS, reach
    from guard.runtime.topics import read_topic
    from guard.tools.decisions import fold

    await reach(settings, PROBE_SECONDS)  # a broker that refuses or never answers: one line within seconds
    values: list[bytes | None] = []
    async with contextlib.aclosing(read_topic(settings, topic, since_ms)) as batches:
        async for records in batches:
            values.extend(record.value for record in records)
    return fold(values)


def _exempt(args: argparse.Namespace) -> int:
    modes = sum(map(bool, (args.campaign, args.list, args.revoke)))
    if modes != 1:
        print_error("give a CAMPAIGN (with --for and --reason), or --list, or --revoke ID")
        return 2
    return exit_code(lambda: _exempt_on_control_topic(args), "cannot reach the control topic")


def _exempt_on_control_topic(args: argparse.Namespace) -> int:
    settings, topic = _control_source()
    if args.list:
        return asyncio.run(_exempt_list(settings, topic))
    if args.revoke:
        return asyncio.run(_exempt_revoke(settings, topic, args.revoke))
    return asyncio.run(_exempt_add(settings, topic, args))


async def _read_control(settings, topic: str):  # noqa: ANN001, ANN202
    """The control topic's exemptions, once Kafka answered (a broker that refuses or never answers:
    one line within seconds)."""
    from guard.runtime import control
    from guard.runtime.kafka import PROBE_SECONDS, reach

    await reach(settings, PROBE_SECONDS)
    return await control.read_all(settings, topic)


def _control_source():  # noqa: ANN202
    from guard.runtime.settings import guard_settings_from_env, kafka_settings_from_env

    settings = kafka_settings_from_env()
    return settings, guard_settings_from_env().control_topic


async def _exempt_add(settings, topic: str, args: argparse.Namespace) -> int:  # noqa: ANN001
    import getpass
    import time

    from pydantic import ValidationError

    from guard.actions.exemptions import MAX_EXEMPTION_SECONDS, new_exemption
    from guard.rules.durations import parse_duration
    from guard.runtime import control
    from guard.runtime.internal_topics import control_topic, create_if_missing
    from guard.runtime.kafka import PROBE_SECONDS, reach
    from guard.runtime.settings import guard_settings_from_env

    if not args.for_ or not args.reason:
        print_error("an exemption needs --for (e.g. 24h) and --reason")
        return 2
    try:
        seconds = parse_duration(args.for_)
    except ValueError as error:
        print_error(f"--for: {error}")
        return 2
    if not 0 < seconds <= MAX_EXEMPTION_SECONDS:
        print_error("--for is more than 0 and at most 90d; for longer, exclude the campaign in the rule's `campaigns`")
        return 2
    now = time.time()
    try:
        exemption = new_exemption(
            args.campaign, seconds=seconds, reason=args.reason, by=args.by or getpass.getuser(), rule=args.rule, now=now
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in error.errors())
        print_error(f"invalid exemption: {problems}")
        return 2
    if exemption.rule is not None and (unmatched := _unmatched(exemption.rule)):
        print(f"guard: warning: {unmatched}", file=sys.stderr)
    await reach(settings, PROBE_SECONDS)  # a broker that refuses or never answers: one line within seconds
    replicas = guard_settings_from_env().internal_replication_factor
    if refused := await create_if_missing(settings, control_topic(topic), replicas):
        print_error(
            f"the control topic {topic!r} does not exist and cannot be created ({refused}); "
            f"create {control_topic(topic).what_to_create(replicas)}"
        )
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


def _unmatched(glob: str) -> str | None:
    """What to tell of `--rule` when it matches no rule the guard's rules (GUARD_RULES) hold: a typo exempts from
    nothing, and the campaign is paused all the same. Written anyway: the rule may be on its way."""
    import difflib
    import fnmatch

    from guard.errors import GuardError
    from guard.rules import load_rules
    from guard.runtime.settings import guard_settings_from_env

    path = guard_settings_from_env().rules
    try:
        names = sorted({rule.name for rule in load_rules(path).rules})
    except (GuardError, OSError) as error:
        why = str(error).splitlines()[0]
        return f"--rule {glob!r} is not checked: the rules at {path} (GUARD_RULES) are not readable here ({why})"
    if any(fnmatch.fnmatchcase(name, glob) for name in names):
        return None
    close = difflib.get_close_matches(glob, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"they are {', '.join(names)}."
    return (
        f"--rule {glob!r} matches none of the {len(names)} rules at {path}: {hint} "
        "Written all the same: it covers a rule of that name once there is one."
    )


async def _exempt_list(settings, topic: str) -> int:  # noqa: ANN001
    import time

    from guard.actions.exemptions import KEY_PREFIX
    from guard.contracts.events import UNSAFE_CHARACTERS

    now = time.time()
    store = await _read_control(settings, topic)
    exemptions = store.all()
    active = [e for e in exemptions if e.expires_at.timestamp() > now]
    rows = [("ID", "CAMPAIGNS", "RULE", "UNTIL (UTC)", "BY", "REASON")]
    rows += [(e.id, e.campaigns, e.rule or "*", f"{e.expires_at:%Y-%m-%d %H:%M:%S}", e.by, e.reason) for e in active]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for key_id, why in store.skipped.items():
        shown = UNSAFE_CHARACTERS.sub("?", key_id)  # a key is anyone's bytes: not the terminal's controls
        print_error(f"{KEY_PREFIX}{shown}: skipped, it exempts nothing ({why}); --revoke {shown} removes it")
    print(f"{len(active)} exemptions in force ({len(exemptions) - len(active)} expired)", file=sys.stderr)
    return 0


async def _exempt_revoke(settings, topic: str, exemption_id: str) -> int:  # noqa: ANN001
    from guard.actions.exemptions import KEY_PREFIX
    from guard.runtime import control

    store = await _read_control(settings, topic)
    known = {e.id: e for e in store.all()}
    key = (KEY_PREFIX + exemption_id).encode()
    if exemption_id in store.skipped:  # a record the guard skips: removed, so compaction can drop it
        await control.write(settings, topic, [(key, None)])
        print(f"{KEY_PREFIX}{exemption_id} removed (it exempted nothing)")
        return 0
    if exemption_id not in known:
        print_error(f"no exemption {exemption_id!r} (guard exempt --list shows them)")
        return 1
    await control.write(settings, topic, [(key, None)])
    print(f"{exemption_id} revoked: {known[exemption_id].campaigns} is guarded again")
    return 0


def add(commands: argparse._SubParsersAction) -> None:
    decisions = commands.add_parser("decisions", help="what the guard decided, read from the audit topic")
    decisions.add_argument("campaign", nargs="?", help="only this campaign (an id or a glob)")
    decisions.add_argument("--campaign", dest="campaign_option", help="the same as CAMPAIGN")
    decisions.add_argument("--since", default="7d", help="an ISO time, or a duration back from now (default 7d)")
    decisions.add_argument("--rule", help="only this rule (a name or a glob)")
    decisions.add_argument(
        "--outcome",
        choices=(
            "fired",
            "paused",
            "already_paused",
            "not_running",
            "dry_run",
            "failed",
            "exempted",
            "superseded",
            "alert",
        ),
        help="only decisions with this outcome (`fired`: not settled yet; `alert`: an alert, which calls nobody)",
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
