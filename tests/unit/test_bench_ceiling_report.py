"""Figures, ratios, the Kafka check and capacity of an ingest ceiling run."""

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_ceiling_report = importlib.import_module("ingest_ceiling_report")
ingest_cpu = importlib.import_module("ingest_cpu")
ingest_openloop = importlib.import_module("ingest_openloop")
ingest_wrk = importlib.import_module("ingest_wrk")
core_steadiness = importlib.import_module("core_steadiness")


def phase(server: str, mode: str, requests: int, cpu_s: float, round_index: int = 0):  # type: ignore[no-untyped-def]
    batch_size = 1000 if mode == "batch" else 1
    load = ingest_wrk.WrkLoad(mode, 100, "basic", batch_size, 8)
    wrk = ingest_wrk.WrkResult(
        duration_s=10.0,
        requests=requests,
        errors={"status": 0},
        latency_us={"p99": 1000},
        heartbeats_per_request=load.heartbeats_per_request,
    )
    cpu = ingest_cpu.CpuUsage(
        process_s=cpu_s,
        threads_s={},
        core_busy_s={0: 9.5, 1: 4.0},
        core_irq_s={0: 0.5, 1: 0.0},
        core_steal_s={0: 0.0, 1: 0.0},
    )
    return ingest_ceiling_report.Phase(
        server, mode, round_index, load, wrk, cpu, server_cores="0", load_cores="1"
    )


def result_with(phases: list[Any]) -> Any:
    result = ingest_ceiling_report.CeilingResult(machine={}, settings={})
    result.phases = phases
    return result


def test_phase_divides_by_server_cpu_seconds() -> None:
    single = phase("ingest", "single", requests=100_000, cpu_s=8.0)

    assert single.heartbeats_per_cpu_s == 12_500.0
    assert single.server_cpu_share == 0.8
    assert single.other_load_on_server_cores == pytest.approx(0.1)
    assert single.irq_on_server_cores == pytest.approx(0.05)
    assert single.load_cores_busy == pytest.approx(0.4)


def test_median_ratio_pairs_rounds() -> None:
    result = result_with(
        [
            phase("no-op", "single", 200_000, 10.0, 0),
            phase("ingest", "single", 100_000, 10.0, 0),
            phase("no-op", "single", 100_000, 5.0, 1),
            phase("ingest", "single", 70_000, 5.0, 1),
            phase("no-op", "single", 200_000, 10.0, 2),
            phase("ingest", "single", 160_000, 10.0, 2),
        ]
    )

    assert result.median_ratio("single", per_cpu_s=False) == 0.7
    assert result.median_requests_per_s("ingest", "single") == 10_000.0


def open_loop(p99_ms: float):  # type: ignore[no-untyped-def]
    return ingest_openloop.OpenLoopResult(
        rate_per_s=1000.0,
        duration_s=20.0,
        sent=20_000,
        completed=20_000,
        statuses={202: 20_000},
        errors=0,
        unanswered=0,
        connections=16,
        latency_ms={"p50": 1.0, "p90": 2.0, "p99": p99_ms, "p99_9": 9.0, "max": 9.0},
        service_ms={"p99": 1.0},
        dispatch_lag_ms={"p99": 1.0},
    )


def test_p99_is_median_of_rounds() -> None:
    result = result_with([])
    result.latency = {
        "ingest": [open_loop(40.0), open_loop(7.0), open_loop(9.0)],
        "no-op": [open_loop(3.0), open_loop(5.0), open_loop(4.0)],
    }

    assert result.median_p99_ms("ingest") == 9.0
    assert result.median_p99_ms("no-op") == 4.0


def test_combine_usage_adds_cpu_seconds() -> None:
    spans = [
        ingest_cpu.CpuUsage(
            process_s=1.0,
            threads_s={"python": 0.9, "rdk:broker1": 0.1},
            core_busy_s={0: 1.0, 1: 0.5},
            core_irq_s={0: 0.2},
            core_steal_s={0: 0.0},
        ),
        ingest_cpu.CpuUsage(
            process_s=2.0,
            threads_s={"python": 1.5, "rdk:main": 0.5},
            core_busy_s={0: 2.0, 1: 1.0},
            core_irq_s={0: 0.3},
            core_steal_s={0: 0.1},
        ),
    ]
    total = ingest_cpu.combine_usage(spans)

    assert total.process_s == 3.0
    assert total.threads_s == {"python": 2.4, "rdk:main": 0.5, "rdk:broker1": 0.1}
    assert total.core_busy_s == {0: 3.0, 1: 1.5}
    assert total.core_irq_s == {0: 0.5}
    assert total.core_steal_s == {0: 0.1}


def test_steadiness_shares_and_spells() -> None:
    steadiness = core_steadiness.Steadiness(
        core=0,
        duration_s=0.5,
        window_s=0.05,
        slowdowns=[1.0, 1.5, 1.6, 1.0, 1.2, 2.1, 1.0, 1.0, 1.0, 1.0],
    )

    assert steadiness.share_slower_than(1.43) == 0.3
    assert steadiness.share_slower_than(2.0) == 0.1
    assert steadiness.longest_spell_s(1.43) == pytest.approx(0.1)
    assert steadiness.longest_spell_s(3.0) == 0.0


def test_report_states_too_slow_windows() -> None:
    result = result_with([])
    result.settings = {"latency_share": 0.7}
    assert result.too_slow_share() is None

    result.steadiness = core_steadiness.Steadiness(
        core=0, duration_s=10.0, window_s=0.05, slowdowns=[1.0] * 96 + [1.5] * 4
    )
    assert result.too_slow_share() == 0.04
    text = " ".join(ingest_ceiling_report._format_steadiness(result))
    assert "more than 1.43 times slower than its median in 4.0% of 50 ms" in text
    assert "the longest such spell lasted 200 ms" in text


@pytest.mark.parametrize(
    "argv", [["--duration", "nan"], ["--duration", "inf"], ["--core", "99"]]
)
def test_steadiness_bad_arguments_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        core_steadiness.main(argv)


def test_steadiness_probe_measures_a_core() -> None:
    steadiness = core_steadiness.probe(0, 0.3)

    assert steadiness.core == 0
    assert 4 <= len(steadiness.slowdowns) <= 8
    assert all(value > 0 for value in steadiness.slowdowns)


def test_capacity_plans_tasks_at_half_the_ceiling() -> None:
    result = result_with(
        [
            phase("ingest", "single", 100_000, 10.0),  # 10,000 per CPU-second
            phase("ingest", "batch", 1_000, 5.0),  # 200,000 per CPU-second
        ]
    )

    rows = {row["mode"]: row for row in result.capacity()}

    assert rows["single"]["tasks"] == 20  # 100,000/s at 5,000 per task
    assert rows["batch"]["tasks"] == 1  # 100,000/s at 100,000 per task


@pytest.mark.parametrize(
    ("records", "metric", "passed"),
    [
        (1_000, 1_000, True),  # every accepted heartbeat arrived
        (1_040, 1_040, True),  # ingest queued requests that wrk cut off
        (999, 999, False),  # an accepted heartbeat is missing
        (1_060, 1_060, False),  # more than could have been in flight
        (1_000, 1_001, False),  # ingest counted one that never arrived
    ],
)
def test_kafka_check(records: int, metric: int, passed: bool) -> None:
    result = result_with([])
    result.client_accepted = 1_000
    result.in_flight_bound = 50
    result.kafka_heartbeats = records
    result.ingest_metric_accepted = metric

    assert result.kafka_check_passed() is passed


@pytest.mark.parametrize(
    ("cores", "expected"), [("0", [0]), ("1-3", [1, 2, 3]), ("0,2-3", [0, 2, 3])]
)
def test_parse_cores(cores: str, expected: list[int]) -> None:
    assert ingest_ceiling_report.parse_cores(cores) == expected


def test_stat_cpu_seconds_survive_spaces_in_command_name() -> None:
    fields = " ".join(["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30)
    stat = f"4242 (rdk:broker 1) (x) {fields}"

    cpu_s = ingest_cpu._stat_cpu_s(stat)

    assert cpu_s == 300 / ingest_cpu.CLOCK_TICKS_PER_S


@pytest.mark.parametrize(
    "argv",
    [
        ["--slices", "0"],
        ["--slices", "3"],
        ["--duration", "2", "--slices", "4"],
    ],
)
def test_slices_must_be_whole_seconds(argv: list[str]) -> None:
    ingest_ceiling = importlib.import_module("ingest_ceiling")
    with pytest.raises(SystemExit):
        ingest_ceiling.parse_args(argv)


def test_default_slices_are_whole_seconds() -> None:
    ingest_ceiling = importlib.import_module("ingest_ceiling")
    args = ingest_ceiling.parse_args([])

    assert args.duration / args.slices == 4.0
