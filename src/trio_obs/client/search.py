"""Search a trio-obs server's stored events (``GET /api/search``, SPEC §14), typed.

``result = await search(url, "permission denied", state="error")`` gives a
:class:`~trio_obs.core.search.SearchResult`: hits newest first, and ``result.next``
to pass as ``before=`` for the next page. A live query follows new matches instead:
``open_stream(url, "all", filters={"q": ...})``.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from ..core.search import FILTERS, SearchResult
from ..core.wire import decode_search_result
from .common import SearchRefused, auth_headers, endpoints

_TIMEOUT: Final = 10.0


async def search(
    url: str,
    q: str,
    *,
    execution: str | None = None,
    type: str | None = None,
    tool: str | None = None,
    state: str | None = None,
    agent: str | None = None,
    limit: int = 50,
    before: int | None = None,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> SearchResult:
    """One page of the stored events matching ``q``, newest first.

    ``q`` is words (``rm -rf``), ``"phrases"``, ``prefix*``, ``AND`` (implied), ``OR``,
    ``NOT`` and parentheses; the typed filters take exact values (``state``: the event's
    state word, e.g. ``error``; ``agent``: its agent, or a heartbeat's instance).
    Raises :class:`SearchRefused` when the server refuses it (``status`` 400 with the
    reason for a query it cannot read, 401 without the right ``token``, ...), and
    ``httpx.HTTPError`` when it cannot be reached.
    """
    given = {"execution": execution, "type": type, "tool": tool, "state": state, "agent": agent}
    params: dict[str, Any] = {"q": q, "limit": limit}
    params.update({name: given[name] for name in FILTERS if given[name] is not None})
    if before is not None:
        params["before"] = before
    http = client or httpx.AsyncClient(timeout=_TIMEOUT, trust_env=False)
    try:
        response = await http.get(
            f"{endpoints(url).http}/api/search", params=params, headers=auth_headers(token)
        )
    finally:
        if client is None:
            await http.aclose()
    if response.status_code != 200:
        raise SearchRefused(response.status_code, response.text)
    return decode_search_result(response.content)
