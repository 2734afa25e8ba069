"""Validation of one heartbeat and the record it becomes on the heartbeat topic."""

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hbmon.events import HeartbeatRecord, decode_heartbeat
from ingest.errors import IngestError
from ingest.heartbeat import (
    PERIOD_MAX_S,
    SEQ_MAX,
    TS_FUTURE,
    TS_MAX_CHARS,
    TS_PAST,
    TS_UNPARSEABLE,
    HeartbeatParser,
    encode_record,
)

RECEIVED_MS = 1_700_000_000_000
RECEIVED_S = RECEIVED_MS / 1000


class EncodingParser:
    """A HeartbeatParser whose records come encoded, as the publisher sends them."""

    def __init__(self, parser: HeartbeatParser) -> None:
        self.parser = parser

    def parse(self, data: object, received_ms: int) -> tuple[str, bytes, str | None]:
        device_id, record, flag = self.parser.parse(data, received_ms)
        return device_id, encode_record(record), flag


@pytest.fixture
def parser() -> EncodingParser:
    return EncodingParser(
        HeartbeatParser(
            attrs_max_bytes=64,
            attrs_max_depth=2,
            ts_max_ahead_s=300,
            ts_max_age_s=86_400,
        )
    )


def reject(parser: EncodingParser, data: object) -> IngestError:
    with pytest.raises(IngestError) as caught:
        parser.parse(data, RECEIVED_MS)
    return caught.value


def test_minimal_heartbeat_record(parser: EncodingParser) -> None:
    device_id, value, flag = parser.parse({"device_id": "dev-1"}, RECEIVED_MS)
    assert device_id == "dev-1"
    assert value == HeartbeatRecord(device_id="dev-1", received_ms=RECEIVED_MS).encode()
    assert flag is None


def test_full_heartbeat_matches_record_format(parser: EncodingParser) -> None:
    data = {
        "device_id": "site-a/pump:7",
        "ts": RECEIVED_S - 2.5,
        "seq": 42,
        "interval_s": 10,
        "timeout_s": 30.5,
        "attrs": {"fw": "1.2.3", "rssi": -70, "tags": ["a", "b"]},
    }
    _, value, flag = parser.parse(data, RECEIVED_MS)
    expected = HeartbeatRecord(
        device_id="site-a/pump:7",
        received_ms=RECEIVED_MS,
        device_ts=RECEIVED_S - 2.5,
        seq=42,
        timeout_s=30.5,
        interval_s=10,
        attrs={"fw": "1.2.3", "rssi": -70, "tags": ["a", "b"]},
    )
    assert value == expected.encode()
    assert decode_heartbeat(value) == decode_heartbeat(expected.encode())
    assert flag is None


def test_unknown_fields_not_published(parser: EncodingParser) -> None:
    _, value, _ = parser.parse({"device_id": "d", "firmware": "x"}, RECEIVED_MS)
    assert "firmware" not in orjson.loads(value)


def test_null_optional_fields_count_as_absent(parser: EncodingParser) -> None:
    data = {"device_id": "d", "ts": None, "seq": None, "attrs": None}
    _, value, _ = parser.parse(data, RECEIVED_MS)
    assert orjson.loads(value) == {"device_id": "d", "received_ms": RECEIVED_MS}


@pytest.mark.parametrize("body", [[], "dev", 5, None, ["device_id"]])
def test_body_not_object_rejected(parser: EncodingParser, body: object) -> None:
    err = reject(parser, body)
    assert err.status == 400
    assert err.field == "body"


@pytest.mark.parametrize(
    "device_id",
    [None, "", 5, True, ["d"], "a" * 129, "dev 1", "dev\n1", "dév", "a,b", "a#b"],
)
def test_device_id_rules(parser: EncodingParser, device_id: object) -> None:
    data = {} if device_id is None else {"device_id": device_id}
    err = reject(parser, data)
    assert err.status == 400
    assert err.field == "device_id"
    assert "1 to 128 characters" in err.message


def test_device_id_missing_says_required(parser: EncodingParser) -> None:
    assert "required" in reject(parser, {"seq": 1}).message


@pytest.mark.parametrize(
    "device_id", ["a", "A" * 128, "aa:bb:cc:dd:ee:ff", "x.y_z/1-2"]
)
def test_device_id_accepted(parser: EncodingParser, device_id: str) -> None:
    assert parser.parse({"device_id": device_id}, RECEIVED_MS)[0] == device_id


@pytest.mark.parametrize("seq", [-1, SEQ_MAX + 1, 1.5, "1", True, [1]])
def test_seq_rules(parser: EncodingParser, seq: object) -> None:
    err = reject(parser, {"device_id": "d", "seq": seq})
    assert err.status == 400
    assert err.field == "seq"


@pytest.mark.parametrize("seq", [0, SEQ_MAX])
def test_seq_bounds_accepted(parser: EncodingParser, seq: int) -> None:
    _, value, _ = parser.parse({"device_id": "d", "seq": seq}, RECEIVED_MS)
    assert orjson.loads(value)["seq"] == seq


@pytest.mark.parametrize("name", ["interval_s", "timeout_s"])
@pytest.mark.parametrize("period", [0, -1, 0.0, PERIOD_MAX_S + 1, "10", True, {}])
def test_period_rules(parser: EncodingParser, name: str, period: object) -> None:
    err = reject(parser, {"device_id": "d", name: period})
    assert err.status == 400
    assert err.field == name
    assert "greater than 0" in err.message


@pytest.mark.parametrize("name", ["interval_s", "timeout_s"])
def test_period_accepts_fraction(parser: EncodingParser, name: str) -> None:
    _, value, _ = parser.parse({"device_id": "d", name: 0.25}, RECEIVED_MS)
    assert orjson.loads(value)[name] == 0.25


@pytest.mark.parametrize("ts", [True, {}, [1]])
def test_ts_wrong_type_rejected(parser: EncodingParser, ts: object) -> None:
    err = reject(parser, {"device_id": "d", "ts": ts})
    assert err.status == 400
    assert err.field == "ts"


@pytest.mark.parametrize(
    "ts",
    [
        RECEIVED_S,
        int(RECEIVED_S) - 60,
        RECEIVED_S + 299,
        "2023-11-14T22:13:20Z",
        "2023-11-14T23:13:20+01:00",
        "2023-11-14T22:13:20",
    ],
)
def test_ts_plausible_not_flagged(parser: EncodingParser, ts: object) -> None:
    _, value, flag = parser.parse({"device_id": "d", "ts": ts}, RECEIVED_MS)
    assert flag is None
    assert orjson.loads(value)["device_ts"] == ts


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (RECEIVED_S + 301, TS_FUTURE),
        (RECEIVED_MS, TS_FUTURE),  # milliseconds sent as seconds
        ("2099-01-01T00:00:00Z", TS_FUTURE),
        (RECEIVED_S - 86_401, TS_PAST),
        (0, TS_PAST),
        (-5, TS_PAST),
        ("1999-01-01T00:00:00Z", TS_PAST),
        ("yesterday", TS_UNPARSEABLE),
        ("2023-13-01T00:00:00Z", TS_UNPARSEABLE),
        ("", TS_UNPARSEABLE),
    ],
)
def test_ts_untrusted_kept_and_flagged(
    parser: EncodingParser, ts: object, expected: str
) -> None:
    _, value, flag = parser.parse({"device_id": "d", "ts": ts}, RECEIVED_MS)
    assert flag == expected
    assert orjson.loads(value)["device_ts"] == ts
    assert orjson.loads(value)["received_ms"] == RECEIVED_MS


def test_ts_overlong_string_dropped_and_flagged(parser: EncodingParser) -> None:
    _, value, flag = parser.parse({"device_id": "d", "ts": "9" * 65}, RECEIVED_MS)
    assert flag == TS_UNPARSEABLE
    assert "device_ts" not in orjson.loads(value)


@pytest.mark.parametrize("attrs", [[], "x", 5, True])
def test_attrs_not_object_rejected(parser: EncodingParser, attrs: object) -> None:
    err = reject(parser, {"device_id": "d", "attrs": attrs})
    assert err.status == 400
    assert err.field == "attrs"


def test_attrs_over_size_rejected(parser: EncodingParser) -> None:
    err = reject(parser, {"device_id": "d", "attrs": {"k": "v" * 60}})
    assert err.field == "attrs"
    assert "at most 64 bytes" in err.message


def test_attrs_at_size_limit_accepted(parser: EncodingParser) -> None:
    attrs = {"k": "v" * 56}  # {"k":"vvv…"} is 64 bytes
    assert len(orjson.dumps(attrs)) == 64
    _, value, _ = parser.parse({"device_id": "d", "attrs": attrs}, RECEIVED_MS)
    assert orjson.loads(value)["attrs"] == attrs


@pytest.mark.parametrize("attrs", [{"a": {"b": {}}}, {"a": [[1]]}, {"a": [{"b": 1}]}])
def test_attrs_over_depth_rejected(parser: EncodingParser, attrs: object) -> None:
    err = reject(parser, {"device_id": "d", "attrs": attrs})
    assert err.field == "attrs"
    assert "2 levels" in err.message


@pytest.mark.parametrize("max_depth", [2, 1000])
def test_attrs_beyond_encoder_depth_rejected(max_depth: int) -> None:
    # orjson decodes 300 levels but raises when it encodes 255 or more.
    attrs = orjson.loads(b'{"a":' + b"[" * 300 + b"]" * 300 + b"}")
    parser = HeartbeatParser(
        attrs_max_bytes=4096,
        attrs_max_depth=max_depth,
        ts_max_ahead_s=300,
        ts_max_age_s=60,
    )
    err = reject(parser, {"device_id": "d", "attrs": attrs})
    assert err.status == 400
    assert err.field == "attrs"
    assert f"{max_depth} levels" in err.message


@pytest.mark.parametrize("attrs", [{}, {"a": 1}, {"a": {"b": 1}}, {"a": [1, "x"]}])
def test_attrs_within_depth_accepted(parser: EncodingParser, attrs: object) -> None:
    _, value, _ = parser.parse({"device_id": "d", "attrs": attrs}, RECEIVED_MS)
    assert orjson.loads(value)["attrs"] == attrs


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
heartbeat_like = st.fixed_dictionaries(
    {},
    optional={
        "device_id": json_values
        | st.from_regex(r"[A-Za-z0-9._:/-]{1,10}", fullmatch=True),
        "ts": json_values,
        "seq": json_values,
        "interval_s": json_values,
        "timeout_s": json_values,
        "attrs": json_values,
    },
)


@given(data=heartbeat_like | json_values)
def test_parse_any_json_raises_only_400(data: object) -> None:
    parser = EncodingParser(
        HeartbeatParser(
            attrs_max_bytes=64, attrs_max_depth=2, ts_max_ahead_s=300, ts_max_age_s=60
        )
    )
    try:
        device_id, value, _ = parser.parse(data, RECEIVED_MS)
    except IngestError as err:
        assert err.status == 400
        assert err.field
        return
    assert decode_heartbeat(value).device_id == device_id


periods = st.integers(min_value=1, max_value=PERIOD_MAX_S) | st.floats(
    min_value=0.001, max_value=PERIOD_MAX_S
)
valid_heartbeats = st.fixed_dictionaries(
    {"device_id": st.from_regex(r"[A-Za-z0-9._:/-]{1,128}", fullmatch=True)},
    optional={
        "ts": st.integers(min_value=0, max_value=2**63)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=10)
        | st.text(min_size=TS_MAX_CHARS - 4, max_size=TS_MAX_CHARS + 4),
        "seq": st.integers(min_value=0, max_value=SEQ_MAX),
        "timeout_s": periods,
        "interval_s": periods,
        "attrs": st.dictionaries(
            st.text(max_size=6),
            st.none() | st.integers(-(2**63), 2**63) | st.text(max_size=8),
            max_size=3,
        ),
        "extra": json_values,
    },
)


@given(data=valid_heartbeats)
@example(data={"device_id": "d", "ts": "x" * TS_MAX_CHARS})
@example(data={"device_id": "d", "ts": "x" * (TS_MAX_CHARS + 1)})
@example(data={"device_id": "d", "ts": 1e16, "timeout_s": 0.1, "interval_s": 1e-3})
def test_record_bytes_equal_heartbeat_record(data: dict[str, object]) -> None:
    parser = EncodingParser(
        HeartbeatParser(
            attrs_max_bytes=1024, attrs_max_depth=2, ts_max_ahead_s=300, ts_max_age_s=60
        )
    )
    _, value, flag = parser.parse(orjson.loads(orjson.dumps(data)), RECEIVED_MS)
    ts = data.get("ts")
    expected = HeartbeatRecord(
        device_id=str(data["device_id"]),
        received_ms=RECEIVED_MS,
        # A device_ts string longer than the limit is left out of the record.
        device_ts=None if isinstance(ts, str) and len(ts) > TS_MAX_CHARS else ts,
        device_ts_flag=flag,
        seq=data.get("seq"),
        timeout_s=data.get("timeout_s"),
        interval_s=data.get("interval_s"),
        attrs=data.get("attrs"),
    )
    assert value == expected.encode()
