"""The Grafana dashboard (helm/deliverability-guard/files/dashboards): it answers "is it protecting?" first,
and every query reads a metric the guard exports. No dashboard linter installs from PyPI or npm (Grafana's
own is a Go tool), so the checks such a linter makes are here: unique ids, one data source variable,
panels inside the grid without overlap, only defined variables, and threshold colours where a number
alone would not say good or bad."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from metric_names import exported_metrics, named_metrics

DASHBOARD = Path(__file__).parent.parent / "helm" / "deliverability-guard" / "files" / "dashboards"
BOARD: dict[str, Any] = json.loads((DASHBOARD / "deliverability-guard.json").read_text(encoding="utf-8"))
PANELS: list[dict[str, Any]] = BOARD["panels"]
GRAFANA_VARIABLES = {"__range", "__rate_interval", "__interval"}

# What the first row must show, as (metric, a label matcher its selector must hold).
PROTECTING = [
    ("guard_assigned_partitions", ""),
    ("guard_input_topics_missing", ""),
    ("guard_input_topics_unread", ""),
    ("guard_consumer_lag_records", ""),
    ("guard_dead_letters_total", ""),
    ("guard_rule_reloads_total", 'result="rejected"'),
    ("guard_notifications_total", 'result="failed"'),
    ("guard_held_decisions", ""),
    ("guard_side_surface_errors_total", ""),
    ("guard_decision_errors_total", ""),
    ("guard_actions_total", 'outcome="failed"'),
    ("guard_actions_total", ""),
    ("guard_api_authentication_failed", ""),
]


def exprs(panels: list[dict[str, Any]]) -> list[str]:
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def first_row() -> list[dict[str, Any]]:
    """The panels under the first row, up to the next one."""
    assert PANELS[0]["type"] == "row" and PANELS[0]["title"] == "Is it protecting?"
    rest = PANELS[1:]
    end = next((i for i, panel in enumerate(rest) if panel["type"] == "row"), len(rest))
    return rest[:end]


class TestFirstRow:
    """It answers "is it protecting?" before anything else."""

    @pytest.mark.parametrize(("metric", "matcher"), PROTECTING, ids=[f"{m}{{{s}}}" for m, s in PROTECTING])
    def test_the_first_row_reads(self, metric: str, matcher: str) -> None:
        selector = rf"\b{metric}\{{[^}}]*{re.escape(matcher)}"
        assert any(re.search(selector, expr) for expr in exprs(first_row())), f"no first-row panel reads {metric}"

    @pytest.mark.parametrize("panel", first_row(), ids=[panel["title"] for panel in first_row()])
    def test_each_panel_of_the_first_row_colours_by_threshold(self, panel: dict[str, Any]) -> None:
        """Green when all is well, orange or red when not: a number alone does not say which."""
        config = panel["fieldConfig"]
        assert config["defaults"]["color"]["mode"] == "thresholds"
        steps = [config["defaults"]["thresholds"]["steps"]] + [
            prop["value"]["steps"]
            for override in config.get("overrides", [])
            for prop in override["properties"]
            if prop["id"] == "thresholds"
        ]
        assert any(len({step["color"] for step in step_list}) >= 2 for step_list in steps), panel["title"]


class TestLint:
    def test_every_query_reads_metrics_the_guard_exports_with_their_labels(self) -> None:
        exported = exported_metrics(ingest=False)
        for expr in exprs(PANELS):
            assert re.findall(r"\b([a-z_]+)\{", expr) == [m for m, _ in named_metrics(expr)], f"not ours: {expr}"
            for metric, labels in named_metrics(expr):
                assert metric in exported, f"{expr}: the guard exports no {metric}"
                assert labels <= exported[metric], f"{expr}: {metric} has no label {labels - exported[metric]}"

    def test_the_main_metrics_each_have_a_panel(self) -> None:
        used = {metric for expr in exprs(PANELS) for metric, _ in named_metrics(expr)}
        wanted = {
            "guard_records_total",
            "guard_decisions_total",
            "guard_api_attempts_total",
            "guard_action_duration_seconds_bucket",
            "guard_decision_lag_seconds_bucket",
            "guard_inflight_actions",
            "guard_campaigns_tracked",
            "guard_commits_total",
        }
        assert wanted <= used, f"metrics without a panel: {wanted - used}"

    def test_panel_ids_are_unique_and_every_panel_reads_the_data_source_variable(self) -> None:
        ids = [panel["id"] for panel in PANELS]
        assert len(ids) == len(set(ids))
        for panel in PANELS:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
                assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
                assert panel.get("description"), f"{panel['title']}: say what it shows and when to worry"

    def test_panels_fit_the_grid_without_overlap(self) -> None:
        taken: set[tuple[int, int]] = set()
        for panel in PANELS:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
            cells = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & taken, f"{panel['title']} overlaps another panel"
            taken |= cells

    def test_queries_use_only_defined_variables(self) -> None:
        defined = {variable["name"] for variable in BOARD["templating"]["list"]} | GRAFANA_VARIABLES
        for expr in exprs(PANELS):
            assert set(re.findall(r"\$\{?(\w+)", expr)) <= defined, expr
