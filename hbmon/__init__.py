"""Shared pieces of the heartbeat monitor: settings, Kafka access, events, logging."""
