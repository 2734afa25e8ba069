"""A local SMTP server that stores every accepted message as an .eml file.

The one-command stack delivers alert mails to it, and tests use it as a
real SMTP server that rejects mail on request.
"""

import asyncio
import itertools
import logging
import os
import socket
import ssl
import threading
from collections.abc import Awaitable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

logger = logging.getLogger(__name__)

REJECT_STAGES = ("RCPT", "DATA")


class LocalMailbox:
    """An aiosmtpd server on a local address that writes each mail to `folder`.

    Files are named `<UTC timestamp>-<counter>.eml`, such as
    `20240501T140211.123456Z-000001.eml`, and carry the headers X-Peer,
    X-MailFrom and X-RcptTo with the client address and the SMTP envelope.
    Port 0 picks a free port, and `port` contains the bound port after start().

    `security` is "none", "starttls" (STARTTLS offered with `tls_context`)
    or "tls" (every connection wrapped in TLS). With `credentials`, which
    need "starttls", the server offers AUTH after STARTTLS and accepts mail
    only from a client that logged in with that user and password.
    """

    def __init__(
        self,
        folder: Path | str,
        port: int = 8025,
        *,
        host: str = "127.0.0.1",
        security: str = "none",
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.port = port
        self.host = host
        self.security = security
        self.tls_context = tls_context
        self.credentials = credentials
        self._handler = _StoringHandler(self.folder)
        self._controller: _Controller | None = None

    def start(self) -> None:
        """Create the folder and start serving in a background thread.

        Raises:
            ValueError: `security` is unknown, TLS lacks a `tls_context`, or
                `credentials` come without "starttls".
            OSError: the port cannot be bound.
        """
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(
                f"security={self.security!r} is invalid; use none, starttls or tls"
            )
        if self.security != "none" and self.tls_context is None:
            raise ValueError(f"security={self.security!r} needs a tls_context")
        if self.credentials is not None and self.security != "starttls":
            raise ValueError(
                f"credentials need security='starttls', not {self.security!r}"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = _Controller(
            self._handler,
            hostname=self.host,
            port=self.port,
            server_hostname="hbmon-mailbox",
            ssl_context=self.tls_context if self.security == "tls" else None,
            tls_context=self.tls_context if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            authenticator=self._authenticate if self.credentials else None,
            auth_required=self.credentials is not None,
        )
        self._controller.start()
        self.port = self._controller.port
        logger.info(
            "Local mailbox listening on %s:%d, storing mail in %s",
            self.host,
            self.port,
            self.folder,
        )

    def stop(self) -> None:
        """Stop serving; stored files stay in the folder."""
        if self._controller is None:
            return
        self._controller.stop()
        self._controller = None
        logger.info("Local mailbox on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> "LocalMailbox":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def reject_mail(self, code: int, *, stage: str = "DATA", after: int = 0) -> None:
        """Reply `code` to every RCPT TO or DATA command until accept_mail().

        Use a 4xx code, such as 451, for a transient failure and a 5xx code,
        such as 550, for a permanent one. With `after`, that many more mails
        are accepted and stored first.

        Raises:
            ValueError: `code` is not 400-599, `stage` is not RCPT or DATA, or
                `after` is negative.
        """
        _check_reply_code(code)
        if stage not in REJECT_STAGES:
            raise ValueError(f"stage={stage!r} is invalid; use RCPT or DATA")
        if after < 0:
            raise ValueError(f"after={after} is invalid; use 0 or more")
        with self._handler.lock:
            self._handler.accept_budget = after
            self._handler.rejection = (code, stage)

    def reject_recipient(self, address: str, code: int) -> None:
        """Reply `code` to RCPT TO for `address` only, until accept_mail().

        Raises:
            ValueError: `code` is not 400-599.
        """
        _check_reply_code(code)
        with self._handler.lock:
            self._handler.rejected_recipients[address.lower()] = code

    def delay_data_reply(self, delay_s: float) -> None:
        """Store each mail, then wait `delay_s` before replying to its DATA.

        A client that times out before the reply and retries delivers the
        same mail twice. 0 replies at once again.

        Raises:
            ValueError: `delay_s` is negative.
        """
        if delay_s < 0:
            raise ValueError(f"delay_s={delay_s} is invalid; use 0 or more")
        with self._handler.lock:
            self._handler.data_delay_s = delay_s

    def accept_mail(self) -> None:
        """Accept and store mail again after reject_mail() or reject_recipient()."""
        with self._handler.lock:
            self._handler.rejection = None
            self._handler.accept_budget = 0
            self._handler.rejected_recipients.clear()

    @property
    def rejected_count(self) -> int:
        """Number of RCPT TO or DATA commands rejected since start."""
        return self._handler.rejected_count

    def paths(self) -> list[Path]:
        """Return the stored .eml files, oldest first."""
        return sorted(self.folder.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        """Return the stored messages, parsed, oldest first."""
        parser = BytesParser(policy=default_policy)
        return [parser.parsebytes(path.read_bytes()) for path in self.paths()]

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = self.credentials
        success = (
            auth_data.login.decode() == user and auth_data.password.decode() == password
        )
        # handled=False makes aiosmtpd send the 235 or 535 reply itself.
        return AuthResult(success=success, handled=False)


def _check_reply_code(code: int) -> None:
    if not 400 <= code <= 599:
        raise ValueError(f"code={code} is invalid; use a 4xx or 5xx reply code")


class _StoringHandler:
    """aiosmtpd handler hooks that store each message, or reject it on request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rejection: tuple[int, str] | None = None
        # Reply codes to RCPT TO, by lower-case address.
        self.rejected_recipients: dict[str, int] = {}
        # Mails still accepted before `rejection` applies.
        self.accept_budget = 0
        self.rejected_count = 0
        # Seconds between storing a mail and the reply to its DATA.
        self.data_delay_s = 0.0
        self._counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._rejection_reply("RCPT")
        if reply:
            return reply
        with self.lock:
            code = self.rejected_recipients.get(address.lower())
            if code is not None:
                self.rejected_count += 1
        if code is not None:
            return f"{code} Local mailbox rejects {address} (test mode)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = self._rejection_reply("DATA")
        if reply:
            return reply
        with self.lock:
            if self.rejection is not None and self.accept_budget > 0:
                self.accept_budget -= 1
        path = self._store(session, envelope)
        logger.debug("Stored mail from %s in %s", envelope.mail_from, path.name)
        with self.lock:
            delay_s = self.data_delay_s
        if delay_s:
            await asyncio.sleep(delay_s)
        return "250 Message accepted for delivery"

    def _rejection_reply(self, stage: str) -> str | None:
        with self.lock:
            rejection = self.rejection
            if rejection is None or rejection[1] != stage or self.accept_budget > 0:
                return None
            self.rejected_count += 1
        code = rejection[0]
        kind = "temporarily" if code < 500 else "permanently"
        return f"{code} Local mailbox rejects mail {kind} (test mode)"

    def _store(self, session: Session, envelope: Envelope) -> Path:
        # Write to a hidden temporary name first, so that messages() never
        # reads a half-written file.
        now = datetime.now(UTC)
        with self.lock:
            number = next(self._counter)
        name = f"{now:%Y%m%dT%H%M%S.%f}Z-{number:06d}.eml"
        peer = session.peer
        if isinstance(peer, tuple):
            peer = f"{peer[0]}:{peer[1]}"
        headers = (
            f"X-Peer: {peer}\r\n"
            f"X-MailFrom: {envelope.mail_from}\r\n"
            f"X-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        content = envelope.original_content or b""
        temporary = self.folder / f".{name}.tmp"
        temporary.write_bytes(headers + content)
        os.replace(temporary, self.folder / name)
        return self.folder / name


class _Controller(Controller):
    """aiosmtpd Controller that binds its own socket, so port 0 works.

    The stock Controller (aiosmtpd 1.4.6) connects to `port` to check that
    the server is up, which fails when port 0 was asked for.
    """

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        listener = socket.create_server((self.hostname, self.port))
        self.port = listener.getsockname()[1]
        return self.loop.create_server(
            self._factory_invoker, sock=listener, ssl=self.ssl_context
        )
