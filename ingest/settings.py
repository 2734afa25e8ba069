"""Settings of the ingest service, read from HBMON_INGEST_* environment variables."""

from dataclasses import dataclass, field

from hbmon.env import SettingError, env_float, env_int, env_str
from ingest.auth import BearerToken, load_tokens

COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Limits, timeouts and producer tuning of one ingest process.

    The defaults run on one machine. Producer acknowledgements and
    idempotence are fixed rather than settings. Ingest always uses acks=all
    with the idempotent producer, so producer retries neither lose nor
    duplicate a queued heartbeat. A record can still be lost when it is not
    delivered within `delivery_timeout_ms` or the shutdown flush times out.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 8192
    batch_max_bytes: int = 1_048_576
    batch_max_items: int = 10_000
    attrs_max_bytes: int = 1024
    attrs_max_depth: int = 2
    ts_max_ahead_s: float = 300.0
    ts_max_age_s: float = 86_400.0
    unreachable_s: float = 10.0
    retry_after_s: int = 1
    flush_timeout_s: float = 10.0
    drain_timeout_s: int = 10
    poll_interval_ms: int = 5
    stats_interval_ms: int = 1000
    # Heartbeats come in a steady stream of small records, and a produce
    # request costs CPU whether it carries 3 records or 300. A produce loop
    # at 5,000 records/s over 6 partitions used about 16 µs of CPU per record
    # at 5 ms and about 6.5 µs at 50 ms (confluent-kafka 2.16.1, acks=all,
    # lz4, 2-core AMD EPYC VM). The cost is that a record may wait up to
    # 50 ms in the producer before it is sent. A 202 does not wait for that.
    linger_ms: int = 50
    batch_size_bytes: int = 1_000_000
    # lz4 shrank a basic heartbeat record (92-byte value, 13-byte key) from
    # 116 to 22 bytes in the broker's log, which is what crosses the network.
    # zstd gave 11 bytes. Neither changed ingest's CPU per record by more
    # than about 5% against no compression, which is within the noise of
    # the measurement (confluent-kafka 2.16.1, linger 50 ms, about 100,000
    # records/s, 2-core AMD EPYC VM). lz4 stays because the cost of zstd's
    # decompression on the broker and the monitor was not measured.
    compression: str = "lz4"
    queue_max_messages: int = 100_000
    queue_max_kbytes: int = 65_536
    delivery_timeout_ms: int = 300_000
    tokens: tuple[BearerToken, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls) -> "IngestSettings":
        """Read every setting from its HBMON_INGEST_* variable.

        Raises:
            SettingError: a variable is malformed or out of range. The
                message names it.
        """
        # A slots dataclass keeps no defaults on the class, so read an instance.
        d = cls()
        settings = cls(
            host=env_str("HBMON_INGEST_HOST", d.host),
            port=_int(d, "port", minimum=0),
            workers=_int(d, "workers", minimum=1),
            max_body_bytes=_int(d, "max_body_bytes", minimum=256),
            batch_max_bytes=_int(d, "batch_max_bytes", minimum=256),
            batch_max_items=_int(d, "batch_max_items", minimum=1),
            attrs_max_bytes=_int(d, "attrs_max_bytes", minimum=2),
            attrs_max_depth=_int(d, "attrs_max_depth", minimum=1),
            ts_max_ahead_s=_float(d, "ts_max_ahead_s", minimum=0),
            ts_max_age_s=_float(d, "ts_max_age_s", minimum=0),
            unreachable_s=_float(d, "unreachable_s", minimum=0.1),
            retry_after_s=_int(d, "retry_after_s", minimum=1),
            flush_timeout_s=_float(d, "flush_timeout_s", minimum=0),
            drain_timeout_s=_int(d, "drain_timeout_s", minimum=0),
            poll_interval_ms=_int(d, "poll_interval_ms", minimum=1),
            stats_interval_ms=_int(d, "stats_interval_ms", minimum=100),
            linger_ms=_int(d, "linger_ms", minimum=0),
            batch_size_bytes=_int(d, "batch_size_bytes", minimum=1024),
            compression=_compression(d.compression),
            queue_max_messages=_int(d, "queue_max_messages", minimum=1),
            queue_max_kbytes=_int(d, "queue_max_kbytes", minimum=1),
            delivery_timeout_ms=_int(d, "delivery_timeout_ms", minimum=1000),
            tokens=load_tokens(
                env_str("HBMON_INGEST_TOKENS", ""),
                env_str("HBMON_INGEST_TOKENS_FILE", ""),
                env_name="HBMON_INGEST_TOKENS",
                file_env_name="HBMON_INGEST_TOKENS_FILE",
            ),
        )
        # check_room counts a batch's heartbeats against this limit, so with
        # a smaller limit every full batch would get a 503.
        if settings.queue_max_messages < settings.batch_max_items:
            raise SettingError(
                f"HBMON_INGEST_QUEUE_MAX_MESSAGES={settings.queue_max_messages} "
                "must be at least HBMON_INGEST_BATCH_MAX_ITEMS="
                f"{settings.batch_max_items}"
            )
        return settings


def _int(defaults: IngestSettings, name: str, *, minimum: int) -> int:
    """Read field `name` from HBMON_INGEST_<NAME>, else take its default."""
    default = getattr(defaults, name)
    return env_int(f"HBMON_INGEST_{name.upper()}", default, minimum=minimum)


def _float(defaults: IngestSettings, name: str, *, minimum: float) -> float:
    default = getattr(defaults, name)
    return env_float(f"HBMON_INGEST_{name.upper()}", default, minimum=minimum)


def _compression(default: str) -> str:
    value = env_str("HBMON_INGEST_COMPRESSION", default).lower()
    if value not in COMPRESSION_TYPES:
        raise SettingError(
            f"HBMON_INGEST_COMPRESSION={value!r} is not supported; use one of "
            f"{', '.join(COMPRESSION_TYPES)}"
        )
    return value
