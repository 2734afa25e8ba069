"""Bearer-token checks and device-id scopes."""

import pytest

from ingest.auth import Authenticator, check_scope, parse_tokens
from ingest.errors import IngestError

FLEET = "fleet-token-0123456789"
SITE_A = "site-a-token-0123456789"


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(parse_tokens(f"{FLEET},{SITE_A}:site-a/", "test"))


def test_auth_open_without_tokens() -> None:
    authenticator = Authenticator(())
    assert authenticator.open
    assert authenticator.authenticate(b"") == ""


def test_auth_valid_token_returns_prefix(authenticator: Authenticator) -> None:
    assert authenticator.authenticate(f"Bearer {FLEET}".encode()) == ""
    assert authenticator.authenticate(f"Bearer {SITE_A}".encode()) == "site-a/"


def test_auth_scheme_case_insensitive(authenticator: Authenticator) -> None:
    assert authenticator.authenticate(f"bearer {FLEET}".encode()) == ""


@pytest.mark.parametrize(
    "header",
    [
        b"",
        FLEET.encode(),
        f"Basic {FLEET}".encode(),
        b"Bearer ",
        b"Bearer wrong-token-0123456789",
        f"Bearer {FLEET[:-1]}".encode(),
        f"Bearer {FLEET}x".encode(),
    ],
)
def test_auth_rejects_with_401(authenticator: Authenticator, header: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        authenticator.authenticate(header)
    assert caught.value.status == 401
    assert caught.value.field == "Authorization"
    assert (b"www-authenticate", b'Bearer realm="hbmon-ingest"') in caught.value.headers
    assert FLEET not in caught.value.message


def test_scope_inside_prefix_passes() -> None:
    check_scope("site-a/", "site-a/pump-1")
    check_scope("", "anything")


def test_scope_outside_prefix_403() -> None:
    with pytest.raises(IngestError) as caught:
        check_scope("site-a/", "site-b/pump-1")
    assert caught.value.status == 403
    assert caught.value.field == "device_id"
    assert "site-a/" in caught.value.message
