"""SMTP delivery against a real aiosmtpd server: success, reuse and failure kinds.

The last tests drive the mail channel, which retries deferred recipients.
"""

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from alerter.channels.email import DEFERRED_RETRY_S, EmailChannel
from alerter.notification import Item, Kind, Notification
from alerter.settings import AlerterSettings
from alerter.smtp import DeliveryError, SmtpMailer
from hbmon.mailbox import LocalMailbox
from tests.unit.test_alerter_email import NOW, event


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[LocalMailbox]:
    with LocalMailbox(tmp_path / "mail", port=0) as box:
        yield box


@pytest.fixture
def settings(mailbox: LocalMailbox) -> AlerterSettings:
    return AlerterSettings(smtp_port=mailbox.port, smtp_timeout_s=5.0)


@pytest.fixture
def mailer(settings: AlerterSettings) -> Iterator[SmtpMailer]:
    client = SmtpMailer(settings)
    yield client
    client.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return a self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it creates the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def sample_message(
    subject: str = "[DOWN] sensor-17 silent since 14:02:11Z",
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "hbmon-alerter@localhost"
    message["To"] = "oncall@localhost"
    message.set_content("Device sensor-17 is DOWN.")
    return message


def test_send_stores_message(mailer: SmtpMailer, mailbox: LocalMailbox) -> None:
    rejected = mailer.send(sample_message())

    assert rejected == {}
    stored = mailbox.messages()
    assert len(stored) == 1
    assert stored[0]["Subject"] == "[DOWN] sensor-17 silent since 14:02:11Z"
    assert stored[0]["X-RcptTo"] == "oncall@localhost"


def test_send_reuses_connection(mailer: SmtpMailer, mailbox: LocalMailbox) -> None:
    mailer.send(sample_message("first"))
    mailer.send(sample_message("second"))

    first, second = mailbox.messages()
    assert first["X-Peer"] == second["X-Peer"]


def test_send_reconnects_after_server_restart(
    mailer: SmtpMailer, mailbox: LocalMailbox
) -> None:
    mailer.send(sample_message("before restart"))
    mailbox.stop()
    mailbox.start()

    mailer.send(sample_message("after restart"))

    subjects = [message["Subject"] for message in mailbox.messages()]
    assert subjects == ["before restart", "after restart"]


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_send_4xx_reply_is_transient(
    mailer: SmtpMailer, mailbox: LocalMailbox, stage: str
) -> None:
    mailbox.reject_mail(451, stage=stage)

    with pytest.raises(DeliveryError) as caught:
        mailer.send(sample_message())

    assert caught.value.retriable is True
    assert caught.value.code == 451
    assert "451" in str(caught.value)
    assert mailbox.messages() == []


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_send_5xx_reply_is_permanent(
    mailer: SmtpMailer, mailbox: LocalMailbox, stage: str
) -> None:
    mailbox.reject_mail(550, stage=stage)

    with pytest.raises(DeliveryError) as caught:
        mailer.send(sample_message())

    assert caught.value.retriable is False
    assert caught.value.code == 550
    assert ("RCPT TO" if stage == "RCPT" else "DATA") in str(caught.value)


def test_send_succeeds_after_server_accepts_again(
    mailer: SmtpMailer, mailbox: LocalMailbox
) -> None:
    mailbox.reject_mail(451)
    with pytest.raises(DeliveryError):
        mailer.send(sample_message())

    mailbox.accept_mail()
    mailer.send(sample_message())

    assert len(mailbox.messages()) == 1
    assert mailbox.rejected_count == 1


def test_send_connection_refused_is_transient(settings: AlerterSettings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    mailer = SmtpMailer(replace(settings, smtp_port=closed_port))

    with pytest.raises(DeliveryError) as caught:
        mailer.send(sample_message())

    assert caught.value.retriable is True
    assert caught.value.code is None
    assert f"127.0.0.1:{closed_port}" in str(caught.value)


def test_send_silent_server_times_out_as_transient(settings: AlerterSettings) -> None:
    # The kernel accepts the connection, but no SMTP greeting follows.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        mailer = SmtpMailer(replace(settings, smtp_port=port, smtp_timeout_s=0.3))

        with pytest.raises(DeliveryError) as caught:
            mailer.send(sample_message())

    assert caught.value.retriable is True
    assert "waiting for the greeting" in str(caught.value)
    assert "SMTP server timed out" in str(caught.value)
    assert "closed" not in str(caught.value)


def test_send_busy_greeting_is_transient(settings: AlerterSettings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]

        def greet_busy() -> None:
            connection, _ = busy.accept()
            with connection:
                connection.sendall(b"421 4.3.2 Too busy, try later\r\n")

        greeter = threading.Thread(target=greet_busy, daemon=True)
        greeter.start()
        mailer = SmtpMailer(replace(settings, smtp_port=port))
        with pytest.raises(DeliveryError) as caught:
            mailer.send(sample_message())
        greeter.join(timeout=10)

    assert caught.value.retriable is True
    assert caught.value.code == 421
    assert "greeted with 421 4.3.2 Too busy, try later instead of 220" in str(
        caught.value
    )


def test_send_waits_for_slow_data_reply(
    settings: AlerterSettings, mailbox: LocalMailbox
) -> None:
    # The reply to the end of DATA comes after the command timeout, but
    # within the DATA timeout, so the mail is delivered once and not retried.
    mailbox.delay_data_reply(1.5)
    mailer = SmtpMailer(replace(settings, smtp_timeout_s=0.5, smtp_data_timeout_s=10.0))
    try:
        rejected = mailer.send(sample_message())
        rejected_second = mailer.send(sample_message("second"))
    finally:
        mailer.close()

    assert rejected == {}
    assert rejected_second == {}
    assert len(mailbox.paths()) == 2


def test_send_data_reply_times_out_as_transient(
    settings: AlerterSettings, mailbox: LocalMailbox
) -> None:
    mailbox.delay_data_reply(2.0)
    mailer = SmtpMailer(replace(settings, smtp_timeout_s=5.0, smtp_data_timeout_s=0.3))

    with pytest.raises(DeliveryError) as caught:
        mailer.send(sample_message())

    assert caught.value.retriable is True
    assert "SMTP server timed out" in str(caught.value)
    assert "closed" not in str(caught.value)


def test_reused_connection_timeout_is_not_sent_again(
    settings: AlerterSettings, mailbox: LocalMailbox
) -> None:
    # The server stores the mail, but its reply comes after the timeout. The
    # mailer must report that, not take it for an idle close and resend.
    mailer = SmtpMailer(replace(settings, smtp_timeout_s=5.0, smtp_data_timeout_s=0.3))
    try:
        mailer.send(sample_message("first"))
        mailbox.delay_data_reply(1.0)
        with pytest.raises(DeliveryError) as caught:
            mailer.send(sample_message("second"))
    finally:
        mailer.close()
    time.sleep(2.0)  # the delayed mail is stored after its reply

    assert caught.value.retriable is True
    assert "SMTP server timed out" in str(caught.value)
    assert len(mailbox.paths()) == 2


def test_data_timeout_default_follows_rfc_5321() -> None:
    assert AlerterSettings().smtp_data_timeout_s == 600.0


def test_send_starttls_with_login(
    tmp_path: Path, server_tls: ssl.SSLContext, certificate: tuple[Path, Path]
) -> None:
    box = LocalMailbox(
        tmp_path / "tls-mail",
        port=0,
        security="starttls",
        tls_context=server_tls,
        credentials=("alerts", "s3cret"),
    )
    with box:
        settings = AlerterSettings(
            smtp_port=box.port,
            smtp_security="starttls",
            smtp_ca_file=str(certificate[0]),
            smtp_user="alerts",
            smtp_password="s3cret",
        )
        mailer = SmtpMailer(settings)
        mailer.send(sample_message())
        mailer.close()

        assert len(box.messages()) == 1


def test_send_wrong_password_is_transient(
    tmp_path: Path, server_tls: ssl.SSLContext, certificate: tuple[Path, Path]
) -> None:
    box = LocalMailbox(
        tmp_path / "tls-mail",
        port=0,
        security="starttls",
        tls_context=server_tls,
        credentials=("alerts", "s3cret"),
    )
    with box:
        settings = AlerterSettings(
            smtp_port=box.port,
            smtp_security="starttls",
            smtp_ca_file=str(certificate[0]),
            smtp_user="alerts",
            smtp_password="wrong-password",
        )

        with pytest.raises(DeliveryError) as caught:
            SmtpMailer(settings).send(sample_message())

    assert caught.value.retriable is True
    assert caught.value.code == 535
    assert "HBMON_SMTP_PASSWORD" in str(caught.value)
    assert "wrong-password" not in str(caught.value)


def test_send_without_server_starttls_fails(
    mailbox: LocalMailbox, settings: AlerterSettings
) -> None:
    mailer = SmtpMailer(replace(settings, smtp_security="starttls"))

    with pytest.raises(DeliveryError) as caught:
        mailer.send(sample_message())

    assert caught.value.retriable is True
    assert "STARTTLS" in str(caught.value)
    assert mailbox.messages() == []


def test_send_implicit_tls(
    tmp_path: Path, server_tls: ssl.SSLContext, certificate: tuple[Path, Path]
) -> None:
    with LocalMailbox(
        tmp_path / "tls-mail", port=0, security="tls", tls_context=server_tls
    ) as box:
        settings = AlerterSettings(
            smtp_port=box.port, smtp_security="tls", smtp_ca_file=str(certificate[0])
        )
        mailer = SmtpMailer(settings)
        mailer.send(sample_message())
        mailer.close()

        assert len(box.messages()) == 1


def test_send_untrusted_certificate_is_transient(
    tmp_path: Path, server_tls: ssl.SSLContext
) -> None:
    with LocalMailbox(
        tmp_path / "tls-mail", port=0, security="tls", tls_context=server_tls
    ) as box:
        settings = AlerterSettings(smtp_port=box.port, smtp_security="tls")

        with pytest.raises(DeliveryError) as caught:
            SmtpMailer(settings).send(sample_message())

    assert caught.value.retriable is True
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


def one_down() -> Notification:
    down = Item(Kind.DOWN, "k-1", event("dev-0001"))
    return Notification(Kind.DOWN, "plant", (("site", "plant-3"),), (down,), 10)


def test_deferred_recipient_alone_gets_next_attempt(
    settings: AlerterSettings, mailbox: LocalMailbox
) -> None:
    channel = EmailChannel(settings, ["a@x.test", "b@x.test"], "iot-data")
    sent = one_down()
    mailbox.reject_recipient("b@x.test", 450)
    try:
        with pytest.raises(DeliveryError) as caught:
            channel.send(sent, NOW)
        mailbox.accept_mail()
        channel.send(sent, NOW)
    finally:
        channel.close()

    assert caught.value.retriable is True
    assert caught.value.code == 450
    assert "b@x.test (450)" in str(caught.value)
    assert [mail["X-RcptTo"] for mail in mailbox.messages()] == [
        "a@x.test",
        "b@x.test",
    ]


def test_refused_recipient_is_not_tried_again(
    settings: AlerterSettings, mailbox: LocalMailbox
) -> None:
    channel = EmailChannel(settings, ["a@x.test", "b@x.test"], "iot-data")
    mailbox.reject_recipient("b@x.test", 550)
    try:
        channel.send(one_down(), NOW)
    finally:
        channel.close()

    assert [mail["X-RcptTo"] for mail in mailbox.messages()] == ["a@x.test"]


def test_deferred_recipient_given_up_after_limit(
    settings: AlerterSettings,
    mailbox: LocalMailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = EmailChannel(settings, ["a@x.test", "b@x.test"], "iot-data")
    sent = one_down()
    mailbox.reject_recipient("b@x.test", 450)
    later = NOW + timedelta(seconds=DEFERRED_RETRY_S)
    try:
        with pytest.raises(DeliveryError):
            channel.send(sent, NOW)
        channel.send(sent, later)
    finally:
        channel.close()

    assert [mail["X-RcptTo"] for mail in mailbox.messages()] == ["a@x.test"]
    assert "Gave up on recipients b@x.test of notification" in caplog.text
