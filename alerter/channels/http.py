"""JSON over HTTP POST for the webhook, Slack and PagerDuty channels."""

import httpx

from alerter.channels.base import DeliveryError

# 408 (timeout) and 429 (rate limit) ask the client to come back later.
_RETRIABLE_4XX = (408, 429)


class JsonPoster:
    """An httpx client that keeps its connection open across requests.

    `timeout_s` bounds each step: connect, each read, each write, and the
    wait for a pooled connection.
    """

    def __init__(self, timeout_s: float, user_agent: str = "hbmon-alerter") -> None:
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )

    def post(
        self, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST `body` as JSON; return the 2xx response.

        Raises:
            DeliveryError: the request failed or the status is not 2xx.
                4xx other than 408 and 429 is permanent; the rest retriable.
        """
        try:
            response = self._client.post(
                url,
                content=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
        except httpx.TimeoutException as err:
            raise DeliveryError(
                f"HTTP request to {_origin(url)} timed out ({err})",
                retriable=True,
                code=None,
            ) from err
        except httpx.HTTPError as err:
            raise DeliveryError(
                f"HTTP request to {_origin(url)} failed: {err}",
                retriable=True,
                code=None,
            ) from err
        if response.is_success:
            return response
        status = response.status_code
        permanent = 400 <= status < 500 and status not in _RETRIABLE_4XX
        raise DeliveryError(
            f"{_origin(url)} replied {status} {response.reason_phrase}: "
            f"{response.text[:200]!r}",
            retriable=not permanent,
            code=status,
        )

    def close(self) -> None:
        self._client.close()


def _origin(url: str) -> str:
    """Return scheme, host and port only: URL paths can hold secrets (Slack)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"
