"""The ingest service: validate heartbeats over HTTP and publish them to Kafka."""
