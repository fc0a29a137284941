"""Running a server as an operator does: stopping it under load, one store per server,
bind warnings, log levels, descriptor exhaustion, retention and idempotent ingest."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

import trio_obs
from support import (
    START_TIMEOUT,
    TIMEOUT,
    ServerProcess,
    assert_clean,
    command,
    environment,
    free_port,
    heartbeat,
    heartbeats,
    running_server,
    serve_cli,
)
from trio_obs.core.events import AgentHeartbeatEvent

pytestmark = pytest.mark.usefixtures("no_server_errors")

JSON = {"content-type": "application/json"}


def _stored(db: Path, key: str = "") -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT stream_key, seq FROM events WHERE ? = '' OR stream_key = ? ORDER BY 1, 2",
            (key, key),
        ).fetchall()
    return [(k, s) for k, s in rows]


# --------------------------------------------------------------------------- idempotency


async def test_an_idempotency_key_makes_a_retry_store_nothing_twice(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    batch = orjson.dumps(heartbeats("e1", 3))
    key = {"idempotency-key": "batch-0001", **JSON}
    async with running_server(str(db)) as srv:
        first = await srv.http.post("/api/events", content=batch, headers=key)
        again = await srv.http.post("/api/events", content=batch, headers=key)
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json() == {"accepted": 3, "seqs": [1, 2, 3]}
        other = await srv.http.post("/api/events", content=batch, headers=JSON)
        assert other.json()["seqs"] == [4, 5, 6]
    # The key survives a restart.
    async with running_server(str(db)) as srv:
        after = await srv.http.post("/api/events", content=batch, headers=key)
        assert after.json() == {"accepted": 3, "seqs": [1, 2, 3]}
    assert [s for _, s in _stored(db, "e1")] == [1, 2, 3, 4, 5, 6]


async def test_concurrent_posts_with_one_key_store_once() -> None:
    async with running_server() as srv:
        answers: list[Any] = []

        async def post() -> None:
            response = await srv.http.post(
                "/api/events",
                content=orjson.dumps(heartbeats("e1", 2)),
                headers={"idempotency-key": "same", **JSON},
            )
            answers.append(response.json())

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(post)
        assert all(a == {"accepted": 2, "seqs": [1, 2]} for a in answers), answers
        assert srv.obs.broker.last_seq("e1") == 2


async def test_a_refused_post_leaves_its_key_unused() -> None:
    async with running_server() as srv:
        key = {"idempotency-key": "k1", **JSON}
        bad = await srv.http.post("/api/events", content=b'{"type":"nope"}', headers=key)
        assert bad.status_code == 400
        good = await srv.http.post(
            "/api/events", content=orjson.dumps(heartbeat("e1")), headers=key
        )
        assert good.json() == {"accepted": 1, "seqs": [1]}
        too_long = await srv.http.post(
            "/api/events",
            content=orjson.dumps(heartbeat("e1")),
            headers={"idempotency-key": "x" * 201, **JSON},
        )
        assert too_long.status_code == 400
        assert "Idempotency-Key" in too_long.json()["error"]


async def _answer_lost_proxy(
    target: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A TCP proxy that forwards the first request, then drops its answer (a lost reply)."""
    first = [True]

    async def handle(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", target) as upstream:
            drop = first[0]
            first[0] = False
            async with trio.open_nursery() as nursery:

                async def up() -> None:
                    async for data in client:
                        await upstream.send_all(data)

                async def down() -> None:
                    async for data in upstream:
                        if drop:  # the server answered; the producer never hears it
                            nursery.cancel_scope.cancel()
                            return
                        await client.send_all(data)

                nursery.start_soon(up)
                nursery.start_soon(down)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_post_events_retries_a_lost_answer_and_stores_once(nursery: trio.Nursery) -> None:
    async with running_server() as srv:
        proxy = await nursery.start(_answer_lost_proxy, srv.port)
        events = [
            AgentHeartbeatEvent(execution_id="e1", instance_id=f"i{i}", status="idle")
            for i in range(3)
        ]
        seqs = await trio_obs.post_events(f"http://127.0.0.1:{proxy}", events)
        assert seqs == [1, 2, 3]
        assert srv.obs.broker.last_seq("e1") == 3  # stored once, though sent twice
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- retention


async def test_retention_deletes_idle_executions_and_keeps_the_rest(tmp_path: Path) -> None:
    async with running_server(str(tmp_path / "obs.db")) as srv:
        await srv.http.post("/api/events", content=orjson.dumps(heartbeats("old", 3)))
        await srv.obs.executions.status("old", "completed")
        # A moment between the two executions' last writes (clock steps, not waits for a
        # condition): retaining what has been idle since `between` deletes old, keeps new.
        await trio.sleep(0.1)
        between = time.time()
        await trio.sleep(0.1)
        await srv.http.post("/api/events", content=orjson.dumps(heartbeats("new", 2)))
        deleted = await srv.obs.hub.retain(time.time() - between)  # read at once: no await
        assert deleted == ["old"]
        listing = (await srv.http.get("/api/executions")).json()
        assert [e["executionId"] for e in listing] == ["new"]
        assert (await srv.http.get("/api/executions/old/events")).json() == []
        assert srv.obs.broker.get_buffered_events("old") == []
        # `global` is never deleted (it holds the copy of old's completed status).
        assert (await srv.http.get("/api/executions/global/events")).json()
        # An execution deleted this way that gets events again starts over.
        again = await srv.http.post("/api/events", content=orjson.dumps(heartbeat("old")))
        assert again.json()["seqs"] == [1]
    assert {k for k, _ in _stored(tmp_path / "obs.db")} == {"new", "old", "global"}


async def test_the_retention_flag_deletes_idle_executions(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    async with serve_cli("--db", str(db), "--retention", "1s") as cli:
        async with httpx.AsyncClient(trust_env=False, headers=JSON) as http:
            await http.post(cli.url("/api/events"), content=orjson.dumps(heartbeats("idle", 2)))
            with trio.fail_after(TIMEOUT):
                while (await http.get(cli.url("/api/executions"))).json():  # noqa: ASYNC110 - polling another side
                    await trio.sleep(0.2)
        assert await cli.stop() == 0
    assert "retention: deleted 1 execution(s) idle for over 1s" in cli.stderr
    assert _stored(db, "idle") == []


async def test_counters_of_many_executions_are_not_all_kept_in_memory() -> None:
    async with running_server() as srv:
        ledger = srv.obs.broker.ledger
        ledger._stream_cache_size = 20  # a small cache, to see it work
        for i in range(60):
            await srv.http.post("/api/events", content=orjson.dumps(heartbeats(f"x{i}", 2)))
        assert len(ledger) <= 20
        # An execution evicted from memory continues where it was.
        more = await srv.http.post("/api/events", content=orjson.dumps(heartbeat("x0")))
        assert more.json()["seqs"] == [3]
        assert srv.obs.broker.last_seq("x1") == 2


# --------------------------------------------------------------------------- stopping


async def test_a_stop_answers_every_post_it_stored(tmp_path: Path) -> None:
    # A graceful stop commits in-flight POSTs and answers them: no batch is stored
    # without its producer hearing so (a producer that hears nothing retries).
    db = tmp_path / "obs.db"
    server = ServerProcess("--db", str(db))
    answered: list[int] = []
    posting = trio.Event()  # set once a POST was answered: the stop comes while they flow
    stopped = trio.Event()

    async def producer(n: int) -> None:
        async with httpx.AsyncClient(trust_env=False, headers=JSON, timeout=TIMEOUT) as http:
            for i in range(1000):
                if stopped.is_set() and i % 7 == 0:
                    return
                try:
                    r = await http.post(
                        server.url("/api/events"),
                        content=orjson.dumps(heartbeats(f"p{n}", 5)),
                    )
                except httpx.TransportError:
                    return
                if r.status_code != 202:
                    return
                answered.extend(r.json()["seqs"])
                posting.set()

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(producer, n)
        with trio.fail_after(TIMEOUT):
            await posting.wait()
        stopped.set()
        status = await trio.to_thread.run_sync(server.stop)
    assert status == 0
    assert_clean("".join(server.stderr))
    assert answered, "nothing was posted before the stop"
    stored = _stored(db)
    assert len(stored) == len(answered)


async def refused_start(*args: str) -> tuple[int, str]:
    """``trio-obs serve --port 0 ARGS``, expected to stop at once: its status and stderr."""
    with trio.fail_after(START_TIMEOUT):
        done = await trio.run_process(
            command("serve", "--port", "0", *args),
            capture_stderr=True,
            check=False,
            env=environment(),
        )
    return done.returncode, done.stderr.decode()


async def test_two_servers_cannot_share_one_store(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    async with serve_cli("--db", str(db)) as first:
        status, stderr = await refused_start("--db", str(db))
        assert status == 1
        assert str(db) in stderr and "in use by another trio-obs server" in stderr
        assert "Traceback" not in stderr
        assert await first.stop() == 0
    assert not (tmp_path / "obs.db.lock").exists()  # a clean stop leaves no lock file
    async with serve_cli("--db", str(db)) as again:  # and the next server takes the store
        assert await again.stop() == 0


async def test_another_applications_database_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.close()
    before = db.read_bytes()
    status, stderr = await refused_start("--db", str(db))
    lines = stderr.strip().splitlines()
    assert status == 1
    assert len(lines) == 1 and "not a trio-obs store" in lines[0] and "users" in lines[0]
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["app.db"]


async def test_stopping_serve_demo_ends_its_execution(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    async with serve_cli("--db", str(db), "--demo") as cli:
        async with httpx.AsyncClient(trust_env=False) as http:
            with trio.fail_after(TIMEOUT):
                while not (await http.get(cli.url("/api/executions"))).json():  # noqa: ASYNC110 - polling another side
                    await trio.sleep(0.1)
        assert await cli.stop(signal.SIGINT) == 0
    with sqlite3.connect(db) as conn:
        statuses = conn.execute(
            "SELECT last_status FROM streams WHERE stream_key != 'global'"
        ).fetchall()
    assert statuses == [("failed",)]  # ended, not left running forever


# --------------------------------------------------------------------------- binding, logs


async def test_binding_beyond_loopback_without_a_token_warns() -> None:
    async with serve_cli("--host", "0.0.0.0", "--db", ":memory:", until_serving=False) as cli:
        assert await cli.stop() == 0
    assert "listening on http://0.0.0.0:" in cli.stderr
    assert "without a token" in cli.stderr and "--token" in cli.stderr
    async with serve_cli(
        "--host", "0.0.0.0", "--token", "s3cret", "--db", ":memory:", until_serving=False
    ) as cli:
        assert await cli.stop() == 0
    assert "without a token" not in cli.stderr
    assert "s3cret" not in cli.stderr


async def test_info_logs_one_line_per_refused_handshake_and_never_the_token() -> None:
    async with serve_cli("--token", "hunter2", "--log-level", "info", "--db", ":memory:") as cli:
        sock = socket.create_connection(("127.0.0.1", cli.port))
        sock.sendall(
            b"GET /ws?observability=e1&token=wrong-hunter2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 401")
        sock.close()
        assert await cli.stop() == 0
    lines = [line for line in cli.stderr.splitlines() if "refused a WebSocket handshake" in line]
    assert len(lines) == 1 and "401" in lines[0]
    assert "hunter2" not in cli.stderr
    # At warning, the start and stop lines are not written (a second server on the same
    # port shows it started: it says nothing and exits on its signal).
    port = free_port()
    with trio.fail_after(START_TIMEOUT):
        process = await trio.lowlevel.open_process(
            command("serve", "--port", str(port), "--log-level", "warning", "--db", ":memory:"),
            stderr=subprocess.PIPE,
            env=environment(),
        )
        # It says nothing: wait until it accepts (its signal handler is set before it listens).
        while True:
            try:
                await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                break
            except OSError:
                await trio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
        assert process.stderr is not None
        quiet = (await process.stderr.receive_some(65536)).decode()
    assert "listening" not in quiet and "Traceback" not in quiet


def test_version_and_port_range() -> None:
    version = subprocess.run(
        command("--version"), capture_output=True, text=True, timeout=START_TIMEOUT, check=True
    )
    assert version.stdout.strip() == f"trio-obs {trio_obs.__version__}"
    bad = subprocess.run(
        command("serve", "--port", "99999"), capture_output=True, text=True, timeout=START_TIMEOUT
    )
    assert bad.returncode == 2
    assert "0 to 65535" in bad.stderr


async def test_running_out_of_descriptors_slows_accepting_and_logs_once() -> None:
    limit = 64
    program = [
        sys.executable,
        "-c",
        "import resource, runpy, sys;"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}));"
        "sys.argv = ['trio-obs', *sys.argv[1:]]; runpy.run_module('trio_obs', run_name='__main__')",
    ]
    async with serve_cli("--max-connections", "1000", "--db", ":memory:", program=program) as cli:
        socks = []
        for _ in range(limit + 20):  # more than the server has descriptors for
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", cli.port))
            socks.append(s)
        with trio.fail_after(TIMEOUT):  # it has met the limit (and said so) while accepting
            while "cannot accept connections" not in cli.stderr:  # noqa: ASYNC110 - its log
                await trio.sleep(0.05)
        for s in socks:
            s.close()
        async with httpx.AsyncClient(trust_env=False) as http:
            with trio.fail_after(TIMEOUT):
                while True:  # it serves again once descriptors are free
                    try:
                        if (await http.get(cli.url("/api/health"))).status_code == 200:
                            break
                    except httpx.TransportError:
                        await trio.sleep(0.1)
        assert await cli.stop() == 0
    assert cli.stderr.count("cannot accept connections") == 1
    assert "Traceback" not in cli.stderr


def test_the_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "trio-obs"  # as the README calls it: .venv/bin/trio-obs
    assert script.exists(), "the package is installed with its console script"
    done = subprocess.run(
        [str(script), "--version"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"trio-obs {trio_obs.__version__}"
