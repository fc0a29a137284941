"""The client side of a stream: dedupe, ``since``, ``since_pos`` and epochs across reconnects.

:class:`ResumeState` decides, for every event a client receives, whether it is new,
and where the next connection must resume (``since=`` and ``epoch=``; for ``all``, the
global position ``since_pos=`` of SPEC §14, which the server's ``connected`` gives
before the first event). The client driver does the I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

from . import events as ev
from .errors import InvalidInput
from .facts import FACTS, own_task_id, span_id_of, tool_of
from .protocol import ALL, INVALID_FILTER, INVALID_TOPIC, TOPIC_OF_TYPE, TOPICS
from .routing import Envelope, SubscriptionState
from .search import FILTERS
from .wire import encode_client_message, parse_filters

_SPANS_MAX: Final = 10_000


class ResumeState:
    """What a client has seen of one stream (an execution, ``global`` or ``all``)."""

    def __init__(
        self,
        stream: str,
        *,
        since: int | None = None,
        since_pos: int | None = None,
        filters: SubscriptionState | None = None,
        subscribe_messages: int = 0,
        handshake: Mapping[str, str] | None = None,
    ) -> None:
        self.stream = stream
        self.epoch: str | None = None
        """The server's epoch, once a ``connected`` carried one."""
        self.filters = filters or SubscriptionState()
        """The topics and filters the client asked for (applied until the server confirms)."""
        self._subscribe_messages = subscribe_messages
        self._pending = 0
        self._last: dict[str, int] = {}
        if since is not None:
            self._last[stream] = since
        self._last_pos = since_pos
        """``all``: the global position of the last event delivered (or the start)."""
        self._handshake = dict(handshake or {})
        """Query parameters of every connection (``all``: a live query and typed filters)."""
        self._requested: int | None = None
        self._warned = False
        self._spans: OrderedDict[tuple[str, str], tuple[str | None, str | None]] = OrderedDict()
        self.connected_once = False

    # ------------------------------------------------------------------ connecting

    def query(self) -> dict[str, str | int]:
        """The WebSocket query of the next connection (``observability``, ``since`` or
        ``since_pos``, ``epoch``, and the handshake's filters)."""
        query: dict[str, str | int] = {"observability": self.stream, **self._handshake}
        if self.stream == ALL:
            since = None
            if self._last_pos is not None:
                query["since_pos"] = self._last_pos
        else:
            since = self._last.get(self.stream)
            if since is not None:
                query["since"] = since
        if self.epoch is not None and (since is not None or self.stream == ALL):
            query["epoch"] = self.epoch
        self._requested = since
        return query

    def last_seq(self, key: str | None = None) -> int | None:
        """The last seq delivered of ``key`` (default: this stream), or None."""
        return self._last.get(key or self.stream)

    @property
    def last_pos(self) -> int | None:
        """``all``: the global position of the last event delivered (or where it began)."""
        return self._last_pos

    def connected(self, message: ev.ConnectedEvent) -> bool:
        """The server accepted the stream; True when this is a reconnect."""
        reconnect = self.connected_once
        if message.epoch is not None:
            self.epoch = message.epoch
        if (
            self.stream != ALL
            and self.stream not in self._last
            and not message.buffered_event_count
        ):
            # Nothing to replay means the stream was empty: everything from seq 1 is new.
            self._last[self.stream] = 0
        if self.stream == ALL and self._last_pos is None:
            self._last_pos = message.pos  # what follows is new: resume from here if cut
        self._pending = self._subscribe_messages
        self.connected_once = True
        return reconnect

    def reset(self, message: ev.ResetEvent) -> str:
        """The server's history is another one (a new epoch, or it lacks events this client
        saw): start over; returns a notice."""
        self.epoch = message.epoch
        self._last.clear()
        self._spans.clear()
        self._requested = None
        if self.stream == ALL:
            self._last_pos = None  # the positions of the old history mean nothing now
            return f"the server's history changed (epoch {message.epoch}); following it from now on"
        self._last[self.stream] = 0
        return (
            f"the server's history changed (epoch {message.epoch}, last seq "
            f"{message.last_seq}); starting over from its first event"
        )

    def replied(self) -> None:
        """The server answered one of our subscribe/unsubscribe messages."""
        self._pending = max(0, self._pending - 1)

    # ------------------------------------------------------------------ events

    def key_of(self, event: ev.StreamEvent) -> str:
        """The stream key an event is counted under."""
        return event.execution_id if self.stream == ALL else self.stream

    def accept(self, event: ev.StreamEvent) -> bool:
        """Whether ``event`` is new and wanted (call :meth:`delivered` once handed over)."""
        key = self.key_of(event)
        seq = event.seq
        last = self._last.get(key)
        if seq is not None and last is not None and seq <= last:
            return False
        pos, last_pos = event.pos, self._last_pos
        if self.stream == ALL and pos is not None and last_pos is not None and pos <= last_pos:
            return False
        task_id, tool = self._note_span(key, event)
        if self._pending and not self.filters.everything:
            # Until the server confirms our subscribes it may send what they exclude.
            env = Envelope(key, seq or 0, event, b"", TOPIC_OF_TYPE[event.type], task_id, tool)
            return self.filters.matches(env)
        return True

    def delivered(self, event: ev.StreamEvent) -> None:
        """``event`` reached the user (or was filtered out): never deliver it again."""
        seq = event.seq
        if seq is not None:
            key = self.key_of(event)
            if seq > self._last.get(key, -1):
                self._last[key] = seq
        if self.stream == ALL and event.pos is not None:
            self._last_pos = max(self._last_pos or 0, event.pos)

    def stale_warning(self, event: ev.StreamEvent) -> str | None:
        """A warning when a server without epochs answers ``since`` with older seqs, once."""
        since = self._requested
        seq = event.seq
        if (
            self.stream == ALL
            or self.epoch is not None
            or since is None
            or seq is None
            or seq > since
            or self._warned
        ):
            return None
        self._warned = True
        return (
            f"the server sent seq {seq} after since={since}; was it restarted with an empty "
            f"store? Events up to seq {since} are skipped as already seen."
        )

    def _note_span(self, key: str, event: ev.StreamEvent) -> tuple[str | None, str | None]:
        fact = FACTS[event.type]
        if fact.span_kind is None:
            return own_task_id(event), None
        span = (key, span_id_of(event) or "")
        if fact.role == "opens":
            return self._remember(span, own_task_id(event), tool_of(event))
        return self._spans.get(span, (None, None))

    def _remember(
        self, span: tuple[str, str], task_id: str | None, tool: str | None
    ) -> tuple[str | None, str | None]:
        self._spans[span] = (task_id, tool)
        if len(self._spans) > _SPANS_MAX:
            self._spans.popitem(last=False)
        return task_id, tool


HANDSHAKE_FILTERS: Final = ("q", *FILTERS)
"""Filters an ``all`` connection takes in its handshake (a live query and the typed ones)."""


def split_handshake_filters(
    stream: str, filters: Mapping[str, object] | None
) -> tuple[dict[str, str], dict[str, object] | None]:
    """The filters that travel in an ``all`` handshake (checked), and those sent after.

    A live query in the handshake applies from the first event, so a resumed live query
    has no seam; raises :class:`~trio_obs.InvalidInput` for a bad one, or one that is
    not on ``all``.
    """
    if not filters:
        return {}, None
    own = {k: v for k, v in filters.items() if k in HANDSHAKE_FILTERS and v is not None}
    if not own:
        return {}, dict(filters)
    if stream != ALL:
        if "q" in own:
            raise InvalidInput("filter q (a live query) needs the 'all' stream", INVALID_FILTER)
        return {}, dict(filters)
    parse_filters(own)  # raises with the reason
    rest = {k: v for k, v in filters.items() if k not in own}
    return {k: str(v) for k, v in own.items()}, rest or None


def subscription_messages(
    topics: Sequence[str], filters: Mapping[str, object] | None
) -> tuple[list[bytes], SubscriptionState]:
    """The client messages that set up ``topics``/``filters``, and the state they produce;
    raises :class:`~trio_obs.InvalidInput` for an unknown topic or a bad filter.

    Sent in an order whose every intermediate state lets through at least what the
    final one does: ``all`` with the filters first, then each topic (added to ``all``),
    then ``unsubscribe all``. So nothing wanted is dropped while the server applies them.
    """
    for topic in topics:
        if topic not in TOPICS:
            raise InvalidInput(
                f"unknown topic {topic!r}; expected one of: {', '.join(sorted(TOPICS))}",
                INVALID_TOPIC,
            )
    update = parse_filters(dict(filters)) if filters else ev.FilterUpdate()
    state = SubscriptionState()
    messages: list[ev.ClientMessage] = []
    wanted = list(dict.fromkeys(topics))
    if not wanted and not update.changes:
        return [], state
    messages.append(ev.Subscribe(topic="all", filters=update))
    if "all" not in wanted:
        messages += [ev.Subscribe(topic=t) for t in wanted]  # type: ignore[arg-type]
        if wanted:
            messages.append(ev.Unsubscribe(topic="all"))
    for msg in messages:
        if isinstance(msg, ev.Subscribe):
            state.subscribe(msg.topic, msg.filters)
        elif isinstance(msg, ev.Unsubscribe):
            state.unsubscribe(msg.topic)
    return [encode_client_message(m) for m in messages], state
