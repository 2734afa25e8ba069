"""Control of the broker that the tests use, through deploy/kafka.sh.

Only a broker whose data dir is known can be controlled: the session
broker of the test run, or the one whose data dir HBMON_TEST_KAFKA_DIR
names when HBMON_TEST_BOOTSTRAP is set.
"""

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import KAFKA_SCRIPT, ROOT, TEST_BROKER_ENV


def data_dir() -> Path | None:
    """Return the data dir of the broker that the tests use, if it is known."""
    if os.environ.get("HBMON_TEST_BOOTSTRAP"):
        folder = os.environ.get("HBMON_TEST_KAFKA_DIR")
        if not folder:
            return None
        return ROOT / folder
    return Path(TEST_BROKER_ENV["HBMON_KAFKA_DIR"])


class LocalBroker:
    """The deploy/kafka.sh broker of one data dir, stopped and started again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        properties = (data_dir / "server.properties").read_text()
        self.bootstrap = _property(properties, r"advertised\.listeners=PLAINTEXT://")
        self.port = self.bootstrap.rsplit(":", 1)[1]
        voters = _property(properties, r"controller\.quorum\.voters=")
        self.controller_port = voters.rsplit(":", 1)[1]

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the broker with SIGTERM, as `deploy/kafka.sh stop` does."""
        self._run("stop")

    def start(self) -> None:
        """Start the broker and wait until it responds; no-op when it runs."""
        self._run("start")

    def _run(self, command: str) -> None:
        env = {
            **os.environ,
            "HBMON_KAFKA_PORT": self.port,
            "HBMON_KAFKA_CONTROLLER_PORT": self.controller_port,
            "HBMON_KAFKA_DIR": str(self.data_dir),
        }
        subprocess.run([str(KAFKA_SCRIPT), command], env=env, check=True, timeout=300)


def find_broker(bootstrap: str) -> LocalBroker | None:
    """Return the broker the tests use when its data dir serves `bootstrap`."""
    folder = data_dir()
    if folder is None or not (folder / "server.properties").exists():
        return None
    broker = LocalBroker(folder)
    if broker.bootstrap != bootstrap:
        return None
    return broker


def _property(text: str, prefix: str) -> str:
    found = re.search(rf"^{prefix}(\S+)$", text, re.MULTILINE)
    if found is None:
        raise ValueError(f"server.properties has no line matching {prefix}")
    return found.group(1)
