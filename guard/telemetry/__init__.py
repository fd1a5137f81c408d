"""Metrics, health and log configuration: what the services say about themselves."""
