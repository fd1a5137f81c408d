"""`guard validate | schema | audit-schema | test`: rule files, their schema and their tests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guard.contracts.audit import audit_json_schema
from guard.rules import RuleFileError, load_rules
from guard.rules.models import RuleFile


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
            from guard.tools.explain import explain_rules

            print("".join(f"  {line}\n" for line in explain_rules(rules)), end="")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(RuleFile.model_json_schema(by_alias=True), indent=2))
    return 0


def _audit_schema(args: argparse.Namespace) -> int:
    print(json.dumps(audit_json_schema(), indent=2))
    return 0


def _test(args: argparse.Namespace) -> int:
    from guard.tools.ruletest import RuleTestError, report, run_file

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


def add(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser("validate", help="check rule files; exit 1 on any problem")
    validate.add_argument("paths", nargs="+", type=Path, help="rule files or directories")
    validate.add_argument(
        "--explain", action="store_true", help="say for each rule, in counts of events, when it fires"
    )
    validate.set_defaults(func=_validate)
    commands.add_parser("schema", help="print the JSON Schema of a rule file").set_defaults(func=_schema)
    commands.add_parser("audit-schema", help="print the JSON Schema of audit events").set_defaults(func=_audit_schema)
    test = commands.add_parser("test", help="run rule tests (YAML); exit 1 on any failure")
    test.add_argument("files", nargs="+", type=Path)
    test.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print every decision: when, on what counts, with what outcome",
    )
    test.set_defaults(func=_test)
