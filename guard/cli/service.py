"""`guard run` and `guard ingest`: the two services."""

from __future__ import annotations

import argparse
import asyncio
import gc

from guard.cli.common import print_error, rules_problem
from guard.errors import ConfigError, GuardError
from guard.rules import RuleFileError, load_rules


def _run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from guard.runtime.service import Service
    from guard.runtime.settings import Settings
    from guard.runtime.signals import run_until_signalled
    from guard.telemetry.logs import configure_logging

    try:
        settings = Settings.from_env()
        rules = load_rules(settings.guard.rules)
        service = Service(settings, rules)  # GUARD_ENGINE=compiled without the compiled core: a ConfigError
    except ConfigError as error:
        print_error(str(error))
        return 2
    except RuleFileError as error:
        print_error(rules_problem(settings.guard.rules, error, "GUARD_RULES"))
        return 2
    configure_logging(settings.guard.log_level)
    # start-up's objects (modules, rules, settings) live as long as the process: kept out of the collector's full
    # passes, which would walk them again and again and stall the event loop (p99 decision latency, bench/RESULTS.md)
    gc.freeze()
    try:
        asyncio.run(run_until_signalled(service))
    except GuardError as error:  # Kafka not reachable in time, or refusing the idempotent producer
        print_error(str(error))
        return 2
    except KafkaError as error:  # the brokers went away between answering and starting
        print_error(f"cannot start on Kafka at {settings.kafka.bootstrap_servers}: {error or type(error).__name__}")
        return 2
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from guard.ingest.app import Ingest, IngestConfig
    from guard.runtime.signals import run_until_signalled
    from guard.telemetry.logs import configure_logging

    try:
        config = IngestConfig.from_env()
    except ConfigError as error:
        print_error(str(error))
        return 2
    configure_logging(config.guard.log_level)
    try:
        asyncio.run(run_until_signalled(Ingest(config)))
    except GuardError as error:  # its port not to be had
        print_error(str(error))
        return 2
    return 0


def add(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("run", help="run the service (settings from the environment, see README)").set_defaults(
        func=_run
    )
    commands.add_parser(
        "ingest", help="serve signed Leadterra webhooks and ARF complaints into Kafka (settings: README)"
    ).set_defaults(func=_ingest)
