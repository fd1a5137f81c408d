"""Rules scoped to workspaces (`workspaces:`), and the workspace of a topic (GUARD_TOPIC_WORKSPACES)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from guard.cli import main
from guard.contracts.events import Event, MalformedEvent, Signal, in_workspace
from guard.engine import Engine
from guard.engine.snapshot import restore, snapshot
from guard.rules import Rule, RuleFileError, RuleSet
from guard.rules.loader import parse_rules
from guard.runtime.settings import GuardSettings
from guard.testing.events import envelope
from guard.tools.explain import explain
from guard.tools.replay import replay

T0 = 1_700_000_000.0


def rule(name: str = "r", **fields: object) -> Rule:
    """Three bounces within an hour, scoped as told."""
    return Rule.model_validate(
        {"name": name, "description": "test rule", "count": "bounced", "window": "1h", "threshold": 3, **fields}
    )


def bounce(time: float, campaign: str = "c1", workspace: str | None = None) -> Event:
    return Event(Signal.BOUNCED, campaign, time, workspace_id=workspace)


def fired(engine: Engine, campaign: str, workspace: str | None, count: int = 3, start: float = T0) -> list[str]:
    """The rules that fire on `count` bounces of `campaign`, its events naming `workspace`."""
    decisions = [d for i in range(count) for d in engine.process(bounce(start + i, campaign, workspace))]
    return [decision.rule.name for decision in decisions]


class TestScopedRules:
    @pytest.mark.parametrize(
        ("workspace", "applies"),
        [("ws_acme", True), ("ws_eu_1", True), ("ws_eu_test", False), ("ws_beta", False), (None, False)],
    )
    def test_a_rule_applies_to_campaigns_of_its_workspaces_only(self, workspace: str | None, applies: bool) -> None:
        """include ws_acme and ws_eu_*, exclude ws_eu_test; a campaign in no workspace is in none of them."""
        scoped = rule(workspaces={"include": ["ws_acme", "ws_eu_*"], "exclude": "ws_eu_test"})
        engine = Engine(RuleSet(rules=(scoped,)))
        assert fired(engine, "c1", workspace) == (["r"] if applies else [])

    def test_an_exclude_only_filter_still_needs_a_workspace(self) -> None:
        """`{exclude: [ws_test]}`: every named workspace but ws_test; not a campaign whose events name none."""
        engine = Engine(RuleSet(rules=(rule(workspaces={"exclude": ["ws_test"]}),)))
        assert [fired(engine, c, ws) for c, ws in (("c1", "ws_a"), ("c2", "ws_test"), ("c3", None))] == [["r"], [], []]

    def test_scoped_and_unscoped_rules_side_by_side(self) -> None:
        """The unscoped rule covers every campaign, the scoped one its workspace's, both with campaigns filters."""
        everyone, acme_vip = rule("everyone"), rule("acme-vip", workspaces="ws_acme", campaigns={"include": "vip-*"})
        engine = Engine(RuleSet(rules=(everyone, acme_vip)))
        assert fired(engine, "vip-1", "ws_acme") == ["everyone", "acme-vip"]
        assert fired(engine, "c2", "ws_acme") == ["everyone"]
        assert fired(engine, "vip-2", "ws_beta") == ["everyone"]

    def test_a_workspace_named_later_brings_its_rules_with_the_evidence_so_far(self) -> None:
        """Two bounces that name no workspace, then one naming ws_acme: the campaign is ws_acme's, three bounces."""
        engine = Engine(RuleSet(rules=(rule(workspaces=["ws_acme"]),)))
        assert fired(engine, "c1", None, count=2) == []
        assert [d.rule.name for d in engine.process(bounce(T0 + 2, "c1", "ws_acme"))] == ["r"]

    def test_an_event_naming_no_workspace_keeps_the_campaigns(self) -> None:
        """A campaign known in ws_acme stays there when some of its events name no workspace."""
        engine = Engine(RuleSet(rules=(rule(workspaces=["ws_acme"]),)))
        engine.process(bounce(T0, "c1", "ws_acme"))
        assert fired(engine, "c1", None, count=2, start=T0 + 1) == ["r"]

    def test_a_restart_naming_no_workspace_keeps_the_campaigns(self) -> None:
        """campaign.started begins a new episode of the same campaign, in the workspace it was in."""
        engine = Engine(RuleSet(rules=(rule(workspaces=["ws_acme"]),)))
        engine.process(bounce(T0, "c1", "ws_acme"))
        engine.process(Event(Signal.STARTED, "c1", T0 + 1))
        assert fired(engine, "c1", None, count=3, start=T0 + 2) == ["r"]

    def test_a_campaign_named_in_another_workspace_drops_the_rules_of_the_first(self) -> None:
        """Latest wins: a campaign whose events move to ws_beta is no longer judged by ws_acme's rule."""
        engine = Engine(RuleSet(rules=(rule(workspaces=["ws_acme"]),)))
        fired(engine, "c1", "ws_acme", count=2)
        assert fired(engine, "c1", "ws_beta", count=3, start=T0 + 2) == []

    def test_a_reload_applies_a_new_workspace_scope_to_tracked_campaigns(self) -> None:
        """Campaigns keep their workspace across a reload: the reloaded scope judges them at their next event."""
        engine = Engine(RuleSet(rules=(rule(),)))
        fired(engine, "c1", "ws_acme", count=1)
        fired(engine, "c2", "ws_beta", count=1)
        engine.set_rules(RuleSet(rules=(rule(workspaces=["ws_acme"]),)))
        assert fired(engine, "c1", None, count=2, start=T0 + 1) == ["r"]
        assert fired(engine, "c2", None, count=2, start=T0 + 1) == []

    def test_a_snapshot_keeps_each_campaigns_workspace(self) -> None:
        """Restored, a campaign of ws_acme is still judged by ws_acme's rule, its later events naming none."""
        rules = RuleSet(rules=(rule(workspaces=["ws_acme"]),))
        engine = Engine(rules)
        fired(engine, "c1", "ws_acme", count=2)
        restored = Engine(rules)
        restore(snapshot(engine, rules), rules, restored)
        assert fired(restored, "c1", None, count=1, start=T0 + 2) == ["r"]

    def test_a_rule_without_workspaces_keeps_its_version(self) -> None:
        """The new key changes no existing rule's version (audits and snapshots name it); giving it does."""
        assert rule().version == "8d4b76eef460"  # as before rules could name workspaces
        assert rule(workspaces=["ws_acme"]).version != rule().version

    def test_explain_names_the_workspaces(self) -> None:
        text = explain(rule(workspaces={"include": ["ws_acme"], "exclude": ["ws_acme_test"]}))
        assert text.endswith("; workspaces ws_acme only; not workspaces ws_acme_test")
        assert explain(rule(workspaces={"exclude": "ws_t"})).endswith(
            "; campaigns of a named workspace; not workspaces ws_t"
        )


RULE_FILE = """\
groups:
  - name: g
    rules:
      - name: spike
        description: d
        count: complained
        window: 1h
        threshold: 3
{extra}
"""


def problems(extra: str) -> list[str]:
    try:
        parse_rules([("rules.yaml", RULE_FILE.format(extra=extra))])
    except RuleFileError as error:
        return error.problems
    return []


class TestLoaderMessages:
    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                "        workspace: [ws_acme]",
                "rules.yaml:9: rule spike: workspace: unknown key 'workspace', did you mean 'workspaces'?",
            ),
            (
                "        workspaces: {includ: [ws_acme]}",
                "rules.yaml:9: rule spike: workspaces.includ: unknown key 'includ', did you mean 'include'? "
                "(allowed: include, exclude)",
            ),
            (
                "        workspaces: []",
                "rules.yaml:9: rule spike: workspaces.include: needs at least 1 item(s), got none; "
                "e.g. `workspaces: [ws_acme, 'ws_eu_*'] (or {include: [...], exclude: [...]})`",
            ),
            (
                '        workspaces: [ws_acme, ""]',
                "rules.yaml:9: rule spike: workspaces.include.1: must not be empty",
            ),
            (
                '        workspaces: ["ws_acme\\n"]',
                "rules.yaml:9: rule spike: workspaces.include.0: 'ws_acme\\n' holds control or bidirectional "
                "formatting characters: it could match nothing",
            ),
            (
                '        campaigns: {include: ["camp_\\u202e*"]}',
                "rules.yaml:9: rule spike: campaigns.include.0: 'camp_\\u202e*' holds control or bidirectional",
            ),
            (
                "        workspaces: [ws_acme, 7]",
                "rules.yaml:9: rule spike: workspaces.include.1: expected text, got 7 (quote it: '7'); "
                "e.g. `workspaces: [ws_acme, 'ws_eu_*'] (or {include: [...], exclude: [...]})`",
            ),
        ],
    )
    def test_a_wrong_workspaces_filter_is_one_clear_line(self, extra: str, expected: str) -> None:
        [problem] = problems(extra)
        assert problem.startswith(expected)

    @pytest.mark.parametrize("extra", ["        workspaces: ws_acme", "        workspaces: [ws_acme]"])
    def test_a_bare_id_or_list_is_the_include_list(self, extra: str) -> None:
        rules = parse_rules([("rules.yaml", RULE_FILE.format(extra=extra))])
        assert rules.rules[0].workspaces is not None and rules.rules[0].workspaces.include == ("ws_acme",)

    @pytest.mark.parametrize("workspaces", [["ws_acme"], "ws_acme", {"include": ["ws_*"], "exclude": ["ws_t"]}])
    def test_the_schema_takes_every_form(self, workspaces: object, capsys: pytest.CaptureFixture[str]) -> None:
        """`guard schema` (for editors) accepts what the loader accepts."""
        assert main(["schema"]) == 0
        schema = json.loads(capsys.readouterr().out)
        rule = {"name": "r", "description": "d", "count": {"signal": "bounced"}, "window": "1h", "threshold": 3}
        jsonschema.validate({"groups": [{"name": "g", "rules": [{**rule, "workspaces": workspaces}]}]}, schema)


class TestTopicWorkspaces:
    def test_pairs_map_topics_to_workspaces(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GUARD_INPUT_TOPICS", "leadterra.acme,leadterra.beta")
        monkeypatch.setenv("GUARD_TOPIC_WORKSPACES", " leadterra.acme=ws_acme, leadterra.beta = ws_beta ")
        assert GuardSettings().topic_workspaces == {"leadterra.acme": "ws_acme", "leadterra.beta": "ws_beta"}

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("leadterra.acme", "'leadterra.acme' is not `topic=workspace_id`"),
            ("leadterra.acme=ws acme", "'leadterra.acme=ws acme' is not `topic=workspace_id`"),
            ("leadterra.acme=ws_a,leadterra.acme=ws_b", "topic leadterra.acme is mapped to two workspaces"),
            ("leadterra.other=ws_a", "GUARD_TOPIC_WORKSPACES maps leadterra.other, not in GUARD_INPUT_TOPICS"),
        ],
    )
    def test_a_wrong_mapping_is_refused_naming_the_pair(
        self, monkeypatch: pytest.MonkeyPatch, value: str, message: str
    ) -> None:
        monkeypatch.setenv("GUARD_INPUT_TOPICS", "leadterra.acme")
        monkeypatch.setenv("GUARD_TOPIC_WORKSPACES", value)
        with pytest.raises(ValidationError, match=message):
            GuardSettings()

    def test_an_event_of_a_mapped_topic_is_in_its_workspace_unless_it_names_another(self) -> None:
        """No workspaceId: the topic's; the same: kept; another: misrouted, never paused with the topic's key."""
        source = "topic leadterra.acme"
        assert in_workspace(bounce(T0), "ws_acme", source).workspace_id == "ws_acme"
        assert in_workspace(bounce(T0, workspace="ws_acme"), "ws_acme", source).workspace_id == "ws_acme"
        with pytest.raises(MalformedEvent, match="misrouted: data.workspaceId 'ws_beta' is not ws_acme, the workspace"):
            in_workspace(bounce(T0, workspace="ws_beta"), "ws_acme", source)


SCOPED = (
    "groups: [{name: g, rules: [{name: r, description: d, count: bounced, window: 1h, threshold: 3, "
    "workspaces: [ws_acme]}]}]\n"
)


class TestReplayAndRuleTests:
    def test_replay_puts_events_naming_no_workspace_in_the_given_one(self, tmp_path: Path) -> None:
        """As `guard run` does with a mapped topic: the scoped rule fires; an event naming another is malformed."""
        (tmp_path / "rules.yaml").write_text(SCOPED)
        rules = parse_rules([("rules.yaml", SCOPED)])
        records = [(envelope("message.bounced", "c1", T0 + i, messageId=f"m{i}"), T0 + i) for i in range(3)]
        other = (envelope("message.bounced", "c1", T0 + 3, messageId="m3", workspaceId="ws_beta"), T0 + 3)
        assert replay(records, rules).decisions == []
        result = replay([*records, other], rules, workspace="ws_acme")
        assert [d.rule.name for d in result.decisions] == ["r"] and result.counts["malformed"] == 1

    def test_the_replay_command_takes_the_workspace(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "rules.yaml").write_text(SCOPED)
        lines = [envelope("message.bounced", "c1", T0 + i, messageId=f"m{i}").decode() for i in range(3)]
        (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
        args = ["replay", str(tmp_path / "events.jsonl"), "--rules", str(tmp_path / "rules.yaml"), "--format", "json"]
        assert main([*args, "--workspace", "ws_acme"]) == 0
        assert [json.loads(line)["rule"]["name"] for line in capsys.readouterr().out.splitlines()] == ["r"]

    def test_a_rule_test_gives_campaigns_their_workspaces(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`workspaces: {camp_a: ws_acme}` in a test: camp_a's events name ws_acme, camp_b's none."""
        (tmp_path / "rules.yaml").write_text(SCOPED)
        (tmp_path / "test.yaml").write_text(
            "rules: rules.yaml\n"
            "tests:\n"
            "  - name: only ws_acme's campaign fires\n"
            "    input: {camp_a: 3 soft_bounce over 3m, camp_b: 3 soft_bounce over 3m}\n"
            "    workspaces: {camp_a: ws_acme}\n"
            "    expect: [{campaign: camp_a, rule: r}]\n"
        )
        assert main(["test", str(tmp_path / "test.yaml")]) == 0, capsys.readouterr().out

    def test_a_rule_test_naming_an_unknown_campaigns_workspace_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "rules.yaml").write_text(SCOPED)
        (tmp_path / "test.yaml").write_text(
            "rules: rules.yaml\n"
            "tests:\n"
            "  - name: t\n"
            "    input: {camp_a: 3 soft_bounce over 3m}\n"
            "    workspaces: {camp_b: ws_acme}\n"
        )
        assert main(["test", str(tmp_path / "test.yaml")]) != 0
        assert "test t: workspaces.camp_b: unknown campaign 'camp_b'" in capsys.readouterr().err


class TestWorkspaceIdForm:
    """A workspace id has one form everywhere (events, the keys file, GUARD_TOPIC_WORKSPACES, replay, rule
    tests): an empty or odd one could never be matched to a key, so it is refused where it enters."""

    @pytest.mark.parametrize("workspace", ["", "ws acme", "ws_a\n", "w" * 129])
    def test_an_event_naming_no_usable_workspace_is_malformed(self, workspace: str) -> None:
        from guard.contracts.events import decode

        value = envelope("message.bounced", "c1", T0, messageId="m1", workspaceId=workspace)
        with pytest.raises(MalformedEvent, match="workspaceId .* is not a workspace id|workspaceId"):
            decode(value, T0)

    def test_replay_refuses_an_empty_workspace(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "rules.yaml").write_text(SCOPED)
        (tmp_path / "events.jsonl").write_text("")
        args = ["replay", str(tmp_path / "events.jsonl"), "--rules", str(tmp_path / "rules.yaml"), "--workspace", ""]
        assert main(args) == 2
        assert capsys.readouterr().err == "guard: --workspace '' is not a workspace id, e.g. ws_acme\n"

    def test_a_rule_test_refuses_an_empty_workspace(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "rules.yaml").write_text(SCOPED)
        (tmp_path / "test.yaml").write_text(
            "rules: rules.yaml\ntests:\n  - name: t\n    input: {camp_a: 3 soft_bounce over 3m}\n"
            "    workspaces: {camp_a: ''}\n"
        )
        assert main(["test", str(tmp_path / "test.yaml")]) != 0
        assert "workspaces.camp_a" in capsys.readouterr().err


class TestMappingSettingsInTheTools:
    """A mapping of a topic not read is one line naming GUARD_TOPIC_WORKSPACES in every command that
    reads the GUARD_* settings, as `guard run` says it (no `GUARD_:`, no pydantic prefix)."""

    MESSAGE = "GUARD_TOPIC_WORKSPACES maps leadterra.other, not in GUARD_INPUT_TOPICS"

    @pytest.fixture(autouse=True)
    def mapping_of_an_unread_topic(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GUARD_INPUT_TOPICS", "leadterra.acme")
        monkeypatch.setenv("GUARD_TOPIC_WORKSPACES", "leadterra.other=ws_a")
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached: the settings stop it first
        monkeypatch.setenv("LEADTERRA_WEBHOOK_SECRET", "whsec_test_only")

    @pytest.mark.parametrize(
        "command",
        [["replay", "events.jsonl", "--rules", "rules.yaml"], ["decisions", "--since", "1h"], ["exempt", "--list"]],
    )
    def test_a_tool_says_it_in_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
    ) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "events.jsonl").write_text("")
        (tmp_path / "rules.yaml").write_text(SCOPED)
        assert main(command) == 2
        assert capsys.readouterr().err == f"guard: invalid settings:\n  {self.MESSAGE}\n"

    def test_guard_ingest_says_it_in_one_line(self) -> None:
        from guard.errors import ConfigError
        from guard.ingest.app import IngestConfig

        with pytest.raises(ConfigError) as raised:
            IngestConfig.from_env()
        assert str(raised.value) == f"invalid settings:\n  {self.MESSAGE}"
