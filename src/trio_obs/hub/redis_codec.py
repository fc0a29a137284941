"""What the Redis hub sends to its publish script and makes of what comes back (no I/O).

:func:`plan` turns a completed batch into the entries it writes and :func:`arguments`
those into the script's arguments; :func:`stored` turns
the script's answer into the stored envelopes; :func:`envelope_of` makes the envelope of
a stream entry read back (replay, catch-up, the fan-out reader). All three give the
same envelope for the same event, on every node: the JSON is always made by
:func:`~trio_obs.core.stamp.stamp`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs
import orjson

from ..core import events as ev
from ..core import facts
from ..core.errors import InvalidInput
from ..core.ledger import check_ids
from ..core.protocol import GLOBAL, INVALID_EVENT, TOPIC_OF_TYPE
from ..core.routing import Envelope, own_task_id
from ..core.stamp import stamp, unstamped
from ..core.wire import decode_event, to_json

E = TypeVar("E", bound=ev.StreamEvent)


def _maybe(value: str | None) -> str:
    return "" if value is None else "=" + value


def _unmaybe(value: bytes | None) -> str | None:
    return value[1:].decode() if value else None


@attrs.frozen
class Planned:
    """One stream entry a batch writes, as the script gets it: an event, or a copy of one."""

    event: ev.StreamEvent
    key: str
    """The stream key written: the event's execution, or ``global`` for a copy."""
    kind: str
    data: bytes
    """The unstamped JSON."""
    fact: tuple[Any, ...]
    """What the script reads of it (see the publish script's arguments)."""
    name: str | None = None
    """The tool a ``tool:start`` names."""

    @property
    def is_copy(self) -> bool:
        """Whether this is the ``global`` copy of an ``execution:status``."""
        return self.kind == COPY


COPY: Final = "C"
"""The kind of a ``global`` copy of an execution status."""


def _kind(event: ev.StreamEvent) -> tuple[str, str | None, str]:
    """(kind, tool name, span id or status) of an event, as the script reads them."""
    match event:
        case ev.AssertionResultEvent():
            return ("A" if event.assertion.result == "pass" else "a"), None, ""
        case ev.ToolStartEvent():
            return "T", event.tool, event.tool_use_id
        case ev.ToolEndEvent() | ev.ToolOutputEvent():
            return "r", None, event.tool_use_id
        case ev.SkillStartEvent():
            return "K", None, event.skill_trace_id
        case ev.SkillEndEvent():
            return "k", None, event.skill_trace_id
        case ev.ExecutionStatusEvent():
            return "s", None, event.status
        case _:
            return "p", None, ""


_ROLE_LETTER: Final = {"opens": "o", "closes": "c", "content": "", "status": ""}


def _roles(event: ev.StreamEvent) -> tuple[str, str]:
    """(span role letter, span id) of an event, as the publish script reads them (from the
    table of event facts): see the publish script's roles."""
    role, span_id = facts.role_of(event), facts.span_id_of(event) or ""
    if role == "closes" and getattr(event, "state", None) == "lost":
        return "l", span_id  # INTERIM: the ledger's word for a provisional closing
    if role == "status":
        assert isinstance(event, ev.ExecutionStatusEvent)
        if event.span_id is None:  # INTERIM: OTLP's `started` too, once it is marked
            return "", ""
        if event.status == "started":
            return "S", span_id
        if event.status in ("completed", "failed"):
            return "H", span_id
        return "", ""
    return _ROLE_LETTER[role], span_id


_MARK: Final = "\x00\x01"
_MARKED: Final = b',"agent":"\\u0000\\u0001"'


def _encoded(event: ev.StreamEvent, look: str) -> tuple[bytes, int]:
    """The unstamped JSON of ``event`` and, when ``look`` names a span whose agent it may
    take, where ``,"agent":...`` goes in it (else 0)."""
    if not look:
        return unstamped(event), 0
    owned = event.seq is None
    marked = attrs.evolve(event, agent=_MARK) if not owned else event
    if owned:
        object.__setattr__(event, "agent", _MARK)
    try:
        data = unstamped(marked)
    finally:
        if owned:
            object.__setattr__(event, "agent", None)
    at = data.index(_MARKED)
    return data[:at] + data[at + len(_MARKED) :], at


def plan(batch: Sequence[ev.StreamEvent]) -> list[Planned]:
    """The entries a completed batch writes, in order: each event, and after each execution
    status (of an execution, not of ``global``) that is stored as sent its ``global`` copy
    (the script copies the others, whose fate only it knows).

    Raises :class:`~trio_obs.InvalidInput` when an event cannot be encoded.
    """
    planned: list[Planned] = []
    for index, event in enumerate(batch):
        kind, name, extra = _kind(event)
        role, span_id = _roles(event)
        look, own = "", ""
        if event.agent is None:
            if isinstance(event, ev.SpanStartEvent) and event.kind == "agent":
                object.__setattr__(event, "agent", event.name)  # INTERIM: the ledger's rule
            else:
                look = event.parent_span_id or (span_id if role != "o" else "") or ""
        if role == "o" and event.agent is not None:
            own = to_json(event.agent).decode()
        try:
            data, at = _encoded(event, look)
        except Exception as exc:  # e.g. a value JSON cannot carry
            raise InvalidInput(f"the events cannot be stored: {exc}", INVALID_EVENT) from None
        check_ids(event, data, index, batch)
        key = event.execution_id
        fact: tuple[Any, ...] = (
            key, kind, event.timestamp, _maybe(own_task_id(event)), name or "", extra,
            role, span_id, look, at, own,
        )  # fmt: skip
        planned.append(Planned(event, key, kind, data, fact, name))
        if kind == "s" and key != GLOBAL and role not in ("S", "H"):
            copy = (GLOBAL, COPY, event.timestamp, "", "", "")
            planned.append(Planned(event, GLOBAL, COPY, data, copy))
    return planned


def arguments(planned: Sequence[Planned]) -> list[bytes]:
    """The script's arguments for ``planned`` (after its header): the facts of every entry
    as one JSON array, then the unstamped JSON of each."""
    return [to_json([p.fact for p in planned]), *(p.data for p in planned)]


def _numbered(event: E, **changes: Any) -> E:
    """``event`` with its seq (and pass rate) set: in place if it was never stored (the
    hub owns it from the moment it was handed over, as the ledger does), else a copy."""
    if event.seq is not None:
        return attrs.evolve(event, **changes)
    for name, value in changes.items():
        object.__setattr__(event, name, value)
    return event


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else None


WIDTH: Final = 5
"""Values per entry in the publish script's answer: seq, x, y, agent, more."""


def stored(planned: Sequence[Planned], reply: Sequence[Any], base: int | None) -> list[Envelope]:
    """The envelopes of a stored batch, from the script's ``(seq, x, y, agent, more)`` per
    entry (in order: a copy follows its original; seq 0: not stored) and the fan-out
    position before its first entry (``base``: the entries follow without a gap, in the
    script's order; None where events have no global position)."""
    out: list[Envelope] = []
    numbered: ev.StreamEvent | None = None
    pos = base
    for i, p in enumerate(planned):
        seq, x, y, agent, more = reply[WIDTH * i : WIDTH * i + WIDTH]
        seq = int(seq)
        topic = TOPIC_OF_TYPE[p.event.type]
        if p.is_copy:  # a copy has a fan-out entry, but no position on `all`
            if seq and numbered is not None:
                pos = _after(pos)
                out.append(copy_envelope(numbered, seq, p.data))
            continue
        numbered, data = None, p.data
        if seq:
            pos = _after(pos)
            event = p.event
            if agent is not None:  # the agent the script filled in
                at = p.fact[9]
                data = data[:at] + b',"agent":' + bytes(agent) + data[at:]
                event = _numbered(event, agent=orjson.loads(agent))
            task_id, tool, rate = own_task_id(event), p.name, None
            if isinstance(event, ev.AssertionResultEvent):
                rate = int(x) / int(y)
                event = _numbered(event, seq=seq, pos=pos, running_pass_rate=rate)
            else:
                event = _numbered(event, seq=seq, pos=pos)
            numbered = event
            if p.kind == "r":
                tool, task_id = _text(x), _unmaybe(y)
            elif p.kind == "k":
                task_id = _unmaybe(y)
            stamped = stamp(data, seq, rate, pos)
            out.append(Envelope(p.key, seq, event, stamped, topic, task_id, tool))
        if more:
            copy_seq, released, released_data, released_copy = more
            if int(copy_seq) and numbered is not None:
                pos = _after(pos)
                out.append(copy_envelope(numbered, int(copy_seq), data))
            if int(released):
                pos = _after(pos)
                env = envelope_of(p.key, int(released), {b"d": bytes(released_data)}, pos)
                out.append(env)
                if int(released_copy):
                    pos = _after(pos)
                    out.append(copy_envelope(env.event, int(released_copy), bytes(released_data)))
    return out


def _after(pos: int | None) -> int | None:
    return None if pos is None else pos + 1


def copy_envelope(event: ev.StreamEvent, seq: int, data: bytes) -> Envelope:
    """The ``global`` copy of a stored execution status (no position on ``all``)."""
    copy = attrs.evolve(event, seq=seq, pos=None)
    return Envelope(GLOBAL, seq, copy, stamp(data, seq), TOPIC_OF_TYPE[event.type], is_copy=True)


def pass_rate(fields: Mapping[bytes, bytes]) -> float | None:
    """The ``runningPassRate`` an entry's counts give (None for other events)."""
    counts = fields.get(b"r")
    if counts is None:
        return None
    passed, total = counts.split()
    return int(passed) / int(total)


def position(fields: Mapping[bytes, bytes]) -> int | None:
    """An entry's global position on ``all`` (SPEC §14): its fan-out position, which the
    script writes as ``p`` (None for a ``global`` copy, for entries older than ``p``, and on
    a Redis Cluster, whose ``all`` has no single order)."""
    found = fields.get(b"p")
    return int(found) if found is not None and b"c" not in fields else None


def entry_json(seq: int, fields: Mapping[bytes, bytes]) -> bytes:
    """The wire JSON of a stream entry."""
    return stamp(fields[b"d"], seq, pass_rate(fields), position(fields))


def envelope_of(
    key: str, seq: int, fields: Mapping[bytes, bytes], pos: int | None = None
) -> Envelope:
    """The envelope of a stream entry of ``key`` (its JSON decoded once, here; ``pos``:
    its position, where the fields do not say it)."""
    template, rate = fields[b"d"], pass_rate(fields)
    pos = position(fields) if pos is None else pos
    event = decode_event(orjson.loads(template))
    if rate is None:
        _numbered(event, seq=seq, pos=pos)
    else:
        _numbered(event, seq=seq, pos=pos, running_pass_rate=rate)
    data = stamp(template, seq, rate, pos)
    return Envelope(
        key,
        seq,
        event,
        data,
        TOPIC_OF_TYPE[event.type],
        _unmaybe(fields.get(b"t")),
        _text(fields.get(b"l")),
        b"c" in fields,
    )
