"""`guard replay`: the live engine over a history, deterministic, with table, JSON and HTML output."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

from guard.cli import main
from guard.rules import load_rules
from guard.testing.events import bounced, sent
from guard.tools.generate import generate

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
        assert any("hard-bounce-rate" in row and "10.41 (cusum)" in row and "since rise" in row for row in rows)

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


RESUME_T0 = 1_767_258_000.0  # 2026-01-01T09:00:00Z


def campaign_stretch(campaign_id: str, start: float, sends: int, bounce_every: int) -> list[bytes]:
    """`sends` sends half a second apart, each `bounce_every`-th followed by its hard bounce."""
    records = []
    for n in range(sends):
        records.append(sent(campaign_id, start + n / 2))
        if (n + 1) % bounce_every == 0:
            records.append(bounced(campaign_id, start + n / 2 + 0.25))
    return records


class TestResumedCampaign:
    """A campaign paused on a bad list, still for two hours, then resumed: judged on what it does after the resume."""

    RESUMED_AT = RESUME_T0 + 200 + 2 * 3600  # 400 sends take 200 s; then two hours still

    def replay_of(self, tmp_path: Path, bounce_every_after: int, capsys: pytest.CaptureFixture[str]) -> list[dict]:
        before = campaign_stretch("camp_resumed", RESUME_T0, 400, 5)  # 20% hard bounces
        after = campaign_stretch("camp_resumed", self.RESUMED_AT, 400, bounce_every_after)
        history = tmp_path / "resumed.jsonl"
        history.write_bytes(b"".join(value + b"\n" for value in before + after))
        code, out, _ = run(["replay", str(history), "--rules", str(RULES), "--format", "json"], capsys)
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]

    def test_a_cleaned_list_is_not_paused_again_after_the_resume(self, tmp_path: Path, capsys) -> None:  # noqa: ANN001
        """Resumed at 1% hard bounces: the pause before the resume, and no decision after it."""
        events = self.replay_of(tmp_path, 100, capsys)
        assert [e["rule"]["action"] for e in events][:1] == ["pause"]
        assert all(_epoch(e["timings"]["event_time"]) < self.RESUMED_AT for e in events)

    def test_a_still_bad_list_is_paused_again_on_evidence_from_after_the_resume(self, tmp_path: Path, capsys) -> None:  # noqa: ANN001
        """Resumed at 20%: a pause decision whose evidence lies entirely after the resume, which the audit shows."""
        events = self.replay_of(tmp_path, 5, capsys)
        after = [e for e in events if _epoch(e["timings"]["event_time"]) >= self.RESUMED_AT]
        assert after and after[0]["rule"]["action"] == "pause"
        evidence = after[0]["evidence"]
        assert (_epoch(evidence["episode_from"]), evidence["episode_began"]) == (self.RESUMED_AT, "resumed")
        assert _epoch(evidence["evidence_from"]) >= self.RESUMED_AT
        assert evidence["denominator"] >= (evidence["min_volume"] or evidence["numerator"])

    def test_the_table_shows_the_episode_a_decision_judges(self, tmp_path: Path, capsys) -> None:  # noqa: ANN001
        """The table's EPISODE column says `resumed` and when, for the decision after the resume."""
        self.replay_of(tmp_path, 5, capsys)  # the JSON run, for the file
        _, out, _ = run(["replay", str(tmp_path / "resumed.jsonl"), "--rules", str(RULES)], capsys)
        header, *rows = out.splitlines()
        assert header.split()[-2:] == ["FROM", "EPISODE"]
        assert any(row.endswith("resumed 2026-01-01 11:03:20") for row in rows)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _iso(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


class TestAuthorsView:
    """What a rule author reads off a replay: outcomes, the compared value, a time range, and why a campaign did not fire."""

    @pytest.fixture
    def dead_and_healthy(self, tmp_path: Path) -> Path:
        """camp_dead: 400 sends at 20% hard bounces (paused by the rate rule at 50 sends, the burst rule covered by it);
        camp_fine: 400 sends at 1%, from 10:00."""
        records = campaign_stretch("camp_dead", RESUME_T0, 400, 5) + campaign_stretch(
            "camp_fine", RESUME_T0 + 3600, 400, 100
        )
        path = tmp_path / "history.jsonl"
        path.write_bytes(b"".join(value + b"\n" for value in records))
        return path

    def test_the_table_shows_a_pause_covered_by_an_earlier_one_as_already_paused(
        self, dead_and_healthy, capsys
    ) -> None:  # noqa: ANN001
        """One pause call and one already_paused row, with the value compared (the Wilson bound) beside the rate."""
        _, out, err = run(["replay", str(dead_and_healthy), "--rules", str(RULES)], capsys)
        header, *rows = [line.split("  ") for line in out.splitlines()]
        cells = [[cell.strip() for cell in row if cell.strip()] for row in [header, *rows]]
        assert cells[0][:8] == [
            "CAMPAIGN",
            "RULE",
            "ACTION",
            "OUTCOME",
            "FIRED AT (UTC)",
            "VALUE",
            "COMPARED",
            "THRESHOLD",
        ]
        assert [row[:4] for row in cells[1:]] == [
            ["camp_dead", "hard-bounce-rate", "pause", "paused"],
            ["camp_dead", "hard-bounce-burst", "pause", "already_paused"],
        ]
        assert cells[2][5:8] == ["20.00%", "8.09% (99.9% bound)", "8.00%"]
        assert err.endswith(": 1 pause calls, 1 already paused (covered by an earlier pause, no call), 0 alerts\n")

    def test_json_and_html_say_which_decision_covered_the_other(self, dead_and_healthy, tmp_path, capsys) -> None:  # noqa: ANN001
        """JSON: `superseded_by` is the rate decision's id; HTML: the row says already_paused."""
        report = tmp_path / "report.html"
        _, out, _ = run(
            ["replay", str(dead_and_healthy), "--rules", str(RULES), "--format", "json", "--report", str(report)],
            capsys,
        )
        rate, burst = (json.loads(line) for line in out.splitlines())
        assert (rate["superseded_by"], burst["superseded_by"]) == (None, rate["decision_id"])
        page = report.read_text()
        assert "<tr><td>hard-bounce-burst</td><td>pause</td><td>already_paused</td>" in page
        assert "<tr><td>hard-bounce-rate</td><td>pause</td><td>paused</td>" in page
        assert "1 pause decision already paused" in page

    def test_the_report_reads_as_the_table_does(self, dead_and_healthy, tmp_path, capsys) -> None:  # noqa: ANN001
        """Rates in percent as in the CLI's table, a cusum against its level, one legend, counts in the singular
        where they are one, dates kept on one line."""
        report = tmp_path / "report.html"
        run(["replay", str(dead_and_healthy), "--rules", str(RULES), "--report", str(report)], capsys)
        page = report.read_text()
        assert "<td>20.00%</td><td>8.09% (99.9% bound)</td><td>8.00%</td><td>10/50</td>" in page
        assert "since rise</td>" in page and "(cusum)</td>" in page
        assert page.count("<p class=key>") == 1
        assert "1 campaign would have been paused" in page and "1 campaign with any decision" in page
        assert "white-space: nowrap" in page

    def test_the_report_draws_the_compared_bound_and_marks_min_volume(self, dead_and_healthy, tmp_path, capsys) -> None:  # noqa: ANN001
        """Rules with `confidence` compare the Wilson bound, not the raw rate: the plot draws it, greys the
        time below min_volume, and the key under the table says how to read them."""
        report = tmp_path / "report.html"
        run(["replay", str(dead_and_healthy), "--rules", str(RULES), "--report", str(report)], capsys)
        page = report.read_text()
        assert 'id="compared-bound-hard-bounce-burst"' in page
        assert 'id="below-min-volume-hard-bounce-burst-0"' in page
        assert "which is what those rules compare" in page and "min_volume" in page

    def test_since_and_until_cut_a_file_by_event_time(self, dead_and_healthy, capsys) -> None:  # noqa: ANN001
        """From 10:00 only camp_fine's hour is replayed: no decision, and the skipped events are counted."""
        _, out, err = run(
            ["replay", str(dead_and_healthy), "--rules", str(RULES), "--since", "2026-01-01T10:00:00Z"], capsys
        )
        assert out.splitlines()[1:] == []
        assert "outside 480" in err
        _, out, err = run(
            ["replay", str(dead_and_healthy), "--rules", str(RULES), "--until", "2026-01-01T09:59:00Z"], capsys
        )
        assert len(out.splitlines()) == 3 and "outside 404" in err

    def test_an_unreadable_since_is_refused(self, dead_and_healthy, capsys) -> None:  # noqa: ANN001
        """One line, exit 2, saying both forms a time may take."""
        code, out, err = run(["replay", str(dead_and_healthy), "--rules", str(RULES), "--since", "yesterday"], capsys)
        assert (code, out) == (2, "")
        assert err == (
            "guard: 'yesterday' is neither an ISO 8601 time (2026-01-01T00:00:00Z) nor a duration back from now "
            "(2h, 7d)\n"
        )

    def test_since_takes_a_duration_as_decisions_does(self, dead_and_healthy, capsys) -> None:  # noqa: ANN001
        """`--since 2h` counts back from now, with the parser `guard decisions` uses: a 2026 file is all before it."""
        code, out, err = run(["replay", str(dead_and_healthy), "--rules", str(RULES), "--since", "2h"], capsys)
        assert code == 0 and out.splitlines()[1:] == [] and "outside 884" in err

    def test_why_gives_every_rules_closest_approach_for_a_campaign_that_did_not_fire(
        self, dead_and_healthy, capsys
    ) -> None:  # noqa: ANN001
        """camp_fine fired nothing: one line per shipped rule, with its best counts or why it was never judged."""
        code, out, _ = run(
            ["replay", str(dead_and_healthy), "--rules", str(RULES), "--campaign", "camp_fine", "--why"], capsys
        )
        assert code == 0
        header, title, *lines = out.splitlines()
        assert header.startswith("CAMPAIGN") and title == "camp_fine: closest approach of each rule over 404 events"
        by_rule = dict(line.strip().split(": ", 1) for line in lines)
        assert list(by_rule) == [rule.name for rule in load_rules(RULES).rules]
        assert by_rule["hard-bounce-burst"].endswith(
            ": 1 of 50 (2.00%, 99.9% sure over 0.17%) vs threshold 8.00%; it fires at >= 10 of 50"
        )
        assert " a cusum of 1.45 against its alarm level 10.41 (" in by_rule["hard-bounce-rate"]
        assert by_rule[
            "complaint-rate"
        ] == "never judged: at most 0 sends in its window, below its min_volume of 300" or (
            by_rule["complaint-rate"].startswith("closest at")
        )
        assert by_rule["gmail-complaint-rate"] == (
            "never judged: at most 0 sends to gmail.com/googlemail.com in its window, below its min_volume of 1,000"
        )

    def test_why_needs_a_campaign(self, dead_and_healthy, capsys) -> None:  # noqa: ANN001
        code, _, err = run(["replay", str(dead_and_healthy), "--rules", str(RULES), "--why"], capsys)
        assert (code, err) == (2, "guard: --why needs --campaign CAMPAIGN_ID: it explains one campaign\n")


CUSUM_RULES = """\
groups:
  - name: bounces
    rules:
      - name: stale-list
        description: a sequential test of each send
        cusum:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
          healthy: 2%
          bad: 8%
          false_alarms: 0.1%
          campaign_size: 50000
        action: pause
"""


class TestCusumReplay:
    """A cusum rule in `guard replay`: its statistic against its alarm level, in the table, the JSON and the report."""

    def history(self, tmp_path: Path) -> tuple[Path, Path]:
        rules = tmp_path / "rules.yaml"
        rules.write_text(CUSUM_RULES)
        clean = campaign_stretch("camp_turns", RESUME_T0, 1000, 50)  # 2%: the statistic stays low
        stale = campaign_stretch("camp_turns", RESUME_T0 + 500, 400, 5)  # then 20%
        history = tmp_path / "cusum.jsonl"
        history.write_bytes(b"".join(value + b"\n" for value in clean + stale))
        return history, rules

    def test_the_json_evidence_carries_the_statistic_and_its_level(self, tmp_path: Path, capsys) -> None:  # noqa: ANN001
        """One pause after the turn, valued at the statistic, against the rule's level, over the run since it rose."""
        history, rules = self.history(tmp_path)
        _, out, _ = run(["replay", str(history), "--rules", str(rules), "--format", "json"], capsys)
        (event,) = [json.loads(line) for line in out.splitlines()]
        evidence = event["evidence"]
        assert evidence["window"] == "cusum 2% vs 8%"
        assert evidence["threshold"] == pytest.approx(14.35, abs=0.01)
        assert evidence["threshold"] <= evidence["value"] < evidence["threshold"] + math.log(0.08 / 0.02) + 0.1
        assert _epoch(evidence["evidence_to"]) >= RESUME_T0 + 500  # after the turn
        assert evidence["numerator"] >= 1 and evidence["denominator"] >= evidence["numerator"]
        assert evidence["min_volume"] is None

    def test_the_table_and_the_report_show_the_statistic(self, tmp_path: Path, capsys) -> None:  # noqa: ANN001
        history, rules = self.history(tmp_path)
        report = tmp_path / "report.html"
        _, out, _ = run(["replay", str(history), "--rules", str(rules), "--report", str(report)], capsys)
        header, row = out.splitlines()
        assert "stale-list" in row and "14.35 (cusum)" in row and "since rise" in row
        assert "cusum of 0.02 against 0.08" in report.read_text()
