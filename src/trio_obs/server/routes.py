"""One route table: paths, their methods and their handlers; 404 and 405 come from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Literal, TypeAlias, TypeVar
from urllib.parse import unquote

import attrs

from .http import HttpError, Request

C = TypeVar("C")

Auth: TypeAlias = Literal["none", "header", "header-or-query"]
"""What a route needs when the server has a token: nothing, the bearer header, or either."""


@attrs.frozen
class Response:
    """A whole HTTP answer."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()


Handler: TypeAlias = Callable[[C, Request, str, bytes], Awaitable[Response]]
"""``handler(server, request, parameter, body)``; the parameter is the path's ``{}`` part."""


@attrs.frozen
class Route(Generic[C]):
    """One path (``{}`` stands for one percent-decoded segment), its methods and handler."""

    path: str
    methods: tuple[str, ...]
    handler: Handler[C]
    auth: Auth = "none"

    def match(self, path: str) -> str | None:
        """The path parameter ("" when there is none) if ``path`` is this route's, else None."""
        if "{}" not in self.path:
            return "" if path == self.path else None
        head, tail = self.path.split("{}")
        if not (path.startswith(head) and path.endswith(tail)):
            return None
        middle = path[len(head) : len(path) - len(tail)]
        if not middle or "/" in middle:
            return None
        return unquote(middle)


class RouteTable(Generic[C]):
    """Finds the route of a request: 404 for an unknown path, 405 for a wrong method."""

    def __init__(self, routes: Sequence[Route[C]]) -> None:
        self.routes = tuple(routes)

    def find(self, request: Request) -> tuple[Route[C], str]:
        """The route and its path parameter; raises :class:`HttpError` 404 or 405."""
        method = "GET" if request.method == "HEAD" else request.method
        for route in self.routes:
            parameter = route.match(request.path)
            if parameter is None:
                continue
            if method not in route.methods:
                raise HttpError(
                    405,
                    f"{method} is not allowed on {request.path}",
                    headers=[("allow", ", ".join(route.methods))],
                )
            return route, parameter
        raise HttpError(404, f"no route for {request.path}")
