"""A newcomer's slips get one clear line at once, naming the setting and the fix: a listener name in
KAFKA_BOOTSTRAP_SERVERS, rules not found from another folder, a tab in YAML, a taken port."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.cli import main
from guard.errors import ConfigError
from guard.rules import RuleFileError, parse_rules
from guard.runtime.settings import kafka_settings_from_env

ROOT = Path(__file__).parent.parent


class TestBootstrapServers:
    @pytest.mark.parametrize(
        ("given", "used"),
        [
            ("PLAINTEXT://127.0.0.1:29192", "127.0.0.1:29192"),
            (
                "SASL_SSL://b1.example.com:9096, SASL_SSL://b2.example.com:9096",
                "b1.example.com:9096,b2.example.com:9096",
            ),
            ("kafka:9092", "kafka:9092"),
            ("[::1]:9092", "[::1]:9092"),
        ],
    )
    def test_a_listener_name_in_front_is_dropped(self, monkeypatch: pytest.MonkeyPatch, given: str, used: str) -> None:
        """`PLAINTEXT://host:port`, as a broker's listeners line reads, is understood as Kafka's own clients do."""
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", given)
        assert kafka_settings_from_env().bootstrap_servers == used

    @pytest.mark.parametrize("given", ["kafka:99999", "http//kafka", "kafka:9092,", "kafka:port"])
    def test_another_form_is_refused_naming_the_variable(self, monkeypatch: pytest.MonkeyPatch, given: str) -> None:
        """Refused at start-up with the fix, instead of minutes of retries against a name DNS does not know."""
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", given)
        with pytest.raises(ConfigError, match=r"KAFKA_BOOTSTRAP_SERVERS: .* is not host:port; write host:port"):
            kafka_settings_from_env()

    def test_guard_run_says_it_in_one_line(self, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:99999")
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        assert capsys.readouterr().err == (
            "guard: invalid settings:\n  KAFKA_BOOTSTRAP_SERVERS: 'kafka:99999' is not host:port; write "
            "host:port[,host:port...], e.g. kafka:9092\n"
        )


class TestRulesNotFound:
    def test_guard_run_outside_the_checkout_names_guard_rules(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
    ) -> None:  # noqa: ANN001
        """The default `rules` is relative to the working directory: the line says so and names GUARD_RULES."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("GUARD_RULES", raising=False)
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        assert capsys.readouterr().err == (
            f"guard: no rule file or folder at rules (from {tmp_path}): point GUARD_RULES at your rule file or a "
            "folder of them, e.g. the checkout's rules/\n"
        )

    def test_replay_names_its_option(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:  # noqa: ANN001
        monkeypatch.chdir(tmp_path)
        (tmp_path / "events.jsonl").write_text("")
        assert main(["replay", "events.jsonl"]) == 2
        assert "point --rules at your rule file" in capsys.readouterr().err


class TestTabsInYaml:
    @pytest.mark.parametrize(
        ("text", "where"),
        [
            ("groups:\n  - name: a\n    rules:\n\t- name: x\n", "rules.yaml:4: "),
            ("groups:\n  - name: a\n\trules: []\n", "rules.yaml:3: "),
        ],
    )
    def test_a_tab_is_explained(self, text: str, where: str) -> None:
        """YAML's own message names the tab; the line adds what to do about it."""
        with pytest.raises(RuleFileError) as error:
            parse_rules([("rules.yaml", text)])
        (problem,) = error.value.problems
        assert problem.startswith(where) and problem.endswith(
            "this line is indented with a tab, which YAML does not allow: indent with spaces"
        )


class TestTopicsOfItsOwn:
    """Each topic the guard writes is read back as what it holds: one that is also an input, or shared by two of the
    guard's settings, is refused at start-up. A dead-letter topic among the inputs would read each malformed record
    back, fail it again and write it again, without end."""

    @pytest.mark.parametrize(
        "setting",
        ["GUARD_DLQ_TOPIC", "GUARD_AUDIT_TOPIC", "GUARD_STATE_TOPIC", "GUARD_CONTROL_TOPIC", "GUARD_SCOPE_TOPIC"],
    )
    def test_one_among_the_inputs_is_refused(self, monkeypatch: pytest.MonkeyPatch, capsys, setting: str) -> None:  # noqa: ANN001
        monkeypatch.setenv("GUARD_INPUT_TOPICS", "leadterra.events,leadterra.replies")
        monkeypatch.setenv(setting, "leadterra.replies")
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        assert capsys.readouterr().err == (
            f"guard: invalid settings:\n  {setting} 'leadterra.replies' is also in GUARD_INPUT_TOPICS: the guard "
            "would read its own output\n"
        )

    @pytest.mark.parametrize(
        ("first", "second"),
        [("GUARD_AUDIT_TOPIC", "GUARD_DLQ_TOPIC"), ("GUARD_STATE_TOPIC", "GUARD_CONTROL_TOPIC")],
    )
    def test_one_shared_by_two_settings_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, capsys, first: str, second: str
    ) -> None:  # noqa: ANN001
        monkeypatch.setenv(first, "guard.shared")
        monkeypatch.setenv(second, "guard.shared")
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        assert capsys.readouterr().err == (
            f"guard: invalid settings:\n  {first} and {second} are both 'guard.shared': each needs a topic of its own\n"
        )

    def test_guard_ingest_refuses_it_too(self, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
        """`guard ingest` writes its dead letters there: among the inputs, `guard run` would loop on them."""
        monkeypatch.setenv("GUARD_DLQ_TOPIC", "leadterra.events")
        monkeypatch.setenv("LEADTERRA_WEBHOOK_SECRET", "whsec_test")
        assert main(["ingest"]) == 2
        assert "GUARD_DLQ_TOPIC 'leadterra.events' is also in GUARD_INPUT_TOPICS" in capsys.readouterr().err


class TestSettingsThatCannotWork:
    """Settings that would let the guard start and then fail, or never act, stop start-up with one line."""

    @pytest.mark.parametrize(
        "setting",
        ["GUARD_COMMIT_INTERVAL", "GUARD_RESUME_GRACE", "GUARD_DEDUPE_HORIZON", "LEADTERRA_RETRY_DEADLINE"],
    )
    def test_an_infinite_duration_is_refused(self, monkeypatch: pytest.MonkeyPatch, capsys, setting: str) -> None:  # noqa: ANN001
        """`inf` passes `> 0`: offsets committed once and never again, a pause retried for ever."""
        monkeypatch.setenv(setting, "inf")
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("guard: invalid settings:\n") and setting in error and "finite" in error

    @pytest.mark.parametrize(
        "url",
        [
            "hooks.slack.com/services/T0/B0/x",
            "ftp://hooks.slack.com/x",
            "https:///services/T0/B0/x",
            "https://[hooks.x/y",
        ],
    )
    def test_a_slack_url_that_is_no_url_is_refused_without_quoting_it(
        self, monkeypatch: pytest.MonkeyPatch, capsys, url: str
    ) -> None:  # noqa: ANN001
        monkeypatch.setenv("GUARD_SLACK_WEBHOOK_URL", url)
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        assert capsys.readouterr().err == (
            "guard: GUARD_SLACK_WEBHOOK_URL is not an https:// URL, e.g. https://hooks.slack.com/services/...\n"
        )

    def test_the_same_from_a_file(self, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:  # noqa: ANN001
        (tmp_path / "url").write_text("hooks.slack.com/services/T0/B0/x\n")
        monkeypatch.setenv("GUARD_SLACK_WEBHOOK_URL_FILE", str(tmp_path / "url"))
        monkeypatch.setenv("GUARD_DRY_RUN", "true")
        assert main(["run"]) == 2
        assert "GUARD_SLACK_WEBHOOK_URL_FILE is not an https:// URL" in capsys.readouterr().err
