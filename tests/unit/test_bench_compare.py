"""Ratios, paired differences and arguments of the revision comparison bench."""

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_compare = importlib.import_module("ingest_compare")
ingest_services = importlib.import_module("ingest_services")

MACHINE: dict[str, object] = {
    "nproc": 2,
    "cpu_model": "AMD EPYC",
    "memory_gib": 23.5,
    "kernel": "6.18",
    "python": "3.11.7",
    "load_avg": [0.25, 0.5, 1.0],
}


def server(label: str, per_cpu_s: list[float]):  # type: ignore[no-untyped-def]
    child = ingest_services.ChildProcess(label, ["true"], Path("/dev/null"))
    return ingest_compare.Server(
        label,
        child,
        "http://127.0.0.1:1/v1/heartbeats",
        per_cpu_s=per_cpu_s,
        switches_per_request=[0.5] * len(per_cpu_s),
    )


def test_report_ratios_and_pairs() -> None:
    args = ingest_compare.parse_args(["HEAD", "."])
    servers = [
        server("no-op app", [40_000.0, 36_000.0, 38_000.0]),
        server("HEAD", [32_000.0, 28_800.0, 30_400.0]),
        server("working tree", [34_000.0, 28_080.0, 31_920.0]),
    ]
    text, data = ingest_compare.report(servers, args, MACHINE)

    assert data["servers"]["HEAD"]["ratios"] == [0.8, 0.8, 0.8]
    assert data["servers"]["working tree"]["ratios"] == [0.85, 0.78, 0.84]
    paired = data["paired"]["working tree"]
    assert paired["against"] == "HEAD"
    assert paired["differences"] == [0.05, -0.02, 0.04]
    assert paired["higher_in"] == 2
    assert paired["median_difference"] == 0.04
    assert "| HEAD | 30,400 | 0.800 |" in text
    assert "ratio higher in 2 of 3 rounds, by a median of +0.040" in text
    assert "- Machine: 2 cores, AMD EPYC, 23.5 GiB RAM, Linux 6.18" in text
    assert "load average at start 0.25 0.50 1.00" in text


def test_report_one_revision_has_no_pairs() -> None:
    args = ingest_compare.parse_args(["."])
    servers = [
        server("no-op app", [40_000.0]),
        server("working tree", [30_000.0]),
    ]
    text, data = ingest_compare.report(servers, args, MACHINE)

    assert data["paired"] == {}
    assert "| working tree | 30,000 | 0.750 | 0.750 | 0.50 |" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["HEAD", "HEAD"],
        ["--rounds", "0"],
        ["--duration", "0.5"],
        ["--ingest-env", "HBMON_INGEST_LINGER_MS"],
        ["no-such-revision"],
        ["--duration", "nan"],
        ["--warmup", "inf"],
        ["--connections", "0"],
    ],
)
def test_bad_arguments_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        ingest_compare.parse_args(argv)


def test_default_compares_head_with_working_tree() -> None:
    assert ingest_compare.parse_args([]).revisions == ["HEAD", "."]


def test_ingest_env_reads_name_value_pairs() -> None:
    args = ingest_compare.parse_args(
        ["--ingest-env", "HBMON_INGEST_LINGER_MS=20", "--ingest-env", "A=b=c"]
    )

    assert dict(args.ingest_env) == {"HBMON_INGEST_LINGER_MS": "20", "A": "b=c"}
