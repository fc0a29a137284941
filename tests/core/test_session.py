"""The server side of one stream, without a socket: replies, topic changes, closes, resumes."""

from __future__ import annotations

import orjson
import pytest

from support import split_frames
from trio_obs.core import events as ev
from trio_obs.core.protocol import ALL, INTERNAL_ERROR, MAX_CLIENT_MESSAGE, MESSAGE_TOO_BIG
from trio_obs.core.routing import SubscriptionState
from trio_obs.core.session import Close, KeepAlive, Resume, ServerSession, greeting, resume_point

NOW = "2026-12-01T10:00:00.000Z"


def reply(session: ServerSession, text: str) -> dict[str, object]:
    frame = session.text(text, finished=True, now=NOW)
    assert isinstance(frame, bytes)
    [(_, payload)], rest = split_frames(frame)
    assert rest == b""
    answer: dict[str, object] = orjson.loads(payload)
    return answer


def test_ping_is_answered_with_pong() -> None:
    assert reply(ServerSession("e1", SubscriptionState()), '{"type":"ping"}') == {
        "type": "pong",
        "timestamp": NOW,
    }


def test_subscribe_narrows_the_state_and_is_confirmed() -> None:
    state = SubscriptionState()
    session = ServerSession("e1", state)
    answer = reply(session, '{"action":"subscribe","topic":"tools","filters":{"tools":["Bash"]}}')
    assert answer == {
        "type": "observability:subscribed", "topic": "tools", "executionId": "e1", "timestamp": NOW
    }  # fmt: skip
    assert state.topics == frozenset({"tools"}) and state.filters.tools == frozenset({"Bash"})
    assert reply(session, '{"action":"unsubscribe","topic":"tools"}')["type"] == (
        "observability:unsubscribed"
    )
    assert state.topics == frozenset()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "INVALID_MESSAGE"),
        ("[1]", "INVALID_MESSAGE"),
        ('{"action":"dance"}', "INVALID_MESSAGE"),
        ('{"action":"subscribe","topic":"weather"}', "INVALID_TOPIC"),
        ('{"action":"subscribe","topic":"tools","filters":{"tools":5}}', "INVALID_FILTER"),
    ],
)
def test_bad_messages_get_an_error_and_change_nothing(text: str, code: str) -> None:
    state = SubscriptionState()
    answer = reply(ServerSession("e1", state), text)
    assert (answer["type"], answer["code"]) == ("observability:error", code)
    assert state == SubscriptionState()


def test_fragments_are_joined_and_a_message_over_64_kib_closes_with_1009() -> None:
    session = ServerSession("e1", SubscriptionState())
    assert session.text('{"type":', finished=False, now=NOW) is None
    assert isinstance(session.text('"ping"}', finished=True, now=NOW), bytes)
    session.text("x" * MAX_CLIENT_MESSAGE, finished=False, now=NOW)
    assert session.text("x", finished=False, now=NOW) == Close(
        MESSAGE_TOO_BIG, f"message over {MAX_CLIENT_MESSAGE} bytes"
    )
    assert session.binary().code == 1003


def test_keepalive_pings_once_then_closes_with_1011() -> None:
    keepalive = KeepAlive()
    assert keepalive.silent() is None  # send a ping
    keepalive.heard()
    assert keepalive.silent() is None
    close = keepalive.silent()
    assert close is not None and close.code == INTERNAL_ERROR


def test_resume_points() -> None:
    kw = {"epoch": "E1", "last_seq": 150, "buffer_size": 100}
    assert resume_point("e1", since=None, client_epoch=None, **kw).cursor == 50  # type: ignore[arg-type]
    assert resume_point("e1", since=7, client_epoch="E1", **kw).cursor == 7  # type: ignore[arg-type]
    assert resume_point("e1", since=150, client_epoch="E1", **kw) == Resume(150)  # type: ignore[arg-type]
    other = resume_point("e1", since=120, client_epoch="E0", **kw)  # type: ignore[arg-type]
    assert other.cursor == 0 and other.reset == ev.ResetEvent(epoch="E1", last_seq=150)
    # `all`: live from the newest position, or after `since_pos` (given as `since`).
    assert resume_point(ALL, since=None, client_epoch=None, **kw).cursor == 150  # type: ignore[arg-type]
    assert resume_point(ALL, since=40, client_epoch="E1", **kw).cursor == 40  # type: ignore[arg-type]
    # Another epoch: told; with since_pos the history that exists from its first event.
    reset = resume_point(ALL, since=40, client_epoch="E0", **kw)  # type: ignore[arg-type]
    assert reset.cursor == 0 and reset.reset is not None
    told = resume_point(ALL, since=None, client_epoch="E0", **kw)  # type: ignore[arg-type]
    assert told.cursor == 150 and told.reset is not None


@pytest.mark.parametrize("client_epoch", [None, "E1"])
def test_a_since_beyond_the_stored_head_is_told_not_clamped(client_epoch: str | None) -> None:
    # The client saw seqs the store no longer holds (a store rolled back, an execution
    # deleted by retention): what comes under those numbers next would be other events.
    kw = {"epoch": "E1", "last_seq": 150, "buffer_size": 100}
    told = Resume(0, ev.ResetEvent(epoch="E1", last_seq=150))
    assert resume_point("e1", since=151, client_epoch=client_epoch, **kw) == told  # type: ignore[arg-type]
    # `all` with a since_pos beyond the newest position: the same (the positions it saw
    # are not this history's).
    assert resume_point(ALL, since=999, client_epoch=client_epoch, **kw) == told  # type: ignore[arg-type]


def test_greeting_is_connected_then_reset_when_the_epoch_changed() -> None:
    frames = greeting("e1", replayed=3, epoch="E1", reset=None, now=NOW)
    [(_, payload)], rest = split_frames(frames)
    assert rest == b""
    assert orjson.loads(payload) == {
        "type": "observability:connected", "executionId": "e1",
        "message": "Connected to execution e1", "bufferedEventCount": 3, "epoch": "E1",
        "timestamp": NOW,
    }  # fmt: skip
    both = greeting(
        ALL, replayed=0, epoch="E1", reset=ev.ResetEvent(epoch="E1", last_seq=9), now=NOW
    )
    [(_, first), (_, second)], rest = split_frames(both)
    assert orjson.loads(first)["message"] == "Connected to all observability events"
    assert orjson.loads(second) == {
        "type": "observability:reset", "epoch": "E1", "lastSeq": 9, "timestamp": NOW
    }  # fmt: skip
    assert rest == b""
