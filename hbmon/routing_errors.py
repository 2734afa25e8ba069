"""JSON bodies for the routing errors (404 and 405) of the services' HTTP APIs.

Starlette responds to an unknown path or method in plain text, while every other
error of these APIs has a JSON body with "error" and, where one part of the
request is at fault, "field".
"""

from collections.abc import Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def use_json_routing_errors(app: Starlette, where_to_look: str) -> None:
    """Make `app` respond to routing errors in JSON, a trailing slash included.

    Starlette would redirect a path with a trailing slash, with a Location
    built from the client's Host header, so such a path gets the 404 too.
    """
    app.add_exception_handler(HTTPException, routing_error_handler(where_to_look))
    app.router.redirect_slashes = False


def routing_error_handler(where_to_look: str) -> ErrorHandler:
    """Return a Starlette handler for HTTPException that responds in JSON.

    `where_to_look` ends the 404 message and names what the API serves,
    such as "see /openapi.json".
    """

    async def routing_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            raise exc
        if exc.status_code == 405:
            # Starlette lists the methods in no fixed order.
            methods = (exc.headers or {}).get("Allow", "").split(",")
            allowed = ", ".join(sorted(method.strip() for method in methods))
            message = f"method {request.method} is not allowed here; use {allowed}"
            body = {"error": message, "field": "method"}
        elif exc.status_code == 404:
            body = {"error": f"no endpoint at {request.url.path}; {where_to_look}"}
        else:
            body = {"error": str(exc.detail)}
        return Response(
            orjson.dumps(body),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )

    return routing_error
