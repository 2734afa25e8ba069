"""The monitor's exception type."""


class MonitorError(Exception):
    """The monitor cannot go on with its current state or connection.

    `retriable` errors clear up by themselves, such as a broker that does
    not respond in time. `abort_required` errors leave the open transaction
    unusable: the monitor aborts it and restores its partitions. Errors
    with neither flag are fatal, and the process exits.
    """

    def __init__(
        self, message: str, *, retriable: bool = False, abort_required: bool = False
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.abort_required = abort_required

    @property
    def fatal(self) -> bool:
        return not self.retriable and not self.abort_required
