"""SMTP delivery over smtplib, with failures classified as transient or permanent.

Delivery is synchronous. Each mail channel runs in its own thread, so a
slow or unreachable SMTP server holds up only that channel.
"""

import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import TYPE_CHECKING

from alerter.channels.base import DeliveryError
from alerter.settings import AlerterSettings

if TYPE_CHECKING:
    from typing_extensions import Buffer

logger = logging.getLogger(__name__)

# The SMTP command whose reply raises each exception, for error messages.
_COMMANDS = {
    smtplib.SMTPSenderRefused: "MAIL FROM",
    smtplib.SMTPDataError: "DATA",
    smtplib.SMTPHeloError: "EHLO/HELO",
    smtplib.SMTPAuthenticationError: "AUTH",
}


# Errors that carry a reply, so the connection still works.
_REPLIES = (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused)


class _Smtp(smtplib.SMTP):
    """smtplib.SMTP with a separate socket timeout for the DATA exchange.

    `data_timeout_s` covers the DATA command, the message data and the
    reply to its end. Every other step keeps the constructor's timeout.
    """

    data_timeout_s: float | None = None

    def data(self, msg: "Buffer | str") -> tuple[int, bytes]:
        if self.sock is None or self.data_timeout_s is None:
            return super().data(msg)
        self.sock.settimeout(self.data_timeout_s)
        try:
            return super().data(msg)
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    """_Smtp over implicit TLS."""


class SmtpMailer:
    """An SMTP client that keeps one connection open across mails.

    `smtp_timeout_s` applies to each blocking socket operation: the
    connect and every command's reply. The DATA exchange, up to the reply
    to the end of the message, has `smtp_data_timeout_s` instead. Not
    thread-safe.
    """

    def __init__(self, settings: AlerterSettings) -> None:
        self.settings = settings
        self._connection: smtplib.SMTP | None = None

    @property
    def address(self) -> str:
        """The server as `host:port`, for log lines."""
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def send(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """Make one delivery attempt and return the recipients the server rejected.

        The mail counts as delivered when at least one recipient was
        accepted. The returned dict maps each rejected address to the
        server's reply code and text. An open connection is checked with
        NOOP first, and a new one is opened when the server closed it
        while it sat idle. Any failure after that is the mail's, never
        retried here: a connection that breaks after the message data was
        sent may have delivered a mail that a later attempt sends again.

        Raises:
            DeliveryError: no recipient got the mail.
        """
        connection = self._connection
        if connection is not None and not _answers_noop(connection):
            logger.debug(
                "SMTP server %s gave no 250 to NOOP on the open connection; "
                "opening a new one",
                self.address,
            )
            self._connection = None
            connection.close()
        if self._connection is None:
            self._connection = self._open()
        try:
            return self._connection.send_message(message)
        except OSError as err:
            if isinstance(err, _REPLIES):
                self.close()
            else:
                # No QUIT: a server that timed out or left would not reply to it.
                connection, self._connection = self._connection, None
                connection.close()
            raise classify_error(err) from err

    def close(self) -> None:
        """Send QUIT and close the connection, if one is open."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except OSError:
            connection.close()

    def _open(self) -> smtplib.SMTP:
        settings = self.settings

        # 1. Connect, wrapping the socket in TLS at once for implicit TLS.
        try:
            context = None
            if settings.smtp_security != "none":
                cafile = settings.smtp_ca_file or None
                context = ssl.create_default_context(cafile=cafile)
            if settings.smtp_security == "tls":
                connection: _Smtp = _SmtpSsl(
                    settings.smtp_host,
                    settings.smtp_port,
                    timeout=settings.smtp_timeout_s,
                    context=context,
                )
            else:
                connection = _Smtp(
                    settings.smtp_host,
                    settings.smtp_port,
                    timeout=settings.smtp_timeout_s,
                )
            connection.data_timeout_s = settings.smtp_data_timeout_s
        except OSError as err:
            step = f"connecting to SMTP server {self.address}"
            if isinstance(err, smtplib.SMTPServerDisconnected):
                # smtplib raises this only after the TCP connection is up.
                step = f"waiting for the greeting of SMTP server {self.address}"
            raise _setup_error(step, err) from err

        # 2. Greet, upgrade to TLS and log in. starttls() raises rather than
        # continue in plain text when the server does not offer STARTTLS.
        try:
            connection.ehlo_or_helo_if_needed()
            if settings.smtp_security == "starttls":
                connection.starttls(context=context)
                connection.ehlo_or_helo_if_needed()
            if settings.smtp_user:
                connection.login(settings.smtp_user, settings.smtp_password)
        except OSError as err:
            connection.close()
            step = f"setting up the SMTP session with {self.address}"
            raise _setup_error(step, err) from err

        logger.debug("Connected to SMTP server %s", self.address)
        return connection


def classify_error(err: OSError) -> DeliveryError:
    """Wrap an smtplib or socket error from sending a message as a DeliveryError.

    5xx replies are permanent. 4xx replies, other reply codes, timeouts
    and connection errors are transient. When the server rejected every
    recipient, the error is transient if at least one rejection was 4xx.
    """
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in err.recipients.values()]
        rejections = "; ".join(
            f"{address}: {code} {_text(reply)}"
            for address, (code, reply) in err.recipients.items()
        )
        return DeliveryError(
            f"SMTP server rejected every recipient (RCPT TO): {rejections}",
            retriable=any(400 <= code < 500 for code in codes),
            code=min(codes, default=None),
        )
    if isinstance(err, smtplib.SMTPConnectError):
        # The greeting is not a reply to a command.
        return DeliveryError(
            f"SMTP server greeted with {err.smtp_code} {_text(err.smtp_error)} "
            "instead of 220",
            retriable=not 500 <= err.smtp_code < 600,
            code=err.smtp_code,
        )
    if isinstance(err, smtplib.SMTPResponseException):
        command = _COMMANDS.get(type(err), "a command")
        return DeliveryError(
            f"SMTP server replied {err.smtp_code} {_text(err.smtp_error)} to {command}",
            retriable=not 500 <= err.smtp_code < 600,
            code=err.smtp_code,
        )
    # When a read times out, smtplib raises SMTPServerDisconnected with a
    # text about a closed connection.
    if isinstance(err, TimeoutError) or isinstance(err.__context__, TimeoutError):
        reason = "SMTP server timed out"
    elif isinstance(err, smtplib.SMTPServerDisconnected):
        reason = f"SMTP server closed the connection ({err})"
    elif isinstance(err, smtplib.SMTPException):
        reason = f"SMTP error: {err}"
    else:
        reason = f"SMTP connection failed: {err}"
    return DeliveryError(reason, retriable=True, code=None)


def _answers_noop(connection: smtplib.SMTP) -> bool:
    """Return whether the server replies 250 to NOOP on `connection`."""
    try:
        code, _ = connection.noop()
    except OSError:
        return False
    return code == 250


def _setup_error(step: str, err: OSError) -> DeliveryError:
    detail = classify_error(err)
    hint = ""
    if isinstance(err, smtplib.SMTPAuthenticationError):
        hint = "; check HBMON_SMTP_USER and HBMON_SMTP_PASSWORD"
    return DeliveryError(
        f"{step} failed: {detail}{hint}", retriable=True, code=detail.code
    )


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="replace")
    return reply
