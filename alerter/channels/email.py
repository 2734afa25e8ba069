"""The mail channel: one mail per notification to a receiver's addresses."""

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from alerter import digest
from alerter.channels.base import DeliveryError, one_unit
from alerter.message import message_id_for, printable
from alerter.notification import Item, Kind, Notification
from alerter.settings import AlerterSettings
from alerter.smtp import SmtpMailer

logger = logging.getLogger(__name__)

# How long recipients that an SMTP server deferred are tried again once
# others got the mail. Each try delays the receiver's later mail, so after
# this the channel gives up on them. Greylisting servers (postgrey: 300 s)
# accept within it.
DEFERRED_RETRY_S = 600.0


class EmailChannel:
    """Mails notifications over one reused SMTP connection."""

    kind = "email"

    def __init__(
        self,
        settings: AlerterSettings,
        recipients: Sequence[str],
        heartbeat_topic: str,
        mailer: SmtpMailer | None = None,
    ) -> None:
        self.settings = settings
        self.recipients = tuple(recipients)
        self.heartbeat_topic = heartbeat_topic
        self.mailer = mailer or SmtpMailer(settings)
        # For each notification with deferred recipients: those done with it
        # (accepted, or rejected for good) and when the first was deferred.
        self._done: dict[str, tuple[set[str], datetime]] = {}

    def units(self, notification: Notification) -> list[tuple[Item, ...]]:
        return one_unit(notification)

    def send(self, notification: Notification, now: datetime) -> None:
        """Mail the notification to every recipient not done with it yet.

        A recipient rejected with a 4xx reply is tried again on the next
        attempt, alone or with the other deferred ones, for up to
        DEFERRED_RETRY_S, and one rejected with a 5xx reply is not: the log
        names both.

        Raises:
            DeliveryError: no recipient got the mail, or some got it and
                others were deferred with a 4xx reply (retriable).
        """
        notification_id = notification.notification_id
        done, deferred_at = self._done.get(notification_id, (set(), now))
        recipients = [r for r in self.recipients if r not in done]
        message = compose(
            notification,
            sender=self.settings.sender,
            recipients=recipients,
            now=now,
            heartbeat_topic=self.heartbeat_topic,
        )
        give_up = (now - deferred_at).total_seconds() >= DEFERRED_RETRY_S
        try:
            rejected = self.mailer.send(message)
        except DeliveryError as err:
            if not (done and give_up):
                raise
            self._give_up(notification_id, recipients, str(err))
            return
        deferred = {a: code for a, (code, _) in rejected.items() if code < 500}
        permanent = {a: code for a, (code, _) in rejected.items() if code >= 500}
        if permanent:
            logger.warning(
                "SMTP server rejected recipients %s of notification %s for good, "
                "so they do not get it",
                _addresses_with_codes(permanent),
                notification_id,
            )
        if not deferred:
            self._done.pop(notification_id, None)
            return
        if give_up:
            self._give_up(
                notification_id, list(deferred), _addresses_with_codes(deferred)
            )
            return
        accepted = {r for r in recipients if r not in deferred}
        self._done[notification_id] = (done | accepted, deferred_at)
        code = next(iter(deferred.values()))
        raise DeliveryError(
            f"SMTP server deferred recipients {_addresses_with_codes(deferred)}; "
            "the others got the mail, and only the deferred ones get it on the "
            "next attempt",
            retriable=True,
            code=code,
        )

    def _give_up(self, notification_id: str, recipients: list[str], last: str) -> None:
        self._done.pop(notification_id, None)
        logger.error(
            "Gave up on recipients %s of notification %s after %.0f s of deferrals, "
            "so they do not get it; the others did. Last failure: %s",
            ", ".join(recipients),
            notification_id,
            DEFERRED_RETRY_S,
            last,
        )

    def close(self) -> None:
        self.mailer.close()


def compose(
    notification: Notification,
    *,
    sender: str,
    recipients: Sequence[str],
    now: datetime,
    heartbeat_topic: str,
) -> EmailMessage:
    """Build the mail: plain text, an HTML alternative, and a CSV for digests.

    Mails about a single event carry X-Hbmon-Event-Id and X-Hbmon-Device-Id
    headers; every mail carries X-Hbmon-Event-Type, X-Hbmon-Notification
    (the kind), X-Hbmon-Devices (how many devices) and X-Hbmon-Route. Mails
    about monitoring also carry X-Hbmon-Partitions.
    """
    items = notification.items
    message = EmailMessage()
    message["Subject"] = digest.subject(notification, now, heartbeat_topic)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now.astimezone(UTC))
    single = len(items) == 1 and notification.kind in (Kind.DOWN, Kind.RECOVERED)
    key = items[0].event.event_id if single else notification.notification_id
    message["Message-ID"] = message_id_for(key)
    if len(items) == 1:
        message["X-Hbmon-Event-Id"] = printable(items[0].event.event_id)
        message["X-Hbmon-Device-Id"] = printable(items[0].event.device_id)
    message["X-Hbmon-Event-Type"] = items[0].event.type
    message["X-Hbmon-Notification"] = notification.kind.name
    message["X-Hbmon-Notification-Id"] = notification.notification_id
    message["X-Hbmon-Devices"] = str(digest.device_count(notification))
    if notification.kind in (Kind.DEGRADED, Kind.RESTORED):
        message["X-Hbmon-Partitions"] = str(digest.partition_count(notification))
    message["X-Hbmon-Route"] = printable(notification.route)
    message.set_content(digest.text(notification, now, heartbeat_topic))
    message.add_alternative(
        digest.html_text(notification, now, heartbeat_topic), subtype="html"
    )
    if notification.is_digest:
        message.add_attachment(
            digest.devices_csv(notification).encode(),
            maintype="text",
            subtype="csv",
            filename=digest.CSV_NAME,
        )
    return message


def _addresses_with_codes(codes: dict[str, int]) -> str:
    return "; ".join(f"{address} ({code})" for address, code in codes.items())
