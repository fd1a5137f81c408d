"""guard run | validate | schema | audit-schema | standin"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from guard.audit import audit_json_schema
from guard.errors import ConfigError
from guard.rules import RuleFileError, load_rules
from guard.rules.models import RuleFile


def _run(args: argparse.Namespace) -> int:
    from guard.logs import configure_logging
    from guard.service import Service, run_until_signalled
    from guard.settings import Settings

    try:
        settings = Settings.from_env()
        rules = load_rules(settings.guard.rules)
    except ConfigError as error:
        print(f"guard: {error}", file=sys.stderr)
        return 2
    except RuleFileError as error:
        print(f"guard: invalid rules:\n{error}", file=sys.stderr)
        return 2
    configure_logging(settings.guard.log_level)
    asyncio.run(run_until_signalled(Service(settings, rules)))
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
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(RuleFile.model_json_schema(by_alias=True), indent=2))
    return 0


def _audit_schema(args: argparse.Namespace) -> int:
    print(json.dumps(audit_json_schema(), indent=2))
    return 0


def _standin(args: argparse.Namespace) -> int:
    from guard.testing.leadterra import main as standin_main

    return standin_main(args.standin_args)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="guard", description="Pauses Leadterra campaigns when rules fire.")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the service (settings from the environment, see README)").set_defaults(func=_run)
    validate = commands.add_parser("validate", help="check rule files; exit 1 on any problem")
    validate.add_argument("paths", nargs="+", type=Path, help="rule files or directories")
    validate.set_defaults(func=_validate)
    commands.add_parser("schema", help="print the JSON Schema of a rule file").set_defaults(func=_schema)
    commands.add_parser("audit-schema", help="print the JSON Schema of audit events").set_defaults(func=_audit_schema)
    standin = commands.add_parser("standin", help="serve the local Leadterra stand-in (for tests and demos)")
    standin.add_argument("standin_args", nargs=argparse.REMAINDER, help="--port, --api-key, --create-unknown")
    standin.set_defaults(func=_standin)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
