"""The client's resume state alone: dedupe, since, since_pos of `all`, epochs and resets."""

from __future__ import annotations

import attrs
import pytest

from trio_obs.core import events as ev
from trio_obs.core.errors import InvalidInput
from trio_obs.core.protocol import ALL
from trio_obs.core.resume import ResumeState, split_handshake_filters, subscription_messages


def out(e: str, seq: int, tool_use_id: str = "t", pos: int | None = None) -> ev.ToolOutputEvent:
    return ev.ToolOutputEvent(execution_id=e, tool_use_id=tool_use_id, chunk="x", seq=seq, pos=pos)


def connected(
    count: int = 0, epoch: str | None = "E1", pos: int | None = None
) -> ev.ConnectedEvent:
    return ev.ConnectedEvent(
        execution_id="e1", message="m", buffered_event_count=count, epoch=epoch, pos=pos
    )


def deliver(state: ResumeState, event: ev.StreamEvent) -> bool:
    new = state.accept(event)
    state.delivered(event)
    return new


def test_each_event_is_new_once_and_the_next_connection_resumes_after_it() -> None:
    state = ResumeState("e1")
    assert state.query() == {"observability": "e1"}
    assert not state.connected(connected(0))
    assert [deliver(state, out("e1", s)) for s in (1, 2, 2, 1, 3)] == [
        True, True, False, False, True
    ]  # fmt: skip
    assert state.query() == {"observability": "e1", "since": 3, "epoch": "E1"}
    assert state.connected(connected(0))  # a reconnect
    assert not deliver(state, out("e1", 3))


def test_since_given_by_the_user_is_where_it_starts() -> None:
    state = ResumeState("e1", since=10)
    assert state.query() == {"observability": "e1", "since": 10}
    state.connected(connected(5, epoch=None))
    assert not deliver(state, out("e1", 10))
    assert deliver(state, out("e1", 11))


def test_a_reset_starts_over_from_the_new_history() -> None:
    state = ResumeState("e1")
    state.connected(connected(0))
    for s in (1, 2, 3, 4):
        deliver(state, out("e1", s))
    notice = state.reset(ev.ResetEvent(epoch="E2", last_seq=2))
    assert "E2" in notice and "starting over" in notice
    assert deliver(state, out("e1", 1)) and deliver(state, out("e1", 2))
    assert state.query() == {"observability": "e1", "since": 2, "epoch": "E2"}


def test_a_server_without_epochs_that_forgot_its_store_is_warned_about_once() -> None:
    state = ResumeState("e1", since=50)
    state.query()
    state.connected(connected(0, epoch=None))
    warning = state.stale_warning(out("e1", 3))
    assert warning is not None and "since=50" in warning
    assert state.stale_warning(out("e1", 4)) is None


def test_all_resumes_after_the_last_position() -> None:
    state = ResumeState(ALL)
    assert state.query() == {"observability": ALL}
    state.connected(connected(0, pos=40))  # where the stream began: resume from there
    assert state.query() == {"observability": ALL, "since_pos": 40, "epoch": "E1"}
    assert deliver(state, out("a", 6, pos=41))
    assert not deliver(state, out("b", 3, pos=41))  # a position seen: a duplicate
    assert not deliver(state, out("b", 2, pos=39))
    assert deliver(state, out("b", 4, pos=44))
    assert state.query() == {"observability": ALL, "since_pos": 44, "epoch": "E1"}
    state.connected(connected(0, pos=44))  # the reconnect: still from the last one seen
    assert state.last_pos == 44
    assert "E2" in state.reset(ev.ResetEvent(epoch="E2", last_seq=9))
    assert deliver(state, out("a", 1, pos=1))  # the new history's positions are new
    assert state.query() == {"observability": ALL, "since_pos": 1, "epoch": "E2"}


def test_a_live_query_travels_in_the_handshake_of_all() -> None:
    handshake, rest = split_handshake_filters(ALL, {"q": "deploy", "tool": "Bash", "taskId": "t"})
    assert (handshake, rest) == ({"q": "deploy", "tool": "Bash"}, {"taskId": "t"})
    state = ResumeState(ALL, since_pos=7, handshake=handshake)
    assert state.query() == {"observability": ALL, "q": "deploy", "tool": "Bash", "since_pos": 7}
    assert split_handshake_filters("e1", {"tool": "Bash"}) == ({}, {"tool": "Bash"})
    with pytest.raises(InvalidInput, match="needs the 'all' stream"):
        split_handshake_filters("e1", {"q": "deploy"})
    with pytest.raises(InvalidInput, match="quote that is not closed"):
        split_handshake_filters(ALL, {"q": '"deploy'})


def test_until_confirmed_the_client_applies_its_own_filters() -> None:
    messages, filters = subscription_messages(["tools"], {"tools": ["Bash"]})
    assert len(messages) == 3  # all + filters, tools, unsubscribe all: never narrower midway
    state = ResumeState("e1", filters=filters, subscribe_messages=len(messages))
    state.connected(connected(0))
    start = ev.ToolStartEvent(
        execution_id="e1", tool_use_id="r", tool="Read", input_summary="x", seq=1
    )
    assert not deliver(state, start)
    assert not deliver(state, out("e1", 2, "r"))  # the output of a Read use: dropped too
    for _ in messages:
        state.replied()
    assert deliver(state, attrs.evolve(out("e1", 3, "r")))  # the server filters from now on


def test_subscription_messages_refuse_bad_topics_and_filters() -> None:
    assert subscription_messages([], None)[0] == []
    with pytest.raises(InvalidInput):
        subscription_messages(["weather"], None)
    with pytest.raises(InvalidInput):
        subscription_messages([], {"severity": ["loud"]})
