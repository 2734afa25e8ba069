"""The monitor's exception type."""


class MonitorError(Exception):
    """The monitor cannot go on with its current state or connection.

    `retriable` errors clear up by themselves, such as a broker that does
    not respond in time. `abort_required` errors leave the open transaction
    unusable: the monitor aborts it and restores its partitions.
    `restart_required` errors leave the transactional producer unusable:
    the monitor replaces it with a new one of the same transactional id
    and restores its partitions. Errors with none of the flags are fatal,
    and the process exits.
    """

    def __init__(
        self,
        message: str,
        *,
        retriable: bool = False,
        abort_required: bool = False,
        restart_required: bool = False,
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.abort_required = abort_required
        self.restart_required = restart_required

    @property
    def fatal(self) -> bool:
        return not (self.retriable or self.abort_required or self.restart_required)
