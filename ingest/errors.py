"""The one exception type of the ingest layer."""

Headers = list[tuple[bytes, bytes]]


class IngestError(Exception):
    """A request or batch item that ingest rejects.

    `status` is the HTTP status of the response. `field` names the part of
    the request at fault: a JSON field, `body`, `item`, or a header such as
    `Content-Type`. It is empty when the request is valid but the service
    cannot take it now. `retriable` is true when the same request may
    succeed later (the 503 cases). `reason` labels the rejection in metrics.
    """

    def __init__(
        self,
        status: int,
        field: str,
        message: str,
        *,
        retriable: bool = False,
        reason: str = "",
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        self.retriable = retriable
        self.reason = reason or _REASONS.get(status, "invalid")
        self.headers = headers or []


# Metric label for each status, unless the raiser names a finer reason.
_REASONS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


def invalid(field: str, message: str) -> IngestError:
    """Return the 400 error for a field that breaks a rule."""
    return IngestError(400, field, message)
