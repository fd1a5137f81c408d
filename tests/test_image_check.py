"""The image check (scripts/image-check.sh) runs the image as the chart does, and CI runs it beside the suite.

The check itself needs root, podman and minutes; these tests read its files and run .ci/run's wiring
with stand-ins for `make` and the check (no podman, no broker).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "image-check.sh"
VALUES = ROOT / "helm" / "deliverability-guard" / "values.yaml"


def image_check_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_check", ROOT / "scripts" / "image_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestStandInBase:
    def test_the_build_argument_replaces_the_base_of_every_stage(self) -> None:
        """The script passes the stand-in as the ARG that every FROM uses; its default stays the pinned digest."""
        dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
        [argument] = re.findall(r'--build-arg "(\w+)=\$base"', SCRIPT.read_text(encoding="utf-8"))
        assert re.search(rf"^ARG {argument}=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{{64}}$", dockerfile, re.M)
        froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
        assert froms and set(froms) == {f"${{{argument}}}"}

    def test_the_stand_in_is_python_311_from_debian_with_the_official_images_layout(self) -> None:
        script = SCRIPT.read_text(encoding="utf-8")
        assert "packages=python3.11,python3.11-venv," in script
        assert "for name in python python3 python3.11; do ln -sf /usr/bin/python3.11 /usr/local/bin/" in script


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The `podman run` options of the check's containers."""
    containers = image_check_module().Containers("image", "label=1", tmp_path_factory.mktemp("secrets"))
    return containers.options({}, {})


class TestRunsAsTheChartDoes:
    def test_the_user_is_the_charts(self, options: list[str]) -> None:
        context = yaml.safe_load(VALUES.read_text(encoding="utf-8"))["securityContext"]
        assert f"--user={context['runAsUser']}:{context['runAsGroup']}" in options

    def test_the_root_filesystem_is_read_only_and_only_tmp_is_writable(self, options: list[str]) -> None:
        """The chart's readOnlyRootFilesystem with an emptyDir at /tmp; podman's own writable /run and
        /var/tmp, which a pod has not, are turned off."""
        assert yaml.safe_load(VALUES.read_text(encoding="utf-8"))["securityContext"]["readOnlyRootFilesystem"]
        assert "--read-only" in options and "--read-only-tmpfs=false" in options
        assert [o for o in options if o.startswith("--tmpfs=")] == ["--tmpfs=/tmp:rw,mode=1777"]

    def test_no_capabilities_and_no_privilege_escalation(self, options: list[str]) -> None:
        context = yaml.safe_load(VALUES.read_text(encoding="utf-8"))["securityContext"]
        assert context["capabilities"]["drop"] == ["ALL"] and "--cap-drop=ALL" in options
        assert context["allowPrivilegeEscalation"] is False and "--security-opt=no-new-privileges" in options

    def test_the_rules_are_the_charts_mounted_read_only(self, options: list[str]) -> None:
        chart_rules = ROOT / "helm" / "deliverability-guard" / "files" / "rules"
        assert f"--volume={chart_rules}:/etc/guard/rules:ro" in options


def ci_copy(tmp_path: Path, *, tests: str, image_check: str) -> Path:
    """A checkout with the real .ci/run, and `make` and scripts/image-check.sh replaced by these lines."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "image-check.sh").write_text(image_check)
    makefile = f".venv/.installed:\n\t@echo venv ready\n\ntest:\n{textwrap.indent(tests, chr(9))}\n"
    (tmp_path / "Makefile").write_text(makefile)
    return tmp_path


def run_ci(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", ".ci/run"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


class TestCiRunsTheImageCheck:
    def test_the_check_runs_while_the_suite_runs_and_its_log_follows(self, tmp_path: Path) -> None:
        """The suite waits here for a file only the image check writes: CI finishes only if both run at once."""
        checkout = ci_copy(
            tmp_path,
            tests="@for i in $$(seq 100); do test -e started && break; sleep 0.1; done; test -e started\n@echo suite done",
            image_check="touch started\necho 'image check: OK'\n",
        )
        result = run_ci(checkout)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert out.index("suite done") < out.index("---- image check") < out.index("image check: OK")

    def test_a_failed_image_check_fails_ci(self, tmp_path: Path) -> None:
        checkout = ci_copy(tmp_path, tests="@echo suite done", image_check="echo 'image check: FAILED'\nexit 3\n")
        result = run_ci(checkout)
        assert result.returncode == 3
        assert "image check: FAILED" in result.stdout and "the image check failed" in result.stdout

    def test_a_failed_suite_fails_ci_after_the_image_checks_log(self, tmp_path: Path) -> None:
        checkout = ci_copy(tmp_path, tests="@exit 4", image_check="echo 'image check: OK'\n")
        result = run_ci(checkout)
        assert result.returncode != 0
        assert "image check: OK" in result.stdout
