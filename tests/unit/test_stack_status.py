"""How `hbmon stack` names the way a service process ended."""

import pytest

from hbmon.stack import exit_status


@pytest.mark.parametrize(
    ("returncode", "status"),
    [
        (0, "code 0"),
        (2, "code 2"),
        (-9, "signal SIGKILL"),
        (-2, "signal SIGINT"),
        (-200, "signal 200"),
    ],
)
def test_exit_status_names_code_or_signal(returncode: int, status: str) -> None:
    assert exit_status(returncode) == status
