"""What a ``--redis`` URL says: one Redis, a Sentinel set, or a Redis Cluster (no I/O).

- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (``rediss://`` for TLS; ``unix:///path``):
  one Redis;
- ``redis+sentinel://[[USER]:PASSWORD@]H1:P1,H2:P2,...?sentinel_master_name=NAME[&db=N]``
  (the form Centrifugo uses): the master that these Sentinels name, followed through every
  failover; the password is the master's (``sentinel_password=`` for the Sentinels' own);
- ``redis+cluster://[[USER]:PASSWORD@]H1:P1[,H2:P2...]``: a Redis Cluster, found through
  any of the listed nodes.

Anything else is refused with one sentence that says what was wrong (never the password).
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import attrs

from ..core.errors import StoreError

Mode = Literal["single", "sentinel", "cluster"]

DEFAULT_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
MAX_DB: Final = 10**6
"""A database number above this is surely a mistake (Redis's default has 16)."""

_SINGLE: Final = ("redis", "rediss", "unix")
_SCHEMES: Final = (*_SINGLE, "redis+sentinel", "redis+cluster")
FORMS: Final = (
    "redis://HOST:PORT/DB (rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB with a password), "
    "redis+sentinel://H1:P1,H2:P2,H3:P3?sentinel_master_name=NAME or "
    "redis+cluster://H1:P1[,H2:P2...]"
)
"""The URL forms, as error messages list them."""


class RedisUrlError(StoreError):
    """A ``--redis`` URL that cannot be used (one sentence; the password never shows)."""


@attrs.frozen(kw_only=True)
class RedisTarget:
    """Where Redis is and how to log in, from a URL (see :func:`parse_redis_url`)."""

    mode: Mode
    url: str
    """The URL as given (it may hold a password: never log it, log :attr:`where`)."""
    where: str
    """The URL with its password replaced by ``***``, for messages."""
    hosts: tuple[tuple[str, int], ...] = ()
    """Redis (single), the Sentinels, or the cluster's seed nodes."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    master_name: str | None = None
    """Sentinel: the name the Sentinels monitor the master under."""
    sentinel_password: str | None = None


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for logs and errors."""
    try:
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}")
        query = re.sub(r"(^|&)(sentinel_password=)[^&]*", r"\1\2***", parts.query)
        hidden = urlunsplit(parts._replace(query=query))
        return url if hidden == urlunsplit(urlsplit(url)) else hidden
    except ValueError:
        return "<a Redis URL that does not parse>"


def _host_port(text: str, default: int, where: str) -> tuple[str, int]:
    host, port = text, str(default)
    if text.startswith("["):  # [IPv6]:port
        inside, _, rest = text[1:].partition("]")
        host, port = inside, rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"the Redis URL {where} does not parse: {text!r} is not HOST:PORT")
    return host, int(port)


def _db(text: str, where: str) -> int:
    if not text.isdigit() or int(text) > MAX_DB:
        raise RedisUrlError(
            f"the Redis URL {where} names database {text!r}: a database is a number "
            "(redis://HOST:PORT/0 for the first one)"
        )
    return int(text)


def parse_redis_url(url: str) -> RedisTarget:
    """The target ``url`` names; :class:`RedisUrlError` (one sentence) if it names none."""
    where = redacted(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RedisUrlError(f"the Redis URL {where} does not parse: {exc}") from None
    if parts.scheme not in _SCHEMES or not (parts.netloc or parts.path):
        raise RedisUrlError(f"the Redis URL must look like {FORMS}; got {where!r}")
    userinfo, at, netloc = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    query = parse_qs(parts.query, keep_blank_values=True)

    def option(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    db_texts = [t for t in (parts.path.strip("/") if parts.scheme != "unix" else "",
                            option("db")) if t]  # fmt: skip
    db = _db(db_texts[-1], where) if db_texts else 0
    if len(db_texts) == 2 and db_texts[0] != db_texts[1]:
        raise RedisUrlError(f"the Redis URL {where} names two databases")
    common: dict[str, Any] = {
        "url": url,
        "where": where,
        "db": db,
        "username": username,
        "password": password,
    }
    if parts.scheme in _SINGLE:
        if parts.scheme != "unix":
            if "," in netloc:
                raise RedisUrlError(
                    f"the Redis URL {where} names several hosts: use redis+sentinel:// for a "
                    "Sentinel set or redis+cluster:// for a Redis Cluster"
                )
            _host_port(netloc, DEFAULT_PORT, where)  # checked here; coredis parses it again
        return RedisTarget(mode="single", **common)
    default = DEFAULT_SENTINEL_PORT if parts.scheme == "redis+sentinel" else DEFAULT_PORT
    hosts = tuple(_host_port(h.strip(), default, where) for h in netloc.split(",") if h.strip())
    if not hosts:
        raise RedisUrlError(f"the Redis URL {where} names no host")
    if parts.scheme == "redis+cluster":
        if db:
            raise RedisUrlError(f"the Redis URL {where} names database {db}: a cluster has only 0")
        return RedisTarget(mode="cluster", hosts=hosts, **common)
    name = option("sentinel_master_name")
    if not name:
        raise RedisUrlError(
            f"the Redis URL {where} needs ?sentinel_master_name=NAME: the name the Sentinels "
            "monitor the master under"
        )
    return RedisTarget(
        mode="sentinel",
        hosts=hosts,
        master_name=name,
        sentinel_password=option("sentinel_password"),
        **common,
    )
