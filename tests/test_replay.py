"""`guard replay`: the live engine over a history, deterministic, with table, JSON and HTML output."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

from guard.cli import main
from guard.generate import generate

RULES = Path(__file__).parent.parent / "rules"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    traffic = generate(seed=3, campaigns=30, bad=4, sends=(1500, 3000))
    path = tmp_path_factory.mktemp("replay") / "events.jsonl.gz"
    with gzip.open(path, "wb") as out:
        for record in traffic.records:
            out.write(record.value + b"\n")
        out.write(b"this line is not an event\n")
    return path, traffic


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestReplay:
    def test_json_output_is_byte_identical_across_runs(self, history, capsys) -> None:  # noqa: ANN001
        """Same input, same rules: the same bytes, so replays can be diffed and stored."""
        path, _ = history
        first = run(["replay", str(path), "--rules", str(RULES), "--format", "json"], capsys)
        second = run(["replay", str(path), "--rules", str(RULES), "--format", "json"], capsys)
        assert first[0] == 0 and first[1] == second[1] and first[1]

    def test_json_lines_are_audit_events_of_the_pauses_the_bad_campaigns_would_get(self, history, capsys) -> None:  # noqa: ANN001
        """Each line has the live audit shape; the pauses fall on the campaigns that turned bad, after they turned."""
        path, traffic = history
        _, out, err = run(["replay", str(path), "--rules", str(RULES), "--format", "json"], capsys)
        events = [json.loads(line) for line in out.splitlines()]
        pauses = [e for e in events if e["rule"]["action"] == "pause"]
        assert {e["outcome"] for e in events} == {"fired"}
        assert pauses and {e["campaign_id"] for e in pauses} <= set(traffic.bad)
        for event in pauses:
            turned = traffic.bad[event["campaign_id"]]
            assert event["timings"]["event_time"] >= _iso(turned)
        assert "malformed 1" in err

    def test_prints_a_readable_table_by_default(self, history, capsys) -> None:  # noqa: ANN001
        """The table has a header and one row per decision with value vs threshold."""
        path, _ = history
        _, out, _ = run(["replay", str(path), "--rules", str(RULES)], capsys)
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["CAMPAIGN", "RULE", "ACTION"]
        assert rows and all(row.startswith("camp_") for row in rows)
        assert any("hard-bounce-rate" in row and "4.00%" in row and "/150" in row for row in rows)

    def test_writes_an_html_report_with_a_timeline_per_campaign_that_fired(self, history, tmp_path, capsys) -> None:  # noqa: ANN001
        """One section with an SVG plot per campaign with a decision."""
        path, _ = history
        report = tmp_path / "report.html"
        _, out, _ = run(
            ["replay", str(path), "--rules", str(RULES), "--format", "json", "--report", str(report)], capsys
        )
        campaigns = {json.loads(line)["campaign_id"] for line in out.splitlines()}
        page = report.read_text()
        assert page.count("<section>") == len(campaigns) and page.count("<svg") == len(campaigns)
        assert all(f"<h2>{campaign}</h2>" in page for campaign in campaigns)

    def test_reads_stdin_and_reports_from_a_spooled_copy(self, history, tmp_path) -> None:  # noqa: ANN001
        """`-` reads stdin (gzip detected); the report still gets its second pass."""
        path, _ = history
        report = tmp_path / "report.html"
        command = [
            sys.executable,
            "-m",
            "guard.cli",
            "replay",
            "-",
            "--rules",
            str(RULES),
            "--format",
            "json",
            "--report",
            str(report),
        ]
        piped = subprocess.run(command, input=path.read_bytes(), capture_output=True, check=True)
        direct = subprocess.run(command[:4] + [str(path)] + command[5:], capture_output=True, check=True)
        assert piped.stdout == direct.stdout
        assert report.read_text().count("<svg") >= 1

    def test_a_replay_without_decisions_says_so(self, tmp_path, capsys) -> None:  # noqa: ANN001
        """A quiet history prints only the header and a zero count."""
        quiet = tmp_path / "quiet.jsonl"
        quiet.write_bytes(b"".join(r.value + b"\n" for r in generate(seed=1, campaigns=3, bad=0).records))
        code, out, err = run(["replay", str(quiet), "--rules", str(RULES), "--format", "json"], capsys)
        assert (code, out) == (0, "")
        assert err.startswith("0 decisions")


def _iso(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()
