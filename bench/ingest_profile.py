"""Sample the ingest process with py-spy and sum the samples by area and function.

py-spy (PyPI "py-spy", 0.4) samples the Python threads of a running
process, here with native frames, so time spent in C extensions and in
system calls shows under its own name. It does not see threads that
never run Python code, such as librdkafka's; their CPU time comes from
/proc instead (see ingest_cpu.read_threads).

A sample is charged to its leaf frame, but frames of the interpreter
itself (reference counting, the eval loop, memory copies in libc) are
folded into the nearest frame above them that belongs to a known area.
"""

import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Native frames named after the system call that they are.
SYSCALLS = {
    "read",
    "write",
    "readv",
    "writev",
    "recv",
    "recvfrom",
    "recvmsg",
    "send",
    "sendto",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "accept4",
}
# Native frames by the file that py-spy names, for the libraries that
# serve a request. Frames of other native files count as interpreter time.
NATIVE_AREAS = {
    "loop.c": "uvloop and libuv",
    "core.c": "uvloop and libuv",
    "stream.c": "uvloop and libuv",
    "linux.c": "uvloop and libuv",
    "timer.c": "uvloop and libuv",
    "uv-common.c": "uvloop and libuv",
    "_asynciomodule.c": "asyncio tasks (C)",
    "_asynciomodule.c.h": "asyncio tasks (C)",
    "llhttp.c": "httptools",
    "api.c": "httptools",
    "http.c": "httptools",
    "url_parser.c": "httptools",
}
PYTHON_AREAS = {
    "ingest": "ingest code",
    "hbmon": "ingest code",
    "starlette": "Starlette",
    "uvicorn": "uvicorn",
    "asyncio": "asyncio (Python)",
    "prometheus_client": "prometheus_client",
}
ROOT_SHARE = 0.95
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


class ProfileError(RuntimeError):
    """py-spy is missing or failed."""


@dataclass(frozen=True)
class ProfileSummary:
    """Shares of the active samples, in percent, by area and by function."""

    samples: int
    areas: list[tuple[str, float]]
    self_functions: list[tuple[str, float]]
    inclusive_functions: list[tuple[str, float]]

    def to_json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "areas_pct": dict(self.areas),
            "self_pct": dict(self.self_functions),
            "inclusive_pct": dict(self.inclusive_functions),
        }


def record_command(
    pid: int, duration_s: float, output: Path, rate_hz: int
) -> list[str]:
    """Return the py-spy command that samples `pid` for `duration_s`.

    It writes collapsed stacks ("frame;frame;... count" lines) to `output`.
    """
    return [
        py_spy_path(),
        "record",
        f"--pid={pid}",
        f"--duration={max(1, round(duration_s))}",
        f"--rate={rate_hz}",
        "--format=raw",
        "--function",
        "--native",
        f"--output={output}",
    ]


def py_spy_path() -> str:
    """Return py-spy next to this Python (as in a venv), else the one on PATH.

    Raises:
        ProfileError: py-spy is in neither place.
    """
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfileError(
            "py-spy not found; install the bench extra: pip install -e '.[bench]'"
        )
    return found


def summarize(collapsed: str, top: int = 15) -> ProfileSummary:
    """Sum collapsed stacks ("frame;frame;... count" lines) by area and function."""
    areas: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        area, function = charge(frames)
        areas[area] += count
        self_counts[function] += count
        for frame in set(frames):
            if frame_area(frame) in ("ingest code", "Starlette", "uvicorn"):
                inclusive[short_name(frame)] += count
    # Drop frames that are on nearly every stack, such as the server's main loop.
    for name, count in list(inclusive.items()):
        if count >= ROOT_SHARE * samples:
            del inclusive[name]
    return ProfileSummary(
        samples=samples,
        areas=_shares(areas, samples, len(areas)),
        self_functions=_shares(self_counts, samples, top),
        inclusive_functions=_shares(inclusive, samples, top),
    )


def charge(frames: list[str]) -> tuple[str, str]:
    """Return the area and function that a sample with `frames` (root first) is for."""
    for frame in reversed(frames):
        area = frame_area(frame)
        if area is not None:
            return area, short_name(frame)
    return "interpreter", short_name(frames[-1])


def frame_area(frame: str) -> str | None:
    """Return the area of one frame, or None for interpreter internals."""
    match = _FRAME.match(frame)
    if match is None:
        return None
    name, file = match["name"], match["file"]
    if file.endswith(".py"):
        return PYTHON_AREAS.get(file.split("/", 1)[0], "other Python")
    if file.startswith("libc.so") and name in SYSCALLS:
        return "socket and epoll system calls"
    if "librdkafka" in file or file.startswith("confluent_kafka/"):
        return "confluent-kafka and librdkafka"
    if file.startswith("orjson/"):
        return "orjson"
    if file.startswith("httptools/"):
        return "httptools"
    return NATIVE_AREAS.get(file)


def short_name(frame: str) -> str:
    """Return "function (file)" without the line number."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['name']} ({match['file']})"


def _shares(counts: Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [
        (name, round(100.0 * count / total, 1))
        for name, count in counts.most_common(top)
    ]
