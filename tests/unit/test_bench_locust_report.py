"""Reading Locust's output files and the run time option of the Locust runner."""

import importlib
import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_locust = importlib.import_module("ingest_locust")
report = importlib.import_module("ingest_locust_report")


def entry(name: str, times: dict[str, int], start: float, last: float) -> dict:
    return {
        "name": name,
        "method": "POST",
        "num_requests": sum(times.values()),
        "num_failures": 1,
        "response_times": times,
        "max_response_time": max(float(t) for t in times) + 0.4,
        "start_time": start,
        "last_request_timestamp": last,
    }


def test_read_totals_adds_aggregated_over_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "locust_final.json"
    entries = [
        entry("/v1/heartbeats", {"1": 90, "5": 10}, start=100.0, last=110.0),
        entry("/v1/heartbeats/batch", {"20": 100}, start=102.0, last=120.0),
    ]
    path.write_text(json.dumps(entries))

    totals = {t.name: t for t in report.read_totals(path)}

    aggregated = totals["Aggregated"]
    assert aggregated.requests == 200
    assert aggregated.failures == 2
    assert aggregated.requests_per_s == 10.0  # 200 requests from 100 s to 120 s
    assert aggregated.percentiles_ms["p50"] == 5.0
    assert aggregated.percentiles_ms["max"] == 20.4


def test_read_totals_of_one_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "locust_final.json"
    path.write_text(json.dumps([entry("/v1/heartbeats", {"1": 99, "7": 1}, 0, 4)]))

    single = report.read_totals(path)[0]

    assert single.requests_per_s == 25.0
    assert single.percentiles_ms["p99"] == 1.0
    assert single.percentiles_ms["max"] == 7.4


def test_histogram_percentile_of_empty_histogram_is_nan() -> None:
    assert math.isnan(report.histogram_percentile(Counter(), 99.0))


def test_read_history_keeps_aggregated_rows(tmp_path: Path) -> None:
    path = tmp_path / "locust_stats_history.csv"
    columns = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%"
    path.write_text(
        f"{columns}\n"
        "100,0,,Aggregated,0.000000,0.000000,N/A,N/A,N/A\n"
        "101,5,POST,/v1/heartbeats,9.0,0.0,1,4,6\n"
        "101,5,,Aggregated,9.0,0.5,1,4,6\n"
    )

    points = report.read_history(path)

    assert [p.timestamp for p in points] == [100, 101]
    assert points[0].percentiles_ms["99%"] is None
    assert points[1].users == 5
    assert points[1].failures_per_s == 0.5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("2m", 120), ("1h30m", 5400), ("1m5s", 65)],
)
def test_parse_run_time_accepts_locust_forms(text: str, seconds: int) -> None:
    assert ingest_locust.parse_run_time(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "ten", "5x"])
def test_parse_run_time_rejects_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match="run time"):
        ingest_locust.parse_run_time(text)
