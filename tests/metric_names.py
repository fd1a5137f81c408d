"""The metrics the guard exports, read from its own registries, and the metrics a text names: what the
docs and the Grafana dashboard may refer to."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from guard.ingest.health import IngestMetrics
from guard.telemetry.metrics import Metrics

# Labels every series gets from the scrape (Prometheus' target labels), and the histogram bucket's.
SCRAPE_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_metrics(ingest: bool = True) -> dict[str, set[str]]:
    """Each series name `guard run` (and `guard ingest`) exports, with the label names it may carry."""
    registries = [Metrics(CollectorRegistry()).registry] + ([IngestMetrics().registry] if ingest else [])
    exported: dict[str, set[str]] = {}
    for registry in registries:
        for collector in set(registry._names_to_collectors.values()):  # the only place labels are listed
            labels = set(getattr(collector, "_labelnames", ()))
            for family in collector.describe():
                for suffix in SERIES[family.type]:
                    series = family.name + suffix
                    exported[series] = labels | SCRAPE_LABELS | ({"le"} if suffix == "_bucket" else set())
    return exported


def named_metrics(text: str) -> list[tuple[str, set[str]]]:
    """Each `guard_...` metric a text or query names, with the label names of its `{...}` selector."""
    found = []
    for match in re.finditer(r"\b(guard_[a-z_]+)\b(\{[^}]*\})?", text):
        labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", match.group(2) or ""))
        found.append((match.group(1), labels))
    return found
