"""The JVM peers of the throughput race (bench/streams.py): their samples become the race's fields,
they are skipped with a reason where Java is missing, and the report shows them beside the others.
No JVM runs here: `make bench` runs them."""

from __future__ import annotations

from typing import Any

import pytest

from bench import streams
from bench.report.throughput import throughput_section

SECOND = 1_000_000_000


def raw(mode: str = "tumbling", done: int = 1000, expect: int = 1000) -> dict[str, Any]:
    """What Race.java prints: [records, nanoTime, process CPU nanos] at the first record, at half the
    records and at the last; started 1 s before the first record."""
    return {
        "mode": mode,
        "expect": expect,
        "started_ns": 5 * SECOND,
        "first": [1, 6 * SECOND, 2 * SECOND],
        "half": [done // 2, 10 * SECOND, 8 * SECOND],
        "done": [done, 11 * SECOND, 9 * SECOND],
        "committed_ns": 12 * SECOND,
        "campaigns_over_threshold": 6,
    }


def fields(rate: float, mode: str = "tumbling") -> dict[str, Any]:
    return {
        "records": 1000,
        "rate": rate,
        "cpu_rate": rate / 2,
        "cpu_share": 1.2,
        "whole_rate": rate / 4,
        "whole_cpu_rate": rate / 8,
        "warmup_records": 500,
        "to_first_s": 2.0,
        "to_done_s": 9.0,
        "to_commit_s": 10.0,
        "finished": True,
        "window": mode,
        "campaigns_over_threshold": 6,
    }


class TestResult:
    def test_rates_are_over_the_half_after_the_warm_up(self) -> None:
        result = streams.result(raw())
        assert result["rate"] == 500  # 500 records in the last second
        assert result["cpu_rate"] == 500  # on 1 CPU second
        assert result["cpu_share"] == 1.0
        assert result["warmup_records"] == 500

    def test_whole_run_rates_start_at_the_first_record(self) -> None:
        result = streams.result(raw())
        assert result["whole_rate"] == 999 / 5
        assert result["whole_cpu_rate"] == 999 / 7

    def test_times_count_from_the_jvms_main(self) -> None:
        result = streams.result(raw())
        assert (result["to_first_s"], result["to_done_s"], result["to_commit_s"]) == (1.0, 6.0, 7.0)

    def test_a_run_cut_by_its_time_limit_is_not_finished(self) -> None:
        assert streams.result(raw(done=1000, expect=1000))["finished"]
        cut = streams.result(raw(mode="hopping", done=400, expect=1000))
        assert not cut["finished"]
        assert cut["records"] == 400
        assert cut["window"] == "hopping"

    def test_no_cpu_time_gives_no_rate_rather_than_a_crash(self) -> None:
        still = raw()
        still["done"][2] = still["half"][2]
        assert streams.result(still)["cpu_rate"] is None


class TestSkipped:
    def test_without_java_the_peers_are_skipped_with_the_reason(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))  # no java, javac or mvn
        setup = streams.prepare()
        assert setup == {"skipped": "no `java` on the PATH (Apache Kafka needs Java 17+)"}
        result = streams.contender(setup, "ring", "127.0.0.1:9", "t", "g", 10, 1.0)
        assert result == {"skipped": setup["skipped"], "group": "g"}

    def test_the_maven_pom_asks_for_kafka_streams_of_the_broker_version(self) -> None:
        pom = streams._pom()
        assert "<artifactId>kafka-streams</artifactId><version>4.1.1</version>" in pom
        assert "log4j-slf4j-impl" in pom


def results(runs: list[dict[str, Any]], hopping: dict[str, Any]) -> dict[str, Any]:
    return {"throughput": {"runs": runs, "hopping": hopping, "records": 1000, "repeats_asked": len(runs)}}


def repeat(**jvm: dict[str, Any]) -> dict[str, Any]:
    guard = {
        **fields(100_000),
        "engine": "compiled",
        "decisions": 26,
        "outcomes": {"counted": 1000},
        "loop_max_stall_s": 0.1,
    }
    return {
        "bare": fields(600_000),
        "confluent": fields(650_000),
        "guard": guard,
        "guard_python": fields(50_000),
        "quix": fields(20_000),
        **jvm,
    }


class TestReport:
    def test_the_peers_appear_beside_the_others_with_their_ratios(self) -> None:
        run = repeat(streams_tumbling=fields(200_000), streams_ring=fields(800_000, "ring"))
        run["guard_vs_streams_tumbling_cpu"] = 0.5
        run["guard_vs_streams_ring_cpu"] = 0.125
        hopping = {**fields(2_000, "hopping"), "records": 400, "finished": False, "to_done_s": 30.2}
        text = "\n".join(throughput_section(results([run], hopping)))
        assert "| Kafka Streams, 1 h tumbling, in-memory store (after warm-up) | 200,000 /s | 100,000 /s |" in text
        assert "| Kafka Streams Processor API, ring of 60 one-minute buckets per campaign (after warm-up) |" in text
        assert "(after warm-up; 1 run, stopped after 30 s: 400 records) | 2,000 /s | 1,000 /s |" in text
        assert "| 0.50 x | 0.12 x |" in text  # guard / tumbling, guard / ring
        assert "| Kafka Streams, 1 h tumbling, in-memory store | 50,000 /s | 25,000 /s | 500 | 6 |" in text

    def test_skipped_peers_say_why_in_one_line(self) -> None:
        why = {"skipped": "no `mvn` on the PATH (the broker's jars come from Maven Central)"}
        run = repeat(streams_tumbling=why, streams_ring=why)
        lines = "\n".join(throughput_section(results([run], why))).splitlines()
        skipped = [line for line in lines if "skipped: no `mvn`" in line]
        assert len(skipped) == 3  # tumbling, ring, hopping
        assert not any("failed" in line for line in lines)

    def test_a_quix_run_cut_by_its_limit_is_noted_on_the_quix_row(self) -> None:
        run = repeat(streams_tumbling=fields(1), streams_ring=fields(1))
        run["quix"] = {**fields(20_000), "records": 700, "finished": False}
        lines = "\n".join(throughput_section(results([run], {}))).splitlines()
        quix = next(line for line in lines if "Quix Streams, 1 h tumbling" in line)
        assert "stopped at the time limit after 700 records" in quix

    def test_a_run_from_before_the_peers_has_no_rows_for_them(self) -> None:
        """`--report-only` over an older results.json: no "failed" rows for contenders it never ran."""
        run = repeat()
        run["quix"] = {**fields(20_000), "records": 700, "finished": False}
        lines = "\n".join(throughput_section(results([run], {}))).splitlines()
        assert not any("Kafka Streams" in line or "failed" in line for line in lines)
        quix = next(line for line in lines if "Quix Streams, 1 h tumbling" in line)
        assert "stopped at the time limit after 700 records" in quix
