"""Summing py-spy's collapsed stacks by area and by function."""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_profile = importlib.import_module("ingest_profile")

LOOP = "run_forever (loop.c:33192);Handle__run (loop.c:70905)"
APP = "HeartbeatEndpoint.__call__ (ingest/endpoints.py:91)"
SEND = "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:461)"
STACKS = "\n".join(
    [
        # A write system call under uvicorn's send, under ingest's endpoint.
        f"{LOOP};{APP};{SEND};write (libc.so.6) 60",
        # Reference counting inside ingest's endpoint counts as the endpoint.
        f"{LOOP};{APP};Py_DECREF (object.h:537) 30",
        # Time in uvloop itself.
        f"{LOOP} 10",
    ]
)


def test_summarize_charges_system_calls_to_their_own_area() -> None:
    summary = ingest_profile.summarize(STACKS)

    assert dict(summary.areas)["socket and epoll system calls"] == 60.0


def test_summarize_folds_interpreter_frames_into_caller() -> None:
    summary = ingest_profile.summarize(STACKS)

    assert dict(summary.areas)["ingest code"] == 30.0
    assert (
        dict(summary.self_functions)["HeartbeatEndpoint.__call__ (ingest/endpoints.py)"]
        == 30.0
    )


def test_summarize_counts_callees_in_inclusive_share() -> None:
    summary = ingest_profile.summarize(STACKS)

    inclusive = dict(summary.inclusive_functions)
    assert inclusive["HeartbeatEndpoint.__call__ (ingest/endpoints.py)"] == 90.0
    assert (
        inclusive[
            "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py)"
        ]
        == 60.0
    )


def test_summarize_leaves_out_frames_on_every_stack() -> None:
    root = "main (hbmon/cli.py:43)"
    stacks = "\n".join(f"{root};{line}" for line in STACKS.splitlines())

    summary = ingest_profile.summarize(stacks)

    assert "main (hbmon/cli.py)" not in dict(summary.inclusive_functions)
    assert summary.samples == 100
