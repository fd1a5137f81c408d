"""`guard generate | demo | standin | dev kafka`: synthetic traffic, the demo, the Leadterra stand-in and a
local Apache Kafka."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import sys
import time
from pathlib import Path

from guard.cli.common import iso_time, print_error, rules_problem
from guard.rules import RuleFileError, load_rules


def _generate(args: argparse.Namespace) -> int:
    import gzip

    from guard.tools.generate import expected_count, plan, stream

    if problem := _traffic_problem(args):
        print_error(problem)
        return 2
    if args.senders < 0:
        print_error(f"--senders must be 0 or more, got {args.senders}")
        return 2
    specs = plan(args.seed, args.campaigns, args.bad, duration=args.duration, senders=args.senders)
    opener = gzip.open if str(args.out).endswith(".gz") else open
    written = 0
    try:
        with opener(args.out, "wb") as out:
            print(f"writing about {expected_count(specs)} events to {args.out}", file=sys.stderr, flush=True)
            for record in stream(specs, args.seed):
                out.write(record.value + b"\n")
                written += 1
    except OSError as error:
        print_error(f"cannot write {args.out}: {error.strerror or error}")
        return 2
    turning = sorted((spec.campaign_id, spec.turns_at) for spec in specs if spec.turns_at is not None)
    bad = ", ".join(f"{c} at {iso_time(t)}" for c, t in turning)
    print(f"{written} events for {args.campaigns} campaigns; turning bad: {bad or 'none'}", file=sys.stderr)
    return 0


def _produce(args: argparse.Namespace) -> int:
    from guard.cli.common import exit_code

    if not args.to.startswith("kafka:") or not args.to.removeprefix("kafka:"):
        print_error(f"the destination is kafka:TOPIC, e.g. kafka:leadterra.events, got {args.to!r}")
        return 2
    if args.source != "-":
        try:
            with open(args.source, "rb"):  # a missing file: one line before Kafka is asked anything
                pass
        except OSError as error:
            print_error(f"cannot read {args.source}: {error.strerror or type(error).__name__}")
            return 2
    return exit_code(lambda: _produce_to_kafka(args), f"cannot write {args.to}")


def _produce_to_kafka(args: argparse.Namespace) -> int:
    from guard.runtime.settings import kafka_settings_from_env
    from guard.tools.produce import produce
    from guard.tools.replay import jsonl_records

    settings = kafka_settings_from_env()
    topic = args.to.removeprefix("kafka:")
    lines = (value for value, _ in jsonl_records(args.source))
    produced = asyncio.run(produce(settings, topic, lines))
    unkeyed = f" ({produced.unkeyed} without a campaign id: the guard dead-letters them)" if produced.unkeyed else ""
    print(f"{produced.written} records written to {topic}, keyed by campaign id{unkeyed}", file=sys.stderr)
    return 0


def _traffic_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with --campaigns/--bad/--duration of `generate` and `demo`, or None."""
    if args.campaigns < 1:
        return f"--campaigns must be at least 1, got {args.campaigns}"
    if not 0 <= args.bad <= args.campaigns:
        return f"--bad must be between 0 and --campaigns ({args.campaigns}), got {args.bad}"
    if not 0 < args.duration < math.inf:  # NaN too: no comparison holds for it
        return f"--duration must be a number of seconds above 0, got {args.duration:g}"
    return None


TEST_TOOL_COMMANDS = ("demo", "standin", "dev")


def test_tools_missing() -> str | None:
    """Why `guard demo`, `guard standin` and `guard dev` are not offered here, or None: they run the stand-ins of
    guard/testing, which a runtime install (the container image) leaves out."""
    return None if importlib.util.find_spec("guard.testing") is not None else _NEEDS_TEST_TOOLS


_NEEDS_TEST_TOOLS = (
    "`guard {command}` needs guard/testing and the test extra, which this installation leaves out (the container "
    "image does): run it from a source checkout after `pip install -e '.[test]'`"
)


def _without_test_tools(command: str, error: ModuleNotFoundError) -> int:
    """guard/testing is there but a test extra is not: one clear line instead of an ImportError's traceback."""
    print_error(f"{_NEEDS_TEST_TOOLS.format(command=command)} (missing: {error.name})")
    return 2


def _demo(args: argparse.Namespace) -> int:
    try:
        from guard.tools.demo import run_demo
    except ModuleNotFoundError as error:
        return _without_test_tools("demo", error)

    if problem := _traffic_problem(args):
        print_error(problem)
        return 2
    for path, option in ((args.rules, "--rules"), (args.domain_rules, "--domain-rules")):
        try:
            load_rules(path)  # before the broker starts: a wrong path is one line
        except RuleFileError as error:
            print_error(rules_problem(path, error, option))
            return 2
    return asyncio.run(
        run_demo(
            duration=args.duration,
            campaigns=args.campaigns,
            bad=args.bad,
            seed=args.seed,
            rules_path=args.rules,
            domain_rules=args.domain_rules,
        )
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
        print_error(f"cannot serve on {args.host}:{args.port}: {error.strerror or error}")
        return 2
    return 0


def _dev_kafka(args: argparse.Namespace) -> int:
    """A local Apache Kafka, assembled from Maven Central jars as the tests' is, until Ctrl-C or SIGTERM."""
    import signal

    from guard.testing.apache_kafka import (
        KAFKA_VERSION,
        ApacheKafka,
        KafkaUnavailable,
        default_cache,
        kafka_classpath,
        missing_tools,
    )
    from guard.testing.broker import port_accepts

    if why := missing_tools():
        print_error(
            f"cannot start Apache Kafka: {why}; install Java 17+ and Maven, or try `make demo` (embedded broker)"
        )
        return 2
    if port_accepts(args.port):
        print_error(f"127.0.0.1:{args.port} is already in use; pick another with --port")
        return 2
    cache = default_cache()
    if not (cache / f"kafka-{KAFKA_VERSION}" / "lib" / ".complete").exists():
        print(
            f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {cache} (once)", file=sys.stderr, flush=True
        )
    try:
        classpath = kafka_classpath(cache=cache)
    except KafkaUnavailable as error:
        print_error(str(error))
        return 2
    broker = ApacheKafka(port=args.port, classpath=classpath)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # as Ctrl-C: the broker and its data go with this command
    try:
        broker.start(timeout=120)
        print(
            f"Apache Kafka {KAFKA_VERSION} on {broker.bootstrap_servers} (data in {broker.data_dir}, deleted on "
            "exit); Ctrl-C stops it",
            flush=True,
        )
        while broker.running:
            time.sleep(0.5)
        print_error(f"Apache Kafka stopped by itself; its log ends:\n{broker.log_tail()}")
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:  # it did not come up: the message holds its log's end
        print_error(str(error))
        return 1
    finally:
        broker.stop()


def add(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser("generate", help="write seeded synthetic traffic as JSONL")
    generate.add_argument("out", type=Path, help="output file (.gz to compress)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--campaigns", type=int, default=20)
    generate.add_argument("--bad", type=int, default=3, help="how many campaigns turn bad")
    generate.add_argument("--duration", type=float, default=7200.0, help="seconds of sending")
    generate.add_argument(
        "--senders",
        type=int,
        default=0,
        help="campaigns send from this many domains in turn (team@sender<N>.example), for rules over a sender or a "
        "domain; 0 (the default): events name no sender",
    )
    generate.set_defaults(func=_generate)
    produce = commands.add_parser("produce", help="send a JSONL history of events into a topic, keyed by campaign")
    produce.add_argument("source", help="a JSONL file of events (gzip ok; `guard generate` writes one), or - for stdin")
    produce.add_argument("to", metavar="kafka:TOPIC", help="the topic, e.g. kafka:leadterra.events (KAFKA_* settings)")
    produce.set_defaults(func=_produce)
    if test_tools_missing() is None:
        _add_test_tools(commands)


def _add_test_tools(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="embedded broker + Leadterra stand-in + synthetic traffic, live view")
    demo.add_argument("--duration", type=float, default=40.0, help="wall-clock seconds of traffic")
    demo.add_argument("--campaigns", type=int, default=12)
    demo.add_argument("--bad", type=int, default=3)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--rules", type=Path, default=Path("rules"), help="rule file or directory (default: rules)")
    demo.add_argument(
        "--domain-rules",
        type=Path,
        default=Path("rules/domains/sender-domain.yaml"),
        help="rules over a sending domain, run beside --rules (default: rules/domains/sender-domain.yaml)",
    )
    demo.set_defaults(func=_demo)
    standin = commands.add_parser("standin", help="serve the local Leadterra stand-in (for tests and demos)")
    from guard.testing.leadterra import add_arguments as standin_arguments

    standin_arguments(standin)
    standin.set_defaults(func=_standin)
    dev = commands.add_parser("dev", help="local servers for trying the guard out").add_subparsers(
        dest="server", required=True
    )
    kafka = dev.add_parser("kafka", help="a local Apache Kafka (Java 17+ and Maven), until Ctrl-C")
    kafka.add_argument("--port", type=int, default=9092, help="its port on 127.0.0.1 (default 9092)")
    kafka.set_defaults(func=_dev_kafka)
