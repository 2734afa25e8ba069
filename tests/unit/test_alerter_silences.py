"""Silences: matching, expiry, encoding, and the HTTP API that manages them."""

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette

from alerter.api import create_app
from alerter.matchers import Matcher
from alerter.silences import Silence, SilenceStore, decode_silence
from hbmon.events import DEVICE_DOWN, AlertEvent

NOW_MS = 1_714_572_131_000


def event(device_id: str, **attrs: str) -> AlertEvent:
    return AlertEvent(
        event_id="e",
        type=DEVICE_DOWN,
        device_id=device_id,
        severity="critical",
        last_seen_ms=0,
        deadline_ms=0,
        timeout_ms=0,
        detected_ms=0,
        partition=0,
        message="m",
        attrs=attrs or None,
    )


def silence(starts_ms: int, ends_ms: int, source: str = "api") -> Silence:
    return Silence(
        "s-1",
        Matcher(device_prefix=("pump-",)),
        starts_ms,
        ends_ms,
        "maintenance",
        "ops",
        starts_ms,
        source,
    )


def test_silence_applies_only_between_start_and_end() -> None:
    store = SilenceStore((silence(NOW_MS, NOW_MS + 1000),))

    assert store.silencing(event("pump-1"), NOW_MS - 1) is None
    assert store.silencing(event("pump-1"), NOW_MS) is not None
    assert store.silencing(event("sensor-1"), NOW_MS) is None
    assert store.silencing(event("pump-1"), NOW_MS + 1000) is None


def test_expire_ends_silence_now() -> None:
    store = SilenceStore((silence(NOW_MS, NOW_MS + 60_000),))

    expired = store.expire("s-1", NOW_MS + 10)

    assert expired is not None
    assert expired.state(NOW_MS + 10) == "expired"
    assert store.silencing(event("pump-1"), NOW_MS + 10) is None


def test_silence_survives_encoding() -> None:
    original = silence(NOW_MS, NOW_MS + 1000)

    assert decode_silence(original.encode()) == original


class ApiClient:
    """Calls the app over ASGI, one event loop per request."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://alerter"
            ) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@pytest.fixture
def client() -> ApiClient:
    app = create_app(SilenceStore(), None, clock_ms=lambda: NOW_MS)
    return ApiClient(app)


def test_api_creates_lists_and_expires(client: ApiClient) -> None:
    created = client.post(
        "/silences",
        json={
            "device_glob": "pump-*",
            "attrs": {"site": "plant-3"},
            "duration_s": 3600,
            "comment": "pump swap",
            "created_by": "ops@example.com",
        },
    )
    silence_id = created.json()["id"]
    listed = client.get("/silences").json()["silences"]
    expired = client.delete(f"/silences/{silence_id}")

    assert created.status_code == 201
    assert created.json()["state"] == "active"
    assert created.json()["ends_at"] == "2024-05-01T15:02:11.000Z"
    assert created.json()["attrs"] == {"site": ["plant-3"]}
    assert [s["id"] for s in listed] == [silence_id]
    assert expired.status_code == 200
    assert expired.json()["state"] == "expired"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration_s": 60, "comment": "c", "created_by": "me"}, "device_prefix"),
        ({"device_prefix": "p", "comment": "c", "created_by": "me"}, "duration_s"),
        ({"device_prefix": "p", "duration_s": 60, "created_by": "me"}, "comment"),
        (
            {"device_prefix": "p", "ends_at": "2024-05-01T00:00:00", "comment": "c",
             "created_by": "me"},
            "ends_at",
        ),
        (
            {"device_prefix": "p", "ends_at": "2020-01-01T00:00:00Z", "comment": "c",
             "created_by": "me"},
            "ends_at",
        ),
        ({"device_prefix": "p", "duration_s": 60, "comment": "c", "created_by": "me",
          "color": "red"}, "color"),
    ],
)  # fmt: skip
def test_api_rejects_invalid_request(client: ApiClient, body: dict, field: str) -> None:
    response = client.post("/silences", json=body)

    assert response.status_code == 400
    assert response.json()["field"] == field


def test_api_rejects_invalid_json(client: ApiClient) -> None:
    response = client.post("/silences", content=b"{nope")

    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_api_unknown_silence_is_404(client: ApiClient) -> None:
    assert client.delete("/silences/nope").status_code == 404
    assert client.get("/silences/nope").status_code == 404


def test_api_unknown_path_is_json_404(client: ApiClient) -> None:
    response = client.get("/nope")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "no endpoint at /nope; the API serves /healthz and /silences"
    }


def test_api_trailing_slash_is_json_404(client: ApiClient) -> None:
    response = client.get("/silences/", headers={"Host": "elsewhere.example"})

    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"].startswith("no endpoint at /silences/;")


def test_api_wrong_method_is_json_405(client: ApiClient) -> None:
    response = client.request("PUT", "/silences")

    assert response.status_code == 405
    assert response.json()["field"] == "method"
    assert response.json()["error"] == (
        "method PUT is not allowed here; use GET, HEAD, POST"
    )


def test_api_refuses_to_expire_config_silence() -> None:
    store = SilenceStore((silence(NOW_MS, NOW_MS + 1000, source="config"),))
    client = ApiClient(create_app(store, None, clock_ms=lambda: NOW_MS))

    response = client.delete("/silences/s-1")

    assert response.status_code == 409
    assert "routes file" in response.json()["error"]


def test_api_token_is_required_when_set() -> None:
    app = create_app(SilenceStore(), None, token="t0ken", clock_ms=lambda: NOW_MS)
    client = ApiClient(app)

    assert client.get("/silences").status_code == 401
    assert client.get("/healthz").status_code == 200
    headers = {"Authorization": "Bearer t0ken"}
    assert client.get("/silences", headers=headers).status_code == 200


BASE_REQUEST = {"device_prefix": "pump-", "comment": "c", "created_by": "me"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"ends_at": "9999-12-31T23:59:59-01:00"}, "ends_at"),
        ({"starts_at": "9999-12-31T23:59:59Z", "duration_s": 86400}, "duration_s"),
        ({"starts_at": "1969-12-31T23:59:59Z", "duration_s": 60}, "starts_at"),
        ({"duration_s": 1e30}, "duration_s"),
        ({"duration_s": 10**30}, "duration_s"),
        ({"duration_s": 315_360_001}, "duration_s"),
        ({"duration_s": -5}, "duration_s"),
    ],
)
def test_api_rejects_time_out_of_range(
    client: ApiClient, extra: dict, field: str
) -> None:
    response = client.post("/silences", json={**BASE_REQUEST, **extra})

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert client.get("/silences").json()["silences"] == []


def test_api_accepts_last_representable_end(client: ApiClient) -> None:
    ends_at = "9999-12-31T23:59:59.999999+00:00"

    created = client.post("/silences", json={**BASE_REQUEST, "ends_at": ends_at})
    listed = client.get("/silences")

    assert created.status_code == 201
    assert created.json()["ends_at"] == "9999-12-31T23:59:59.999Z"
    assert listed.status_code == 200
    assert len(listed.json()["silences"]) == 1


def test_api_skips_invalid_stored_silence(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    counter = Counter("invalid_silences", "test counter", registry=registry)
    store = SilenceStore((silence(NOW_MS, NOW_MS + 60_000),))
    store.put(replace(silence(NOW_MS, 253_402_300_800_000), silence_id="s-bad"))
    app = create_app(store, None, clock_ms=lambda: NOW_MS, invalid_silences=counter)
    client = ApiClient(app)

    listed = client.get("/silences")
    listed_again = client.get("/silences")
    one = client.get("/silences/s-bad")

    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["silences"]] == ["s-1"]
    assert listed_again.status_code == 200
    assert one.status_code == 404
    assert one.json()["field"] == "silence_id"
    assert registry.get_sample_value("invalid_silences_total") == 1.0
    skip_lines = [r for r in caplog.records if "s-bad" in r.getMessage()]
    assert len(skip_lines) == 1


def test_decode_rejects_time_out_of_range() -> None:
    bad = silence(NOW_MS, 253_402_300_800_000)

    with pytest.raises(ValueError, match="ends_ms"):
        decode_silence(bad.encode())
