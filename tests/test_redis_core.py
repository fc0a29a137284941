"""The socket-free rules the Redis hub adds: stamping stored JSON, resuming across epochs,
and the dispatcher's answers to a shared store (events it learns of late, missed, or lost)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_obs import ALL
from trio_obs.core import events as ev
from trio_obs.core.protocol import SLOW_CONSUMER
from trio_obs.core.routing import Envelope
from trio_obs.core.session import resume_point
from trio_obs.core.stamp import stamp, unstamped
from trio_obs.core.wire import encode
from trio_obs.hub.dispatch import Dispatcher

# --------------------------------------------------------------------------- stamping

# Strings that try to look like the JSON around them.
tricky = st.text(max_size=12) | st.sampled_from(
    ['","seq":1', ',"runningPassRate":0.5,', '"}', "\\", ',"timestamp":"x"}', "{", ""]
)
nested = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(0, 1) | tricky,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(tricky | st.just("runningPassRate"), inner, max_size=3)
    ),
    max_leaves=8,
)
objects = st.dictionaries(tricky | st.just("runningPassRate"), nested, max_size=4)
stamped_at = st.text(min_size=1, max_size=24) | st.just("2026-01-01T00:00:00.000Z")
ids = st.text(min_size=1, max_size=8)


def events() -> st.SearchStrategy[ev.StreamEvent]:
    """Every stream event type, with a timestamp (stored events always have one)."""
    common: dict[str, Any] = {"execution_id": ids, "timestamp": stamped_at}
    assertion = st.builds(
        ev.AssertionResult, id=ids, task_id=ids, execution_id=ids, category=tricky,
        description=tricky, result=st.sampled_from(["pass", "fail", "skip", "warn"]),
        timestamp=tricky, evidence=st.none() | objects,
    )  # fmt: skip
    entry = st.builds(
        ev.TranscriptEntry, id=ids, timestamp=tricky, sequence=st.integers(0, 10**9),
        execution_id=ids, instance_id=ids, entry_type=tricky, category=tricky, summary=tricky,
        details=st.none() | objects,
    )  # fmt: skip
    bus = st.builds(
        ev.MessageBusLogEntry, id=ids, event_id=ids, timestamp=tricky, source=tricky,
        event_type=tricky, human_summary=tricky, severity=st.sampled_from(["info", "error"]),
        category=tricky, created_at=tricky, payload=st.none() | objects,
    )  # fmt: skip
    return st.one_of(
        st.builds(ev.TranscriptEntryEvent, entry=entry, **common),
        st.builds(ev.ToolStartEvent, tool_use_id=ids, tool=tricky, input_summary=tricky, **common),
        st.builds(
            ev.ToolEndEvent,
            tool_use_id=ids,
            result_status=st.just("error"),
            duration_ms=st.floats(0, 1e9),
            output_summary=st.none() | tricky,
            **common,
        ),
        st.builds(ev.ToolOutputEvent, tool_use_id=ids, chunk=tricky, **common),
        st.builds(
            ev.AssertionResultEvent,
            task_id=ids,
            assertion=assertion,
            running_pass_rate=st.floats(0, 1),
            **common,
        ),
        st.builds(
            ev.SkillStartEvent,
            skill_trace_id=ids,
            skill_name=tricky,
            skill_file=tricky,
            line_number=st.integers(0, 10**6),
            **common,
        ),
        st.builds(
            ev.SkillEndEvent,
            skill_trace_id=ids,
            skill_name=tricky,
            status=st.just("success"),
            duration_ms=st.floats(0, 1e6),
            **common,
        ),
        st.builds(ev.MessageBusEvent, entry=bus, requires_action=st.booleans(), **common),
        st.builds(
            ev.WaveStatusEvent,
            wave_number=st.integers(0, 9),
            status=st.just("running"),
            task_count=st.integers(0, 9),
            completed_count=st.integers(0, 9),
            failed_count=st.integers(0, 9),
            **common,
        ),
        st.builds(
            ev.AgentHeartbeatEvent,
            instance_id=ids,
            status=st.just("idle"),
            metrics=st.none() | st.dictionaries(tricky, st.floats(0, 1), max_size=3),
            **common,
        ),
        st.builds(
            ev.ExecutionStatusEvent,
            status=st.just("running"),
            message=st.none() | tricky,
            **common,
        ),
    )


@settings(max_examples=400, deadline=None)
@given(event=events(), seq=st.integers(1, 2**53), passed=st.integers(0, 10**6), extra=st.data())
def test_stamped_json_is_what_the_converter_writes(
    event: ev.StreamEvent, seq: int, passed: int, extra: st.DataObject
) -> None:
    if isinstance(event, ev.AssertionResultEvent):
        total = passed + extra.draw(st.integers(1 if passed == 0 else 0, 10**6))
        rate = passed / total
        expected = encode(attrs.evolve(event, seq=seq, running_pass_rate=rate))
        assert stamp(unstamped(event), seq, rate) == expected
    else:
        assert stamp(unstamped(event), seq) == encode(attrs.evolve(event, seq=seq))


def test_unstamped_json_leaves_out_a_seq_the_event_had() -> None:
    event = ev.ExecutionStatusEvent(execution_id="e", status="running", timestamp="t", seq=7)
    assert unstamped(event) == encode(attrs.evolve(event, seq=None))
    assert stamp(unstamped(event), 9) == encode(attrs.evolve(event, seq=9))


def test_an_assertion_without_a_timestamp_is_stamped_too() -> None:
    result = ev.AssertionResult(
        id="a", task_id="t", execution_id="e", category="c", description="d", result="pass",
        timestamp="", evidence={"runningPassRate": 0.25},
    )  # fmt: skip
    event = ev.AssertionResultEvent(execution_id="e", task_id="t", assertion=result)
    assert stamp(unstamped(event), 3, 0.5) == encode(
        attrs.evolve(event, seq=3, running_pass_rate=0.5)
    )


# --------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("stream", ["e1", ALL])
def test_a_client_of_another_epoch_is_told_to_start_over(stream: str) -> None:
    resume = resume_point(
        stream, since=40, client_epoch="old", epoch="new", last_seq=7, buffer_size=100
    )
    assert resume.cursor == 0
    assert resume.reset == ev.ResetEvent(epoch="new", last_seq=7)


@pytest.mark.parametrize("client_epoch", [None, "same"])
def test_a_client_of_this_epoch_resumes_where_it_was(client_epoch: str | None) -> None:
    resume = resume_point(
        "e1", since=4, client_epoch=client_epoch, epoch="same", last_seq=7, buffer_size=100
    )
    assert (resume.cursor, resume.reset) == (4, None)
    assert resume_point(
        ALL, since=None, client_epoch=client_epoch, epoch="same", last_seq=0, buffer_size=100
    ) == resume_point(ALL, since=None, client_epoch=None, epoch="same", last_seq=0, buffer_size=1)


# --------------------------------------------------------------------------- dispatching


def envelope(key: str, seq: int) -> Envelope:
    event = ev.AgentHeartbeatEvent(
        execution_id=key, instance_id="i", status="idle", timestamp="t", seq=seq
    )
    return Envelope.of(key, event)


class Store:
    """A source holding envelopes; ``blocked`` makes reads wait (as for a store that is down)."""

    def __init__(self) -> None:
        self.envelopes: dict[str, list[Envelope]] = {}
        self.blocked = False
        self.reads = 0

    def add(self, key: str, *seqs: int) -> list[Envelope]:
        made = [envelope(key, s) for s in seqs]
        self.envelopes.setdefault(key, []).extend(made)
        return made

    async def read_envelopes(self, key: str, *, after: int, limit: int) -> list[Envelope]:
        self.reads += 1
        if self.blocked:
            await trio.sleep_forever()
        return [e for e in self.envelopes.get(key, []) if e.seq > after][:limit]


def dispatcher(store: Store) -> Dispatcher:
    return Dispatcher(store, buffer_size=10, queue_size=10, buffer_bytes=10**7)


async def test_a_subscriber_that_knows_of_events_memory_lacks_reads_the_store() -> None:
    store = Store()
    d = dispatcher(store)
    d.dispatch(store.add("e", 1, 2), 0.0)
    store.add("e", 3, 4)  # stored, not yet dispatched here (another node posted them)
    sub = d.subscribe("e", cursor=0, head=4)
    assert [e.seq for e in sub.take_nowait() or []] == [1, 2]
    assert sub.take_nowait() is None  # memory ends before the head: read the store
    assert [e.seq for e in await sub.read_behind()] == [3, 4]
    d.dispatch(store.envelopes["e"][2:], 0.0)  # they arrive late: nothing twice
    assert sub.take_nowait() == []
    d.dispatch(store.add("e", 5), 0.0)
    assert [e.seq for e in sub.take_nowait() or []] == [5]


async def test_closing_a_subscription_ends_a_read_that_waits_for_the_store() -> None:
    store = Store()
    store.add("e", 1)
    store.blocked = True
    sub = dispatcher(store).subscribe("e", cursor=0, head=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sub.read_behind)
        await trio.testing.wait_all_tasks_blocked()
        assert store.reads == 1
        sub.close()  # a shielded writer task closing its connection: the read returns
    assert await sub.read_behind() == []


async def test_missed_events_wake_the_subscribers_behind_and_end_all() -> None:
    store = Store()
    d = dispatcher(store)
    d.dispatch(store.add("e", 1), 0.0)
    sub = d.subscribe("e", cursor=1, head=1)
    everything = d.subscribe(ALL, cursor=0, head=0)
    assert sub.take_nowait() == []
    store.add("e", 2, 3)  # trimmed before this dispatcher read them
    d.missed({"e": 3})
    assert sub.marked
    assert sub.take_nowait() is None
    assert [e.seq for e in await sub.read_behind()] == [2, 3]
    assert everything.end_reason == SLOW_CONSUMER


async def test_restart_ends_every_subscription_and_forgets_the_logs() -> None:
    store = Store()
    d = dispatcher(store)
    d.dispatch(store.add("e", 1, 2), 0.0)
    subs = [d.subscribe("e", cursor=0, head=2), d.subscribe(ALL, cursor=0, head=0)]
    d.restart("history changed")
    assert [s.end_reason for s in subs] == ["history changed"] * 2
    assert d.subscriptions() == []
    assert len(d.logs) == 0
