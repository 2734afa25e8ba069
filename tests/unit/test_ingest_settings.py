"""IngestSettings from HBMON_INGEST_* variables, and the bearer tokens they name."""

import hashlib
from pathlib import Path

import pytest

from hbmon.env import SettingError
from ingest.settings import IngestSettings

TOKEN = "t0ken-for-tests-0123456789"


def test_settings_defaults_run_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HBMON_INGEST_HOST", "HBMON_INGEST_PORT", "HBMON_INGEST_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    settings = IngestSettings.from_env()
    assert settings == IngestSettings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.tokens == ()


def test_settings_read_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "WORKERS": "4",
        "MAX_BODY_BYTES": "4096",
        "BATCH_MAX_BYTES": "2048",
        "BATCH_MAX_ITEMS": "50",
        "ATTRS_MAX_BYTES": "512",
        "ATTRS_MAX_DEPTH": "3",
        "TS_MAX_AHEAD_S": "60",
        "TS_MAX_AGE_S": "3600",
        "UNREACHABLE_S": "2.5",
        "RETRY_AFTER_S": "7",
        "FLUSH_TIMEOUT_S": "4",
        "DRAIN_TIMEOUT_S": "6",
        "POLL_INTERVAL_MS": "2",
        "STATS_INTERVAL_MS": "500",
        "LINGER_MS": "20",
        "BATCH_SIZE_BYTES": "65536",
        "COMPRESSION": "ZSTD",
        "QUEUE_MAX_MESSAGES": "1000",
        "QUEUE_MAX_KBYTES": "2048",
        "DELIVERY_TIMEOUT_MS": "60000",
    }
    for suffix, value in values.items():
        monkeypatch.setenv(f"HBMON_INGEST_{suffix}", value)

    settings = IngestSettings.from_env()

    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.workers == 4
    assert settings.max_body_bytes == 4096
    assert settings.batch_max_bytes == 2048
    assert settings.batch_max_items == 50
    assert settings.attrs_max_bytes == 512
    assert settings.attrs_max_depth == 3
    assert settings.ts_max_ahead_s == 60
    assert settings.ts_max_age_s == 3600
    assert settings.unreachable_s == 2.5
    assert settings.retry_after_s == 7
    assert settings.flush_timeout_s == 4
    assert settings.drain_timeout_s == 6
    assert settings.poll_interval_ms == 2
    assert settings.stats_interval_ms == 500
    assert settings.linger_ms == 20
    assert settings.batch_size_bytes == 65536
    assert settings.compression == "zstd"
    assert settings.queue_max_messages == 1000
    assert settings.queue_max_kbytes == 2048
    assert settings.delivery_timeout_ms == 60000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HBMON_INGEST_PORT", "http"),
        ("HBMON_INGEST_WORKERS", "0"),
        ("HBMON_INGEST_UNREACHABLE_S", "0"),
        ("HBMON_INGEST_MAX_BODY_BYTES", "10"),
        ("HBMON_INGEST_COMPRESSION", "brotli"),
        ("HBMON_INGEST_QUEUE_MAX_MESSAGES", "50"),
    ],
)
def test_settings_invalid_names_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match=name):
        IngestSettings.from_env()


def test_tokens_from_env_with_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBMON_INGEST_TOKENS", f"{TOKEN}, {TOKEN}x:site-a/")
    tokens = IngestSettings.from_env().tokens
    assert len(tokens) == 2
    assert tokens[0].prefix == ""
    assert tokens[1].prefix == "site-a/"
    assert tokens[0].digest == hashlib.sha256(TOKEN.encode()).digest()


def test_tokens_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# gateways\n{TOKEN}:gw-\n\n{TOKEN}y\n", encoding="utf-8")
    monkeypatch.setenv("HBMON_INGEST_TOKENS_FILE", str(path))
    monkeypatch.setenv("HBMON_INGEST_TOKENS", f"{TOKEN}z")
    prefixes = [token.prefix for token in IngestSettings.from_env().tokens]
    assert prefixes == ["", "gw-", ""]


def test_tokens_file_missing_names_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HBMON_INGEST_TOKENS_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingError, match="HBMON_INGEST_TOKENS_FILE"):
        IngestSettings.from_env()


@pytest.mark.parametrize(
    "entry",
    ["short", "has space in it 0123456789", "bad!chars-0123456789", f"{TOKEN}:"],
)
def test_tokens_invalid_never_echo_token(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("HBMON_INGEST_TOKENS", entry)
    with pytest.raises(SettingError) as caught:
        IngestSettings.from_env()
    assert "HBMON_INGEST_TOKENS" in str(caught.value)
    assert entry.split(":")[0] not in str(caught.value)


def test_settings_repr_hides_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBMON_INGEST_TOKENS", TOKEN)
    settings = IngestSettings.from_env()
    assert "tokens" not in repr(settings)
    assert TOKEN not in repr(settings)
