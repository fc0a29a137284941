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
from ..core import facts, spanrules
from ..core.errors import InvalidInput
from ..core.ledger import StreamCounters, check_ids
from ..core.protocol import ENDED_STATES, GLOBAL, INVALID_EVENT, TOPIC_OF_TYPE
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
    """What the script reads of it (see the publish script's FACT)."""

    @property
    def is_copy(self) -> bool:
        """Whether this is the ``global`` copy of an ``execution:status``."""
        return self.kind == COPY


COPY: Final = "C"
"""The kind of a ``global`` copy of an execution status."""


def _kind(event: ev.StreamEvent) -> str:
    """The script's kind of an event: ``A``/``a`` an assertion passed or not, ``s`` a
    status, else ``p``."""
    match event:
        case ev.AssertionResultEvent():
            return "A" if event.assertion.result == "pass" else "a"
        case ev.ExecutionStatusEvent():
            return "s"
        case _:
            return "p"


_ROLE_LETTER: Final = {"opens": "o", "closes": "c", "content": "n", "status": "s"}
_ROLES: Final = {t: _ROLE_LETTER[f.role] for t, f in facts.FACTS.items()}
"""The script's role letter of each type (a status is told apart by :func:`_role`)."""
_RESOLVES: Final = {t: "1" if f.span_kind is not None else "" for t, f in facts.FACTS.items()}
"""Whether content of the type takes its tool and task from its span (``tool:output``)."""


def _role(event: ev.StreamEvent) -> str:
    """The script's role letter of an event, from the table of event facts (see the
    publish script's FACT)."""
    role = _ROLES[event.type]
    if role != "s":
        return role
    assert isinstance(event, ev.ExecutionStatusEvent)
    if event.execution_id == GLOBAL or not spanrules.is_root_status(event):
        return "s"
    if event.status == "started":
        return "S"
    return "H" if event.status in ENDED_STATES else "R"


_MARK: Final = "\x00\x01"
_MARKED: Final = b',"agent":"\\u0000\\u0001"'


def _encoded(event: ev.StreamEvent, marked: bool) -> tuple[bytes, int]:
    """The unstamped JSON of ``event`` and, if ``marked``, where ``,"agent":...`` would go
    in it (else -1): the script fills in the agent it finds."""
    if not marked:
        return unstamped(event), -1
    owned = event.seq is None
    copy = event if owned else attrs.evolve(event, agent=_MARK)
    if owned:
        object.__setattr__(event, "agent", _MARK)
    try:
        data = unstamped(copy)
    finally:
        if owned:
            object.__setattr__(event, "agent", None)
    at = data.index(_MARKED)
    return data[:at] + data[at + len(_MARKED) :], at


def _json(value: str | None) -> str:
    return "" if value is None else to_json(value).decode()


def _fact(event: ev.StreamEvent, kind: str, role: str, span_id: str, at: int) -> tuple[Any, ...]:
    """What the publish script reads of an event (its FACT)."""
    fact: tuple[Any, ...] = (
        event.execution_id, kind, event.timestamp, _maybe(facts.own_task_id(event)),
        facts.tool_of(event) or "", getattr(event, "status", "") if kind == "s" else "",
        role, span_id, event.parent_span_id or "", at,
    )  # fmt: skip
    if role not in ("o", "c"):
        # a status's 21: the root span's title (the script decides if it names the run)
        title = _json(event.name) if isinstance(event, ev.ExecutionStatusEvent) else ""
        return (*fact, "", "", "", "", int(facts.is_error_event(event)), "", -1, -1,
                _RESOLVES[event.type],
                _json(event.agent), title)  # fmt: skip
    span_kind = facts.span_kind_of(event) or ("span" if role == "o" else "")
    name = facts.span_name_of(event)
    tokens = (-1, -1)
    if isinstance(event, ev.SpanEndEvent) and event.usage:
        tokens = (event.usage.get("inputTokens", 0), event.usage.get("outputTokens", 0))
    lost = role == "c" and spanrules.closing_state(event) == spanrules.LOST
    return (
        *fact, span_kind, name, getattr(event, "model", None) or "", "1" if lost else "",
        int(facts.is_error_event(event)), getattr(event, "conversation_id", None) or "",
        *tokens, "", _json(event.agent), _json(name) if span_kind == "agent" and name else "",
    )  # fmt: skip


def plan(batch: Sequence[ev.StreamEvent]) -> list[Planned]:
    """The entries a completed batch writes, in order: each event, and after each execution
    status stored as sent (of an execution, not of ``global``) its ``global`` copy (the
    script copies the root span's statuses, whose fate only it knows).

    Raises :class:`~trio_obs.InvalidInput` when an event cannot be encoded.
    """
    planned: list[Planned] = []
    for index, event in enumerate(batch):
        kind, role, span_id = _kind(event), _role(event), facts.span_id_of(event) or ""
        marked = (
            event.agent is None
            and role in ("o", "c", "n")
            and (role != "n" or event.parent_span_id is not None or span_id != "")
        )
        try:
            data, at = _encoded(event, marked)
        except Exception as exc:  # e.g. a value JSON cannot carry
            raise InvalidInput(f"the events cannot be stored: {exc}", INVALID_EVENT) from None
        check_ids(event, data, index, batch)
        key = event.execution_id
        planned.append(Planned(event, key, kind, data, _fact(event, kind, role, span_id, at)))
        if kind == "s" and key != GLOBAL and role in ("s", "R"):
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


def stored(
    planned: Sequence[Planned],
    reply: Sequence[Any],
    base: int | None,
    released: list[Envelope] | None = None,
) -> list[Envelope]:
    """The answer to a stored batch, from the script's ``(seq, x, y, agent, more)`` per
    entry and the fan-out position before its first entry (``base``: the entries follow
    without a gap, in the script's order; None where events have no global position): an
    envelope per event (a ``global`` copy after an execution status), as the ledger gives
    (an event dropped by the span rules: an envelope not stored, with the seq of the event
    it repeats). A held status released by the batch goes to ``released`` (with its copy)."""
    out: list[Envelope] = []
    numbered: ev.StreamEvent | None = None
    pos = base
    for i, p in enumerate(planned):
        seq, x, y, agent, more = reply[WIDTH * i : WIDTH * i + WIDTH]
        seq = int(seq)
        topic = TOPIC_OF_TYPE[p.event.type]
        if p.is_copy:  # a copy has a fan-out entry, but no position on `all`
            if numbered is not None:
                pos = _after(pos)
                out.append(copy_envelope(numbered, seq, p.data))
            continue
        numbered, data, event = None, p.data, p.event
        if seq < 0:  # dropped: answered with the seq of the event it repeats
            kept = attrs.evolve(event, seq=-seq, pos=None)
            out.append(Envelope(p.key, -seq, kept, b"", topic))
        elif seq:
            pos = _after(pos)
            if agent is not None:  # the agent the script filled in
                at = p.fact[9]
                data = data[:at] + b',"agent":' + bytes(agent) + data[at:]
                event = _numbered(event, agent=orjson.loads(agent))
            if isinstance(event, ev.AssertionResultEvent):
                task_id, tool, rate = own_task_id(event), None, int(x) / int(y)
                event = _numbered(event, seq=seq, pos=pos, running_pass_rate=rate)
            else:
                task_id, tool, rate = _unmaybe(y), _text(x), None
                event = _numbered(event, seq=seq, pos=pos)
            numbered = event
            stamped = stamp(data, seq, rate, pos)
            out.append(Envelope(p.key, seq, event, stamped, topic, task_id, tool))
        if more:
            copy_seq, released_seq, released_data, released_copy = more
            if int(copy_seq) and numbered is not None:
                pos = _after(pos)
                out.append(copy_envelope(numbered, int(copy_seq), data))
            if int(released_seq):
                pos = _after(pos)
                env = envelope_of(p.key, int(released_seq), {b"d": bytes(released_data)}, pos)
                if released is not None:
                    released.append(env)
                if int(released_copy):
                    pos = _after(pos)
                    copy = copy_envelope(env.event, int(released_copy), bytes(released_data))
                    if released is not None:
                        released.append(copy)
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


def counters_of(flat: Sequence[Any]) -> StreamCounters:
    """An execution's counters from its ``c:<key>`` hash (HGETALL's flat answer): what the
    ledger keeps in SQLite's ``streams``, so that its summary is made alike."""
    fields = {bytes(flat[i]).decode(): bytes(flat[i + 1]).decode() for i in range(0, len(flat), 2)}

    def number(name: str) -> int:
        return int(fields.get(name) or 0)

    models: dict[str, tuple[int, int]] = {}
    for field, value in fields.items():
        if field.startswith("mi:"):
            model = field[3:]
            models[model] = (int(value), number("mo:" + model))
    agents = fields.get("agents")
    return StreamCounters(
        last_seq=number("seq"), event_count=number("n"), first_timestamp=fields.get("first"),
        last_timestamp=fields.get("last"), last_status=fields.get("status"),
        assertions_total=number("at"), assertions_passed=number("ap"),
        started_seq=number("started"), status_seq=number("ended"), open_spans=number("open"),
        name=fields.get("name"), name_since=fields.get("namesince"),
        conversation_id=fields.get("conv"), agents=tuple(orjson.loads(agents)) if agents else (),
        model_calls=number("mc"), input_tokens=number("ti"), output_tokens=number("to"),
        tool_calls=number("tc"), errors=number("er"), models=models,
    )  # fmt: skip
