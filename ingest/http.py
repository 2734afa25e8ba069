"""The HTTP protocol that ingest runs on: uvicorn's httptools one, half-close aware.

A client may shut down its sending side once its request is written (a
TCP half-close, as `nc -N` does) and still read the response. uvicorn's
protocol closes the connection at the client's end of stream, so a
response that is not written yet never goes out. The single-heartbeat
endpoint yields to the event loop between queueing a heartbeat and
writing its 202, and in that time uvicorn reads the end of stream. Without
this protocol, the heartbeat is published without its 202, and the client
sends it again.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HalfCloseHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, responding to requests that were half-closed."""

    def eof_received(self) -> bool:  # type: ignore[override]
        """Keep the connection open until the last complete request has its response.

        A response written after the end of stream carries `connection: close`,
        and the connection closes once it is written. A request whose body
        is incomplete gets no response, so then the connection closes at
        once, as uvicorn's own protocol closes it.
        """
        cycle = self.cycle
        if cycle is None or cycle.more_body or cycle.response_complete:
            return False
        cycle.keep_alive = False
        return True
