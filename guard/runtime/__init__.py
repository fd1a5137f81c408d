"""`guard run`: the service, its poll loop and pipeline, recovery of assigned partitions, checkpoints, the
control topic, Kafka clients and offsets, dead letters, settings, and the HTTP endpoints."""
