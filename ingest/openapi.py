"""The OpenAPI 3.1 document that the service serves at GET /openapi.json.

It is built from the settings, so the limits it states are the ones in force.
"""

from typing import Any

from ingest.heartbeat import (
    DEVICE_ID_MAX_CHARS,
    DEVICE_ID_PATTERN,
    PERIOD_MAX_S,
    SEQ_MAX,
)
from ingest.settings import IngestSettings

_SCALAR = {"type": ["string", "number", "boolean", "null"]}
_REF_ERROR = {"$ref": "#/components/schemas/Error"}


def build_openapi(settings: IngestSettings) -> dict[str, Any]:
    """Return the OpenAPI document for the service configured by `settings`."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "hbmon ingest",
            "version": "1",
            "description": (
                "Receives device heartbeats and publishes them to Kafka, keyed "
                "by device_id. Liveness uses the time the service received a "
                "heartbeat, never the device's `ts`."
            ),
        },
        "paths": {
            "/v1/heartbeats": {"post": _single_operation(settings)},
            "/v1/heartbeats/batch": {"post": _batch_operation(settings)},
            "/healthz": {"get": _probe("The process is up.", ready=False)},
            "/readyz": {"get": _probe("The producer reached Kafka recently.", True)},
            "/metrics": {"get": _metrics_operation()},
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json("The OpenAPI document.", None)},
                }
            },
        },
        "components": {"schemas": _schemas(settings)},
    }
    if settings.tokens:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        for path in ("/v1/heartbeats", "/v1/heartbeats/batch"):
            document["paths"][path]["post"]["security"] = [{"bearer": []}]
    return document


def _schemas(settings: IngestSettings) -> dict[str, Any]:
    return {
        **_attrs_levels(settings.attrs_max_depth),
        "Heartbeat": {
            "type": "object",
            "required": ["device_id"],
            "description": (
                "One heartbeat. Optional fields may be null, which counts as "
                "absent. Unknown fields are ignored and not published."
            ),
            "properties": {
                "device_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": DEVICE_ID_MAX_CHARS,
                    "pattern": DEVICE_ID_PATTERN,
                },
                "ts": {
                    "type": ["number", "string", "null"],
                    "description": (
                        "Device time: seconds since the Unix epoch, or an "
                        "ISO-8601 date-time (UTC when it has no offset). Kept "
                        "as metadata. A value more than HBMON_INGEST_TS_MAX_"
                        "AHEAD_S ahead, HBMON_INGEST_TS_MAX_AGE_S behind, or "
                        "unparseable is published with a device_ts_flag."
                    ),
                },
                "seq": {"type": ["integer", "null"], "minimum": 0, "maximum": SEQ_MAX},
                "interval_s": _period("Declared heartbeat interval."),
                "timeout_s": _period("Declared silence after which it is DOWN."),
                "attrs": {
                    "type": ["object", "null"],
                    "additionalProperties": {
                        "$ref": "#/components/schemas/AttrsValue"
                        f"{settings.attrs_max_depth - 1}"
                    },
                    "description": (
                        f"Free-form attributes: at most {settings.attrs_max_bytes} "
                        f"bytes as JSON and {settings.attrs_max_depth} levels deep."
                    ),
                },
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "accepted"}},
        },
        "BatchAccepted": {
            "type": "object",
            "required": ["status", "accepted", "rejected"],
            "properties": {
                "status": {"const": "accepted"},
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "field", "error"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "field": {"type": "string"},
                            "error": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "field": {"type": "string"},
            },
        },
    }


def _attrs_levels(max_depth: int) -> dict[str, Any]:
    """Return one schema per nesting level that attribute values may use.

    `AttrsValue0` is a scalar; `AttrsValueN` is a scalar, or an object or
    array of `AttrsValue(N-1)`. One schema per level keeps the document
    linear in `max_depth`.
    """
    levels: dict[str, Any] = {"AttrsValue0": _SCALAR}
    for level in range(1, max_depth):
        inner = {"$ref": f"#/components/schemas/AttrsValue{level - 1}"}
        levels[f"AttrsValue{level}"] = {
            "anyOf": [
                _SCALAR,
                {"type": "object", "additionalProperties": inner},
                {"type": "array", "items": inner},
            ]
        }
    return levels


def _period(description: str) -> dict[str, Any]:
    return {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "maximum": PERIOD_MAX_S,
        "description": f"{description} Seconds.",
    }


def _single_operation(settings: IngestSettings) -> dict[str, Any]:
    return {
        "summary": "Publish one heartbeat",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Heartbeat"}
                }
            },
        },
        "responses": {
            "202": _json("Queued to the Kafka producer.", "Accepted"),
            **_error_responses(settings.max_body_bytes),
            "403": _error("The device_id is outside the token's prefix."),
        },
    }


def _batch_operation(settings: IngestSettings) -> dict[str, Any]:
    return {
        "summary": "Publish many heartbeats, each validated on its own",
        "description": (
            "Items that pass are queued even when others fail. The response "
            "lists each rejected item's 0-based index; in NDJSON, blank lines "
            "are skipped and not counted. Items outside the token's prefix "
            "are rejected with field device_id."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": settings.batch_max_items,
                        "items": {
                            "description": (
                                "A Heartbeat. Any other value is listed in "
                                "`rejected` instead of failing the batch."
                            )
                        },
                    }
                },
                "application/x-ndjson": {
                    "schema": {
                        "description": (
                            "One Heartbeat per line. A line that is not one "
                            "is listed in `rejected`, so any text is a valid "
                            "body."
                        )
                    }
                },
            },
        },
        "responses": {
            "202": _json("Valid items queued; rejected ones listed.", "BatchAccepted"),
            **_error_responses(settings.batch_max_bytes),
        },
    }


def _error_responses(max_bytes: int) -> dict[str, Any]:
    return {
        "400": _error("The body or a field breaks a rule; `field` names it."),
        "401": {
            **_error("The bearer token is missing or wrong."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "413": _error(f"The body is over {max_bytes} bytes or too many items."),
        "415": _error("The Content-Type is not one the operation accepts."),
        "503": {
            **_error("The producer queue is full or Kafka is unreachable."),
            "headers": {
                "Retry-After": {
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
        },
    }


def _probe(description: str, ready: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(description, None)}
    if ready:
        responses["503"] = _json("Not ready, and `error` gives the reason.", "Error")
    return {"summary": description, "responses": responses}


def _metrics_operation() -> dict[str, Any]:
    return {
        "summary": "Prometheus metrics",
        "responses": {
            "200": {
                "description": "Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }


def _json(description: str, schema_name: str | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if schema_name is not None:
        schema = {"$ref": f"#/components/schemas/{schema_name}"}
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _REF_ERROR}},
    }
