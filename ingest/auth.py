"""Bearer tokens for the heartbeat endpoints, each optionally limited to a prefix.

Tokens come from HBMON_INGEST_TOKENS and from the file named by
HBMON_INGEST_TOKENS_FILE. Both use the same format: entries separated by
commas or line breaks, each `TOKEN` (any device) or `TOKEN:PREFIX` (only
device ids that start with PREFIX). Lines starting with `#` are comments.
Tokens never appear in logs or error messages, not even in part.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from hbmon.env import SettingError
from ingest.errors import IngestError

TOKEN_RULE = "must be 16 to 512 characters from A-Z a-z 0-9 . _ ~ + / = -"
# The token68 alphabet of RFC 6750, so tokens never contain ':' and the first
# ':' of an entry always starts the prefix.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_PREFIX = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_BEARER = b"bearer "
_UNAUTHORIZED_HEADERS = [(b"www-authenticate", b'Bearer realm="hbmon-ingest"')]


@dataclass(frozen=True, slots=True)
class BearerToken:
    """The SHA-256 digest of one configured token and the device-id prefix it allows.

    An empty prefix allows every device.
    """

    digest: bytes
    prefix: str


class Authenticator:
    """Check the Authorization header against the configured tokens.

    With no tokens configured, every request passes with an empty prefix.
    """

    def __init__(self, tokens: tuple[BearerToken, ...]) -> None:
        self._tokens = tokens

    @property
    def open(self) -> bool:
        return not self._tokens

    def authenticate(self, authorization: bytes) -> str:
        """Return the device-id prefix that the request's token allows.

        The presented token is hashed and its digest compared with every
        configured digest through hmac.compare_digest, without stopping at
        a match, so the time taken reveals neither which token matched nor
        how much of one did. The cost grows with the number of tokens.

        Raises:
            IngestError: 401 when the header is missing, is not a Bearer
                token or matches no configured token.
        """
        if not self._tokens:
            return ""
        if authorization[:7].lower() != _BEARER:
            raise unauthorized("Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(authorization[7:].strip()).digest()
        prefix: str | None = None
        for token in self._tokens:
            if hmac.compare_digest(token.digest, digest):
                prefix = token.prefix
        if prefix is None:
            raise unauthorized("bearer token is not valid for this service")
        return prefix


def check_scope(prefix: str, device_id: str) -> None:
    """Raise a 403 IngestError unless `device_id` starts with `prefix`."""
    if not device_id.startswith(prefix):
        raise IngestError(
            403,
            "device_id",
            f"device_id {device_id!r} is outside this token's scope: it must "
            f"start with {prefix!r}",
        )


def load_tokens(
    text: str, file_path: str, *, env_name: str, file_env_name: str
) -> tuple[BearerToken, ...]:
    """Parse the tokens given inline in `text` and in the file at `file_path`.

    Raises:
        SettingError: the file cannot be read, or an entry breaks the token
            or prefix rules. The message names the entry by position only.
    """
    tokens = parse_tokens(text, env_name)
    if file_path:
        try:
            content = Path(file_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SettingError(
                f"{file_env_name}={file_path!r} cannot be read: {err}"
            ) from err
        tokens += parse_tokens(content, f"{file_env_name} ({file_path})")
    return tokens


def parse_tokens(text: str, source: str) -> tuple[BearerToken, ...]:
    """Parse `TOKEN` and `TOKEN:PREFIX` entries separated by commas or lines.

    Raises:
        SettingError: an entry breaks the token or prefix rules.
    """
    tokens: list[BearerToken] = []
    entries = (
        entry.strip()
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for entry in line.split(",")
    )
    for position, entry in enumerate(filter(None, entries), start=1):
        token, colon, prefix = entry.partition(":")
        if not _TOKEN.fullmatch(token):
            raise SettingError(f"{source}: token {position} {TOKEN_RULE}")
        if colon and not _PREFIX.fullmatch(prefix):
            raise SettingError(
                f"{source}: the device-id prefix of token {position} must be 1 "
                "to 128 characters from A-Z a-z 0-9 . _ : / -"
            )
        digest = hashlib.sha256(token.encode("ascii")).digest()
        tokens.append(BearerToken(digest=digest, prefix=prefix))
    return tuple(tokens)


def unauthorized(message: str) -> IngestError:
    """Return the 401 IngestError with `message`, naming the Authorization header."""
    return IngestError(401, "Authorization", message, headers=_UNAUTHORIZED_HEADERS)
