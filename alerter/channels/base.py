"""The channel interface, and the error type of the delivery layer."""

from datetime import datetime
from typing import Protocol

from alerter.notification import Item, Notification


class DeliveryError(Exception):
    """A notification was not delivered.

    `retriable` is False when the receiver rejected this notification for
    good (an SMTP 5xx reply to MAIL FROM, RCPT TO or DATA; an HTTP 4xx
    other than 408 and 429), so sending it again would fail the same way.
    Connection errors, timeouts, SMTP 4xx and HTTP 5xx, 408 and 429 are
    retriable. `code` is the SMTP or HTTP status, or None without a reply.
    """

    def __init__(self, message: str, *, retriable: bool, code: int | None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.code = code


class Channel(Protocol):
    """Sends notifications to one receiver over one medium.

    A channel is used by one thread at a time and may keep a connection
    open between calls.
    """

    kind: str

    def units(self, notification: Notification) -> list[tuple[Item, ...]]:
        """Split a notification into the items of each request to send."""
        ...

    def send(self, notification: Notification, now: datetime) -> None:
        """Send one unit, given as a notification with the unit's items.

        Raises:
            DeliveryError: the receiver did not accept it.
        """
        ...

    def close(self) -> None: ...


def one_unit(notification: Notification) -> list[tuple[Item, ...]]:
    """Return the whole notification as a single unit, as most channels send it."""
    return [notification.items]
