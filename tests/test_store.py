"""The SQLite store under the local hub: seq per stream key, persistence, derived fields,
group commit (the ledger's rules alone are in tests/core/test_ledger.py)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

from support import running_server, ws_client
from trio_obs import GLOBAL, EmittingHub, InvalidInput, StoreError, open_observability
from trio_obs.core import events as ev
from trio_obs.core.wire import decode_stream_event, summaries_json
from trio_obs.hub.lockfile import Mark
from trio_obs.hub.sqlite import DURABILITIES, INLINE_LOOKUPS


@asynccontextmanager
async def open_hub(path: str) -> AsyncIterator[EmittingHub]:
    async with open_observability(path) as obs:
        yield obs.broker


@pytest.fixture(params=["memory", "file"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EmittingHub]:
    path = ":memory:" if request.param == "memory" else str(tmp_path / "obs.db")
    async with open_hub(path) as hub:
        yield hub


# --------------------------------------------------------------------------- event makers


def status(execution_id: str, state: ev.ExecutionState = "running") -> ev.ExecutionStatusEvent:
    return ev.ExecutionStatusEvent(execution_id=execution_id, status=state)


def tool_start(execution_id: str, tool_use_id: str, tool: str, task_id: str) -> ev.ToolStartEvent:
    return ev.ToolStartEvent(
        execution_id=execution_id,
        tool_use_id=tool_use_id,
        tool=tool,
        input_summary=f"{tool} something",
        task_id=task_id,
    )


def tool_end(execution_id: str, tool_use_id: str) -> ev.ToolEndEvent:
    return ev.ToolEndEvent(
        execution_id=execution_id, tool_use_id=tool_use_id, result_status="done", duration_ms=3
    )


def tool_output(execution_id: str, tool_use_id: str, chunk: str = "x") -> ev.ToolOutputEvent:
    return ev.ToolOutputEvent(execution_id=execution_id, tool_use_id=tool_use_id, chunk=chunk)


def assertion(execution_id: str, result: ev.AssertionOutcome) -> ev.AssertionResultEvent:
    record = ev.AssertionResult(
        id=f"a-{result}",
        task_id="task-1",
        execution_id=execution_id,
        category="tests_pass",
        description="tests pass",
        result=result,
        timestamp="2026-01-01T00:00:00.000Z",
    )
    return ev.AssertionResultEvent(
        execution_id=execution_id, task_id="task-1", assertion=record, running_pass_rate=0.0
    )


def message(execution_id: str | None) -> ev.MessageBusEvent:
    entry = ev.MessageBusLogEntry(
        id="m1",
        event_id="ev1",
        timestamp="ts",
        source="bus",
        event_type="task.failed",
        human_summary="a task failed",
        severity="error",
        category="task",
        created_at="ts",
        execution_id=execution_id,
    )
    return ev.MessageBusEvent(execution_id=execution_id or GLOBAL, entry=entry)


def unencodable(execution_id: str) -> ev.TranscriptEntryEvent:
    """An event the JSON encoder refuses (an integer beyond 64 bits)."""
    entry = ev.TranscriptEntry(
        id="t",
        timestamp="ts",
        sequence=2**70,
        execution_id=execution_id,
        instance_id="i",
        entry_type="x",
        category="c",
        summary="s",
    )
    return ev.TranscriptEntryEvent(execution_id=execution_id, entry=entry)


async def seqs_of(store: EmittingHub, key: str) -> list[int]:
    return [env.seq for env in await store.store.read(key)]


# --------------------------------------------------------------------------- seq


async def test_seq_is_per_key_and_gap_free(store: EmittingHub) -> None:
    envs = await store.publish([tool_output("a", "t", str(i)) for i in range(5)])
    assert [env.seq for env in envs] == [1, 2, 3, 4, 5]
    assert [env.event.seq for env in envs] == [1, 2, 3, 4, 5]
    b = await store.publish([tool_output("b", "t"), tool_output("a", "t"), tool_output("b", "t")])
    assert [(env.key, env.seq) for env in b] == [("b", 1), ("a", 6), ("b", 2)]
    assert store.last_seq("a") == 6
    assert store.last_seq("b") == 2
    assert store.last_seq("never") == 0
    assert await seqs_of(store, "a") == [1, 2, 3, 4, 5, 6]
    assert await seqs_of(store, "b") == [1, 2]


async def test_append_of_nothing_stores_nothing(store: EmittingHub) -> None:
    assert await store.publish([]) == []
    assert await store.executions() == []


async def test_envelope_json_is_the_stored_event(store: EmittingHub) -> None:
    [env] = await store.publish([tool_start("a", "tu1", "Read", "task-1")])
    assert decode_stream_event(env.data) == env.event
    assert env.topic == "tools"
    assert (env.tool, env.task_id, env.is_copy) == ("Read", "task-1", False)
    [read] = await store.store.read("a")
    assert read.data == env.data
    assert read.event == env.event
    assert (read.tool, read.task_id, read.topic) == ("Read", "task-1", "tools")


# --------------------------------------------------------------------------- reads


async def test_read_after_limit_upto(store: EmittingHub) -> None:
    await store.publish([tool_output("a", "t", str(i)) for i in range(10)])
    assert [e.seq for e in await store.store.read("a", after=3, limit=4)] == [4, 5, 6, 7]
    assert [e.seq for e in await store.store.read("a", after=3, upto=5)] == [4, 5]
    assert [e.seq for e in await store.store.read("a", after=8)] == [9, 10]
    assert await store.store.read("a", after=10) == []
    assert await store.store.read("a", after=2, upto=2) == []
    assert await store.store.read("other") == []
    assert [e.event.chunk for e in await store.store.read("a", after=0, limit=2)] == ["0", "1"]  # type: ignore[union-attr]


async def test_a_read_stops_at_a_byte_count_but_returns_at_least_one(store: EmittingHub) -> None:
    await store.publish([tool_output("a", "t", "x" * 1000) for i in range(10)])
    size = len((await store.store.read("a", limit=1))[0].data)
    read = await store.store.read("a", max_bytes=3 * size + 10)
    assert [e.seq for e in read] == [1, 2, 3]
    assert [e.seq for e in await store.store.read("a", after=4, max_bytes=1)] == [5]
    assert len(await store.store.read("a", limit=4, max_bytes=10**9)) == 4


async def test_read_json(store: EmittingHub) -> None:
    envs = await store.publish([tool_output("a", "t", str(i)) for i in range(5)])
    rows = await store.store.read_json("a", after=2, limit=2)
    assert rows == [envs[2].data, envs[3].data]
    assert [orjson.loads(r)["seq"] for r in rows] == [3, 4]
    assert [orjson.loads(r)["seq"] for r in await store.store.read_json("a")] == [1, 2, 3, 4, 5]


async def test_executions_most_recently_active_first(store: EmittingHub) -> None:
    await store.publish([status("a", "started"), tool_output("a", "t")])
    await store.publish([status("b", "running")])
    await store.publish([message(None)])  # global only: not an execution
    await store.publish([tool_output("c", "t")])
    await store.publish([status("a", "completed")])
    summaries = await store.executions()
    assert [s.execution_id for s in summaries] == ["a", "c", "b"]
    a, c, b = summaries
    assert (a.last_status, a.event_count, a.last_seq) == ("completed", 3, 3)
    assert (b.last_status, b.event_count, b.last_seq) == ("running", 1, 1)
    assert (c.last_status, c.event_count, c.last_seq) == (None, 1, 1)
    assert a.first_timestamp is not None
    assert a.first_timestamp <= (a.last_timestamp or "")
    [wire, *_] = orjson.loads(summaries_json(summaries))
    assert wire["executionId"] == "a"
    assert set(wire) == {
        "executionId",
        "lastStatus",
        "eventCount",
        "lastSeq",
        "firstTimestamp",
        "lastTimestamp",
        # SPEC §12 "Totals and names" (cost is added by the server, which has the prices)
        "name",
        "conversationId",
        "agents",
        "state",
        "totals",
    }
    assert [s.execution_id for s in await store.executions(limit=1)] == ["a"]


# --------------------------------------------------------------------------- derived fields


async def test_execution_status_gets_a_global_copy_with_its_own_seq(store: EmittingHub) -> None:
    await store.publish([message(None)])  # global seq 1
    envs = await store.publish([status("a", "running")])
    assert [(e.key, e.seq, e.is_copy) for e in envs] == [("a", 1, False), (GLOBAL, 2, True)]
    assert envs[1].event.execution_id == "a"
    assert envs[1].event.seq == 2
    assert store.last_seq(GLOBAL) == 2
    stored = await store.store.read(GLOBAL)
    assert [(e.seq, e.is_copy, e.event.type) for e in stored] == [
        (1, False, "messagebus:event"),
        (2, True, "execution:status"),
    ]


async def test_message_bus_without_execution_is_stored_in_global(store: EmittingHub) -> None:
    [env] = await store.publish([message(None)])
    assert (env.key, env.seq, env.is_copy) == (GLOBAL, 1, False)
    [own] = await store.publish([message("a")])
    assert own.key == "a"


async def test_running_pass_rate_counts_this_one(store: EmittingHub) -> None:
    rates = []
    for result in ("pass", "fail", "pass", "skip", "pass"):
        [env] = await store.publish([assertion("a", result)])
        rates.append(env.event.running_pass_rate)  # type: ignore[union-attr]
    assert rates == [1.0, 0.5, pytest.approx(2 / 3), 0.5, 0.6]
    [other] = await store.publish([assertion("b", "fail")])
    assert other.event.running_pass_rate == 0.0  # type: ignore[union-attr]


async def test_running_pass_rate_within_one_batch(store: EmittingHub) -> None:
    envs = await store.publish([assertion("a", "fail"), assertion("a", "pass")])
    assert [e.event.running_pass_rate for e in envs] == [0.0, 0.5]  # type: ignore[union-attr]


async def test_tool_end_and_output_resolve_tool_and_task_from_start(store: EmittingHub) -> None:
    await store.publish([tool_start("a", "tu1", "Read", "task-1")])
    await store.publish([tool_start("a", "tu2", "Bash", "task-2")])
    out, end = await store.publish([tool_output("a", "tu1"), tool_end("a", "tu2")])
    assert (out.tool, out.task_id) == ("Read", "task-1")
    assert (end.tool, end.task_id) == ("Bash", "task-2")
    [orphan] = await store.publish([tool_end("a", "unknown")])
    assert (orphan.tool, orphan.task_id) == (None, None)
    # Same tool-use id in another execution is another tool use.
    [elsewhere] = await store.publish([tool_end("b", "tu1")])
    assert elsewhere.tool is None


async def test_start_and_end_in_one_batch_resolve(store: EmittingHub) -> None:
    _, end = await store.publish([tool_start("a", "tu1", "Grep", "task-9"), tool_end("a", "tu1")])
    assert (end.tool, end.task_id) == ("Grep", "task-9")


async def test_skill_end_resolves_its_task(store: EmittingHub) -> None:
    start = ev.SkillStartEvent(
        execution_id="a",
        skill_trace_id="s1",
        skill_name="plan",
        skill_file="plan.md",
        line_number=3,
        task_id="task-4",
    )
    end = ev.SkillEndEvent(
        execution_id="a", skill_trace_id="s1", skill_name="plan", status="success", duration_ms=1
    )
    _, stored_end = await store.publish([start, end])
    assert stored_end.task_id == "task-4"
    assert stored_end.topic == "skills"


# --------------------------------------------------------------------------- restart


async def test_restart_keeps_seqs_counters_and_tool_uses(tmp_path: Path) -> None:
    path = str(tmp_path / "obs.db")
    async with open_hub(path) as store:
        await store.publish(
            [
                tool_start("a", "tu1", "Read", "task-1"),
                assertion("a", "pass"),
                assertion("a", "fail"),
                status("a", "running"),
            ]
        )
        await store.publish([message(None)])
    assert store.store.closed
    async with open_hub(path) as store:
        assert store.last_seq("a") == 4
        assert store.last_seq(GLOBAL) == 2
        envs = await store.publish([tool_end("a", "tu1"), assertion("a", "pass")])
        assert [e.seq for e in envs] == [5, 6]
        assert (envs[0].tool, envs[0].task_id) == ("Read", "task-1")
        assert envs[1].event.running_pass_rate == pytest.approx(2 / 3)  # type: ignore[union-attr]
        [copy] = (await store.publish([status("a", "completed")]))[1:]
        assert (copy.key, copy.seq) == (GLOBAL, 3)
        assert await seqs_of(store, "a") == [1, 2, 3, 4, 5, 6, 7]
        [summary] = await store.executions()
        assert (summary.last_status, summary.event_count) == ("completed", 7)
    async with open_hub(path) as store:
        assert store.last_seq("a") == 7
        assert [s.execution_id for s in await store.executions()] == ["a"]


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    async with open_hub(str(tmp_path / "obs.db")) as store:
        pass
    with pytest.raises(StoreError):
        await store.publish([status("a")])
    with pytest.raises(StoreError):
        await store.store.read("a")


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_appends_are_gap_free_and_batches_contiguous(store: EmittingHub) -> None:
    results: list[list[int]] = []

    async def producer(n: int) -> None:
        for i in range(10):
            envs = await store.publish([tool_output("a", f"t{n}", str(i)) for _ in range(3)])
            results.append([env.seq for env in envs])

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(producer, n)
    flat = sorted(seq for batch in results for seq in batch)
    assert flat == list(range(1, 20 * 10 * 3 + 1))
    for batch in results:  # a batch's events are never interleaved with another's
        assert batch == list(range(batch[0], batch[0] + 3))
    assert await seqs_of(store, "a") == flat
    assert store.last_seq("a") == 600


async def test_a_batch_is_atomic(store: EmittingHub) -> None:
    await store.publish([status("a", "started")])
    with pytest.raises(InvalidInput):
        await store.publish([tool_output("a", "t"), assertion("a", "pass"), unencodable("a")])
    assert store.last_seq("a") == 1
    assert await seqs_of(store, "a") == [1]
    [env] = await store.publish([assertion("a", "fail")])
    assert env.seq == 2
    # The failed batch's pass was never counted.
    assert env.event.running_pass_rate == 0.0  # type: ignore[union-attr]
    [summary] = await store.executions()
    assert summary.event_count == 2


async def test_the_events_of_a_failed_batch_can_be_sent_again(store: EmittingHub) -> None:
    output, start = tool_output("a", "t"), tool_start("a", "tu1", "Read", "task-1")
    with pytest.raises(InvalidInput):
        await store.publish([output, start, unencodable("a")])
    envs = await store.publish([output, start, tool_end("a", "tu1")])
    assert [env.seq for env in envs] == [1, 2, 3]
    assert (envs[2].tool, envs[2].task_id) == ("Read", "task-1")
    assert [env.event for env in await store.store.read("a")] == [env.event for env in envs]


async def test_one_event_object_stored_twice_gets_two_seqs(store: EmittingHub) -> None:
    event = status("a", "running")
    [first, first_copy] = await store.publish([event])
    [second, second_copy] = await store.publish([event])
    assert (first.seq, second.seq) == (1, 2)
    assert (first_copy.seq, second_copy.seq) == (1, 2)
    assert first.event.seq == 1  # the first stored event never changes
    assert second.event.seq == 2
    assert [e.event.seq for e in await store.store.read("a")] == [1, 2]


async def test_a_bad_batch_does_not_fail_a_concurrent_good_batch(store: EmittingHub) -> None:
    outcome: dict[str, Any] = {}

    async def append(name: str, events: Sequence[ev.StreamEvent]) -> None:
        try:
            outcome[name] = await store.publish(events)
        except InvalidInput as exc:
            outcome[name] = exc

    # Both requests are queued before the writer runs, so they share one commit.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, "bad", [unencodable("a")])
        nursery.start_soon(append, "good", [status("b")])
    assert isinstance(outcome["bad"], InvalidInput)
    assert not isinstance(outcome["good"], InvalidInput), outcome["good"]
    assert [env.seq for env in outcome["good"]] == [1, 1]


async def test_a_non_finite_float_never_makes_the_stream_unreadable(store: EmittingHub) -> None:
    await store.publish([status("a")])
    # Refusing it (at construction or when storing) is fine; storing garbage is not.
    with pytest.raises((ValueError, InvalidInput), match="finite"):
        bad = ev.ToolEndEvent(
            execution_id="a", tool_use_id="t", result_status="done", duration_ms=float("nan")
        )
        await store.publish([bad])
    envs = await store.store.read("a")
    assert envs[0].seq == 1


# --------------------------------------------------------------------------- whose file


def _foreign_database(path: Path) -> bytes:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE meta (k TEXT, v TEXT)")
        db.execute("INSERT INTO users VALUES (1, 'ada')")
    db.close()
    return path.read_bytes()


async def test_another_applications_database_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    before = _foreign_database(path)
    with pytest.raises(StoreError, match="not a trio-obs store") as caught:
        async with open_hub(str(path)):
            pass
    assert "users" in str(caught.value) and "--db" in str(caught.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["app.db"]  # no WAL, no lock file left


async def test_an_empty_file_and_an_older_store_are_opened(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    async with open_hub(str(tmp_path / "empty.db")) as store:
        await store.publish([status("a")])
    with sqlite3.connect(tmp_path / "old.db") as db:  # a store of before the meta table
        db.execute(
            "CREATE TABLE events (stream_key TEXT, seq INTEGER, type TEXT, execution_id TEXT,"
            " timestamp TEXT, task_id TEXT, tool TEXT, is_copy INTEGER, data BLOB,"
            " PRIMARY KEY (stream_key, seq)) WITHOUT ROWID"
        )
    db.close()
    async with open_hub(str(tmp_path / "old.db")) as store:
        assert store.last_seq("a") == 0


async def test_health_says_degraded_while_writes_cannot_succeed(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    async with open_hub(str(path)) as store:
        await store.publish([status("a")])
        assert await store.problem() is None
        with sqlite3.connect(path) as other:  # something breaks what every write needs
            other.execute("ALTER TABLE streams RENAME TO streams_gone")
        other.close()
        assert "streams" in (await store.problem() or "")
        with pytest.raises(StoreError):
            await store.publish([status("a")])


# --------------------------------------------------------------------------- machine crashes


def _disk_image(store: EmittingHub, into: Path) -> Path:
    """The database and its WAL as they are on disk now (what a machine crash would leave)."""
    into.mkdir()
    with store.store._lock:  # no commit or checkpoint half-written in the copy
        for suffix in ("", "-wal"):
            source = Path(f"{store.store.path}{suffix}")
            if source.exists():
                shutil.copyfile(source, into / f"obs.db{suffix}")
    return into / "obs.db"


def _leave_mark(store: EmittingHub, image: Path, *, boot: str | None = None) -> None:
    """The lock file as the stopped server left it (its mark is in the page cache)."""
    mark = Mark.decode(Path(f"{store.store.path}.lock").read_bytes())
    assert mark is not None
    if boot is not None:
        mark = attrs.evolve(mark, boot=boot)
    Path(f"{image}.lock").write_bytes(mark.encode())


async def _publish_heartbeats(store: EmittingHub, execution: str, n: int) -> None:
    for i in range(n):
        await store.publish([ev.AgentHeartbeatEvent(
            execution_id=execution, instance_id=f"i{i}", status="working")])  # fmt: skip


async def test_a_lost_tail_of_acknowledged_writes_starts_a_new_epoch(tmp_path: Path) -> None:
    # Power lost with --durability normal: the last 50 of 100 acknowledged events never
    # reached the disk (the WAL is synced only at checkpoints). Their seqs will be given
    # again, so the history cannot continue under the same epoch (SPEC §10).
    async with open_observability(str(tmp_path / "obs.db"), durability="normal") as obs:
        store = obs.broker
        await _publish_heartbeats(store, "e1", 50)
        image = _disk_image(store, tmp_path / "crash")  # the disk stopped changing here
        await _publish_heartbeats(store, "e1", 50)
        epoch = store.epoch
        _leave_mark(store, image)
    async with running_server(str(image)) as srv:
        assert srv.obs.hub.epoch != epoch
        assert srv.obs.broker.last_seq("e1") == 50
        async with ws_client(srv.ws_url("e1", since=100, epoch=epoch)) as ws:
            reset = orjson.loads(await ws.get_message())
            assert reset["type"] == "observability:reset"
            assert (reset["epoch"], reset["lastSeq"]) == (srv.obs.hub.epoch, 50)
            assert orjson.loads(await ws.get_message())["seq"] == 1  # the history that exists
        env = (await srv.obs.hub.publish([status("e1")]))[0]
        assert env.seq == 51  # given again, but under the new epoch


async def test_a_store_that_lost_nothing_keeps_its_epoch(tmp_path: Path) -> None:
    # A process killed (the machine kept running): the disk has everything acknowledged.
    for durability in DURABILITIES:
        async with open_observability(str(tmp_path / f"{durability}.db"),
                                      durability=durability) as obs:  # fmt: skip
            await _publish_heartbeats(obs.broker, "e1", 20)
            image = _disk_image(obs.broker, tmp_path / f"killed-{durability}")
            _leave_mark(obs.broker, image)
            epoch = obs.broker.epoch
        async with open_hub(str(image)) as store:
            assert (store.epoch, store.last_seq("e1")) == (epoch, 20)


async def test_after_a_machine_restart_only_a_synced_store_keeps_its_epoch(
    tmp_path: Path,
) -> None:
    # After a reboot nothing proves the unsynced tail survived: with --durability normal
    # the epoch changes; with full, every acknowledged commit was synced.
    for durability in DURABILITIES:
        async with open_observability(str(tmp_path / f"{durability}.db"),
                                      durability=durability) as obs:  # fmt: skip
            await _publish_heartbeats(obs.broker, "e1", 5)
            image = _disk_image(obs.broker, tmp_path / f"rebooted-{durability}")
            _leave_mark(obs.broker, image, boot="a-boot-before-this-one")
            epoch = obs.broker.epoch
        async with open_hub(str(image)) as store:
            assert (store.epoch == epoch) is (durability == "full")
            assert store.last_seq("e1") == 5


# --------------------------------------------------------------------------- spans (SPEC §12)


def span_start(
    execution_id: str, span_id: str, kind: ev.SpanKind, name: str, **kw: Any
) -> ev.SpanStartEvent:
    return ev.SpanStartEvent(execution_id=execution_id, span_id=span_id, kind=kind, name=name, **kw)


def span_end(execution_id: str, span_id: str, **kw: Any) -> ev.SpanEndEvent:
    return ev.SpanEndEvent(execution_id=execution_id, span_id=span_id, state="done", **kw)


async def test_one_start_one_end_and_the_held_status_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "obs.db")
    root = ev.ExecutionStatusEvent(execution_id="a", status="started", span_id="root")
    async with open_hub(path) as store:
        await store.publish([root, span_start("a", "ag", "agent", "planner"),
                             tool_start("a", "tu1", "Read", "task-1")])  # fmt: skip
        held = await store.publish(
            [ev.ExecutionStatusEvent(execution_id="a", status="completed", span_id="root")]
        )
        assert [e.seq for e in held] == [3]  # not stored: answered with the last seq
    async with open_hub(path) as store:
        # Copies of what was stored before the restart are dropped, answered with its seqs.
        again = await store.publish([root, span_start("a", "ag", "agent", "planner")])
        assert [e.seq for e in again if not e.is_copy] == [1, 2]
        assert store.last_seq("a") == 3
        envs = await store.publish([tool_end("a", "tu1")])
        assert (envs[0].seq, envs[0].tool, envs[0].event.agent) == (4, "Read", None)
        assert store.last_seq("a") == 4  # the agent span is still open: still held
        await store.publish([span_end("a", "ag")])
    async with open_hub(path) as store:
        events = [env.event for env in await store.store.read("a")]
        assert [(e.type, e.seq) for e in events][-2:] == [("span:end", 5), ("execution:status", 6)]
        assert events[-1].status == "completed"  # type: ignore[union-attr]
        [summary] = await store.executions()
        assert (summary.last_status, summary.name, summary.agents) == (
            "completed",
            "planner",
            ["planner"],
        )
        assert summary.totals == {"modelCalls": 0, "inputTokens": 0, "outputTokens": 0,
                                  "toolCalls": 1, "errors": 0}  # fmt: skip
        assert await store.publish([span_end("a", "ag")]) != []  # dropped, answered
        assert store.last_seq("a") == 6


async def test_a_store_of_before_the_span_rules_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the spans table keyed by (execution, kind, id)
        db.execute(
            "CREATE TABLE spans (execution_id TEXT NOT NULL, kind TEXT NOT NULL, span_id TEXT"
            " NOT NULL, name TEXT NOT NULL, task_id TEXT, PRIMARY KEY (execution_id, kind,"
            " span_id)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO spans VALUES ('a', 'tool', 'tu1', 'Read', 'task-1')")
        db.execute(
            "CREATE TABLE streams (stream_key TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,"
            " event_count INTEGER NOT NULL, first_timestamp TEXT, last_timestamp TEXT,"
            " last_status TEXT, assertions_total INTEGER NOT NULL DEFAULT 0, assertions_passed"
            " INTEGER NOT NULL DEFAULT 0, activity INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO streams VALUES ('a', 1, 1, 'ts', 'ts', NULL, 0, 0, 1)")
    db.close()
    async with open_hub(str(path)) as store:
        [end] = await store.publish([tool_end("a", "tu1")])
        assert (end.seq, end.tool, end.task_id) == (2, "Read", "task-1")
        assert await store.publish([tool_start("a", "tu1", "Read", "task-1")]) != []
        assert store.last_seq("a") == 2  # a start after the end: dropped


async def test_a_batch_of_more_spans_than_are_looked_up_inline_is_stored(
    store: EmittingHub,
) -> None:
    """More span keys than INLINE_LOOKUPS go to a worker thread (which takes the lock)."""
    many = INLINE_LOOKUPS * 2
    envs = await store.publish([span_start("a", f"s{i}", "llm", "m") for i in range(many)])
    assert [e.seq for e in envs] == list(range(1, many + 1))
    ends = await store.publish([span_end("a", f"s{i}") for i in range(many)])
    assert [e.seq for e in ends] == list(range(many + 1, 2 * many + 1))
