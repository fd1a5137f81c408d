"""What `guard ingest` says about itself: its metrics, and when it is live and ready."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "guard_ingest_requests_total",
            "Requests by route (leadterra, arf) and outcome: produced, dead_lettered, unauthorized, "
            "unavailable (503), too_large (413), timeout (408), disconnected (the client left mid-body).",
            ["route", "outcome"],
            registry=r,
        )
        self.produce_seconds = Histogram(
            "guard_ingest_produce_duration_seconds",
            "From a request's first byte read to the broker's acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.connections_refused = Counter(
            "guard_ingest_connections_refused_total",
            "Connections answered 503 and closed because GUARD_INGEST_MAX_CONNECTIONS were open, each in a request.",
            registry=r,
        )
        self.connections_evicted = Counter(
            "guard_ingest_connections_evicted_total",
            "Connections closed to admit a new one at GUARD_INGEST_MAX_CONNECTIONS: the oldest between requests "
            "(headers unfinished, or idle).",
            registry=r,
        )
        self.bad_requests = Counter(
            "guard_ingest_bad_requests_total",
            "Requests answered 400 before routing: a request line or header over the limits, too many headers, "
            "not HTTP.",
            registry=r,
        )
        self.dead_letters = Counter(
            "guard_ingest_dead_letters_total",
            "Dead-letter writes by result: written (as it came), truncated (too big to copy whole: cut), "
            "failed (not written; the request was answered 503).",
            ["result"],
            registry=r,
        )
        self.secret_reloads = Counter(
            "guard_ingest_secret_reloads_total",
            "Changes of a webhook secrets file (variable: LEADTERRA_WEBHOOK_SECRET_FILE or "
            "LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE) by result: applied, or rejected (unreadable, blank or "
            "invalid: the secrets in use stay).",
            ["variable", "result"],
            registry=r,
        )


class IngestHealth:
    """Live while the process serves; ready once connected to Kafka, while it answers, not stopping."""

    def __init__(self) -> None:
        self.connected = False
        self.kafka_error: str | None = None
        self.stopping = False

    def live(self) -> tuple[bool, str]:
        return True, "ok"

    def warnings(self) -> list[str]:
        return []

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping"
        if not self.connected:  # why not, once an attempt has failed (the address, or a setting the brokers refuse)
            return (
                False,
                f"not connected to Kafka: {self.kafka_error}" if self.kafka_error else "not connected to Kafka yet",
            )
        if self.kafka_error is not None:
            return False, f"Kafka unreachable: {self.kafka_error}"
        return True, "ok"
