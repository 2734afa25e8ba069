"""LocalMailbox: a real aiosmtpd server that stores mail as .eml files."""

import re
import smtplib
from pathlib import Path

import pytest

from hbmon.mailbox import LocalMailbox

FILE_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-\d{6}\.eml$")


def send(port: int, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(
            "sender@localhost",
            ["one@localhost", "two@localhost"],
            f"Subject: {subject}\r\n\r\nbody\r\n",
        )


def test_mailbox_port_zero_picks_free_port(tmp_path: Path) -> None:
    with LocalMailbox(tmp_path, port=0) as mailbox:
        assert mailbox.port > 0


def test_mailbox_stores_each_message_as_eml(tmp_path: Path) -> None:
    with LocalMailbox(tmp_path / "mail", port=0) as mailbox:
        send(mailbox.port, "first")
        send(mailbox.port, "second")

        paths = mailbox.paths()
        messages = mailbox.messages()

    assert [path.name for path in paths if FILE_NAME.match(path.name)] == [
        path.name for path in paths
    ]
    assert paths[0].name.endswith("-000001.eml")
    assert [message["Subject"] for message in messages] == ["first", "second"]
    assert messages[0]["X-MailFrom"] == "sender@localhost"
    assert messages[0]["X-RcptTo"] == "one@localhost, two@localhost"
    assert messages[0]["X-Peer"].startswith("127.0.0.1:")


def test_mailbox_keeps_files_after_stop(tmp_path: Path) -> None:
    with LocalMailbox(tmp_path, port=0) as mailbox:
        send(mailbox.port, "kept")

    assert len(LocalMailbox(tmp_path).messages()) == 1


# send() names two recipients, so RCPT TO is rejected twice per mail.
@pytest.mark.parametrize(
    ("code", "stage", "rejections"), [(451, "RCPT", 2), (550, "DATA", 1)]
)
def test_mailbox_rejects_on_request(
    tmp_path: Path, code: int, stage: str, rejections: int
) -> None:
    with LocalMailbox(tmp_path, port=0) as mailbox:
        mailbox.reject_mail(code, stage=stage)

        with pytest.raises(smtplib.SMTPException) as caught:
            send(mailbox.port, "rejected")

        assert str(code) in str(caught.value)
        assert mailbox.rejected_count == rejections
        assert mailbox.messages() == []


@pytest.mark.parametrize(
    ("code", "stage", "message"),
    [(250, "DATA", "code=250 is invalid"), (451, "MAIL", "stage='MAIL' is invalid")],
)
def test_mailbox_reject_mail_validates_arguments(
    tmp_path: Path, code: int, stage: str, message: str
) -> None:
    mailbox = LocalMailbox(tmp_path)

    with pytest.raises(ValueError, match=re.escape(message)):
        mailbox.reject_mail(code, stage=stage)


def test_mailbox_credentials_require_starttls(tmp_path: Path) -> None:
    mailbox = LocalMailbox(tmp_path, port=0, credentials=("user", "password"))

    with pytest.raises(ValueError, match="credentials need security='starttls'"):
        mailbox.start()


def test_mailbox_rejects_after_accepting_some(tmp_path: Path) -> None:
    with LocalMailbox(tmp_path, port=0) as mailbox:
        mailbox.reject_mail(451, after=2)
        send(mailbox.port, "first")
        send(mailbox.port, "second")

        with pytest.raises(smtplib.SMTPException, match="451"):
            send(mailbox.port, "third")

        assert [m["Subject"] for m in mailbox.messages()] == ["first", "second"]
        assert mailbox.rejected_count == 1


def test_mailbox_restarts_on_same_port(tmp_path: Path) -> None:
    with LocalMailbox(tmp_path, port=0) as mailbox:
        port = mailbox.port
        mailbox.stop()

        with pytest.raises(OSError):
            send(port, "refused")

        mailbox.start()
        send(port, "after restart")

        assert mailbox.port == port
        assert [m["Subject"] for m in mailbox.messages()] == ["after restart"]


def test_mailbox_reject_after_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="after=-1 is invalid"):
        LocalMailbox(tmp_path).reject_mail(451, after=-1)
