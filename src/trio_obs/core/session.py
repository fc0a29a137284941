"""The server side of one stream: what a connection's client messages produce (SPEC §3, §10).

A :class:`ServerSession` takes what the client sent (text fragments, binary frames,
silence) and answers with reply frames or a :class:`Close` decision; it changes the
connection's topics and filters as it goes. The WebSocket driver does the I/O.
"""

from __future__ import annotations

from typing import Final

import attrs

from . import events as ev
from .errors import InvalidInput
from .frames import text_frame
from .protocol import (
    ALL,
    INTERNAL_ERROR,
    INVALID_FILTER,
    MAX_CLIENT_MESSAGE,
    MESSAGE_TOO_BIG,
    UNSUPPORTED_DATA,
)
from .routing import SubscriptionState
from .wire import encode, parse_client_message

_CONNECTED_ALL: Final = "Connected to all observability events"


@attrs.frozen
class Close:
    """Close the connection with ``code`` and ``reason``."""

    code: int
    reason: str


@attrs.frozen
class Resume:
    """Where a new subscription starts, and whether the client must be told to start over."""

    cursor: int
    """The seq after which events are sent (replay first, then live)."""
    reset: ev.ResetEvent | None = None


def resume_point(
    stream: str,
    *,
    since: int | None,
    client_epoch: str | None,
    epoch: str,
    last_seq: int,
    buffer_size: int,
) -> Resume:
    """Where a subscription to ``stream`` starts (SPEC §3 replay, §10 epochs, §14 ``pos``).

    Without ``since``: the last ``buffer_size`` events (``all``: none, live only). With
    ``since=S``: after S; for ``all``, ``since`` is the global position ``since_pos`` and
    ``last_seq`` the newest position. A client that resumes from another epoch's history
    is told ``observability:reset`` and gets the history that exists, from its first event
    (an ``all`` client without ``since_pos`` is told, and goes on live: the seqs it
    remembers belong to the old history); so is one whose ``since`` is beyond the newest
    stored: it saw events the store no longer holds, and what comes next under those
    numbers would be other events.
    """
    beyond = since is not None and since > last_seq
    if (client_epoch is not None and client_epoch != epoch) or beyond:
        start = last_seq if stream == ALL and since is None else 0
        return Resume(start, ev.ResetEvent(epoch=epoch, last_seq=last_seq))
    if since is None:
        return Resume(last_seq if stream == ALL else max(0, last_seq - buffer_size))
    return Resume(since)


def reply_frame(message: ev.ServerEvent) -> bytes:
    """The text frame of one server message."""
    return text_frame(encode(message))


def greeting(
    stream: str,
    *,
    replayed: int,
    epoch: str | None,
    reset: ev.ResetEvent | None,
    now: str,
    pos: int | None = None,
) -> bytes:
    """The first frames of a stream: ``connected`` (and ``reset`` when the epoch changed);
    ``pos``: where an ``all`` stream starts (SPEC §14)."""
    connected = ev.ConnectedEvent(
        execution_id=stream,
        message=_CONNECTED_ALL if stream == ALL else f"Connected to execution {stream}",
        buffered_event_count=replayed,
        epoch=epoch,
        pos=pos if stream == ALL else None,
        timestamp=now,
    )
    frames = reply_frame(connected)
    if reset is not None:
        frames += reply_frame(attrs.evolve(reset, timestamp=now))
    return frames


class ServerSession:
    """Client messages of one connection in, replies and close decisions out."""

    __slots__ = ("_parts", "_size", "state", "stream")

    def __init__(self, stream: str, state: SubscriptionState) -> None:
        self.stream = stream
        self.state = state
        """The connection's topics and filters (shared with its subscription)."""
        self._parts: list[str] = []
        self._size = 0

    def text(self, data: str, *, finished: bool, now: str) -> bytes | Close | None:
        """A text fragment: the reply frame once the message is whole, or a close."""
        self._size += len(data.encode())
        if self._size > MAX_CLIENT_MESSAGE:
            return Close(MESSAGE_TOO_BIG, f"message over {MAX_CLIENT_MESSAGE} bytes")
        self._parts.append(data)
        if not finished:
            return None
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        return reply_frame(self.answer(text, now))

    def binary(self) -> Close:
        """A binary frame: the protocol speaks JSON text only."""
        return Close(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")

    def answer(self, text: str, now: str) -> ev.ServerEvent:
        """What one whole client message does, as the reply to send."""
        try:
            msg = parse_client_message(text)
        except InvalidInput as exc:
            return ev.ErrorEvent(error=str(exc), code=exc.code, timestamp=now)
        if isinstance(msg, ev.Ping):
            return ev.PongEvent(timestamp=now)
        if isinstance(msg, ev.Subscribe):
            if msg.filters.changes.get("q") is not None and self.stream != ALL:
                return ev.ErrorEvent(
                    error="filter q (a live query) needs an 'all' connection: "
                    "connect with ?observability=all",
                    code=INVALID_FILTER,
                    timestamp=now,
                )
            self.state.subscribe(msg.topic, msg.filters)
            return ev.SubscribedEvent(
                topic=msg.topic, execution_id=msg.execution_id or self.stream, timestamp=now
            )
        self.state.unsubscribe(msg.topic)
        return ev.UnsubscribedEvent(topic=msg.topic, timestamp=now)


class KeepAlive:
    """The server's keepalive: ping a silent connection, close one that stays silent."""

    __slots__ = ("awaiting_pong",)

    def __init__(self) -> None:
        self.awaiting_pong = False

    def heard(self) -> None:
        """The client sent something: it is alive."""
        self.awaiting_pong = False

    def silent(self) -> Close | None:
        """A ping interval passed in silence: None means send a ping, else close."""
        if self.awaiting_pong:
            return Close(INTERNAL_ERROR, "keepalive timeout: no pong")
        self.awaiting_pong = True
        return None
