"""Reading the figures that bench/wrk/heartbeats.lua prints at the end of a wrk run."""

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_wrk = importlib.import_module("ingest_wrk")

OUTPUT = """Running 20s test @ http://127.0.0.1:8080/v1/heartbeats
  1 threads and 50 connections
Requests/sec:  12019.04
WRK_JSON {"duration_us":20000000,"requests":240500,"bytes":1,"errors":{"connect":0,\
"read":0,"write":0,"status":500,"timeout":0},"latency_us":{"mean":4258.9,"max":34143,\
"p50":3700,"p90":6744,"p99":15487,"p99_9":27962}}
"""


def test_parse_wrk_output_reads_counts_and_percentiles() -> None:
    result = ingest_wrk.parse_wrk_output(OUTPUT, heartbeats_per_request=1)

    assert result.duration_s == 20.0
    assert result.requests == 240_500
    assert result.latency_us["p99"] == 15_487


def test_wrk_result_counts_only_responses_below_400() -> None:
    result = ingest_wrk.parse_wrk_output(OUTPUT, heartbeats_per_request=1)

    assert result.ok_responses == 240_000
    assert result.requests_per_s == 12_000.0


def test_wrk_result_multiplies_batches_by_their_size() -> None:
    result = ingest_wrk.parse_wrk_output(OUTPUT, heartbeats_per_request=1000)

    assert result.heartbeats == 240_000_000
    assert result.heartbeats_per_s == 12_000_000.0


def test_parse_wrk_output_without_marker_raises() -> None:
    with pytest.raises(ingest_wrk.WrkError, match="WRK_JSON"):
        ingest_wrk.parse_wrk_output("Requests/sec: 1\n", heartbeats_per_request=1)


def test_combine_results_adds_counts_and_keeps_worst_latency() -> None:
    first = ingest_wrk.WrkResult(
        duration_s=4.0,
        requests=100,
        errors={"status": 2},
        latency_us={"p50": 100.0, "p99": 900.0},
        heartbeats_per_request=1,
    )
    second = ingest_wrk.WrkResult(
        duration_s=4.0,
        requests=300,
        errors={"status": 1, "timeout": 4},
        latency_us={"p50": 200.0, "p99": 700.0},
        heartbeats_per_request=1,
    )
    combined = ingest_wrk.combine_results([first, second])

    assert combined.duration_s == 8.0
    assert combined.requests == 400
    assert combined.errors == {"status": 3, "timeout": 4}
    assert combined.ok_responses == 397
    assert combined.latency_us == {"p50": 200.0, "p99": 900.0}
