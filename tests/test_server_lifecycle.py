"""``trio-obs serve`` as a user runs it: a subprocess that starts, serves, and stops cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from support import (
    START_TIMEOUT,
    TIMEOUT,
    assert_clean,
    close_code,
    command,
    environment,
    heartbeats,
    serve_cli,
    ws_client,
)
from trio_obs.cli import build_parser

SERVE_FLAGS = [
    "--host", "--port", "--db", "--buffer-size", "--queue-size", "--token",
    "--allowed-origin", "--max-connections", "--ping-interval", "--demo",
]  # fmt: skip


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_closes_clients_with_1001_and_exits_0(signum: int) -> None:
    async with serve_cli("--db", ":memory:") as cli:
        assert "WebSocket" in cli.stderr
        async with (
            ws_client(cli.ws_url("e1")) as one,
            ws_client(cli.ws_url("all")) as everyone,
            httpx.AsyncClient(base_url=cli.url(), trust_env=False) as http,
        ):
            response = await http.post("/api/events", json=heartbeats("e1", 2))
            assert response.status_code == 202
            for ws in (one, everyone):
                for _ in range(2):
                    with trio.fail_after(TIMEOUT):
                        await ws.get_message()
            assert (await http.get("/api/health")).json()["connections"] == 2
            cli.process.send_signal(signum)
            assert await close_code(one) == 1001
            assert await close_code(everyone) == 1001
            with trio.fail_after(TIMEOUT):
                status = await cli.process.wait()
                await cli.eof.wait()
        assert status == 0
        assert_clean(cli.stderr)
        name = signal.Signals(signum).name
        lines = cli.stderr.splitlines()
        assert any(name in line and "stopping" in line for line in lines), cli.stderr
        assert "stopped" in lines[-1]


async def test_idle_server_stops_at_once() -> None:
    async with serve_cli("--db", ":memory:") as cli:
        assert await cli.stop(signal.SIGINT) == 0
        assert_clean(cli.stderr)


# The process is paused right after it wrote its listening line, as the OS may do to any
# process, until a supervisor that saw the line has asked it to stop. The stop signals are
# held (blocked in every thread, from before the first starts) until the pause has seen one
# arrive; then it is raised again, unblocked, for the server's own handlers to take.
PAUSE_AFTER_LISTENING = """
import logging, signal, sys
STOPS = {signal.SIGINT, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
emit = logging.StreamHandler.emit
def emit_then_pause(self, record):
    emit(self, record)
    if "listening" in record.getMessage():
        arrived = signal.sigtimedwait(STOPS, 60)  # a hang guard: the test sends it at once
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        if arrived:
            signal.raise_signal(arrived.si_signo)
logging.StreamHandler.emit = emit_then_pause
from trio_obs.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_a_signal_right_after_the_listening_line_stops_cleanly() -> None:
    program = [sys.executable, "-c", PAUSE_AFTER_LISTENING]
    async with serve_cli("--db", ":memory:", program=program, until_serving=False) as cli:
        assert await cli.stop(signal.SIGTERM) == 0
        assert_clean(cli.stderr)


async def test_token_from_the_environment_guards_the_server() -> None:
    env = environment(TRIO_OBS_TOKEN="hunter2")
    async with serve_cli("--db", ":memory:", env=env) as cli:
        assert "token required" in cli.stderr
        async with httpx.AsyncClient(base_url=cli.url(), trust_env=False) as http:
            body = heartbeats("e1", 1)
            assert (await http.post("/api/events", json=body)).status_code == 401
            auth = {"Authorization": "Bearer hunter2"}
            assert (await http.post("/api/events", json=body, headers=auth)).status_code == 202
        async with ws_client(cli.ws_url("e1", token="hunter2")) as ws:
            with trio.fail_after(TIMEOUT):
                assert orjson.loads(await ws.get_message())["seq"] == 1
        assert await cli.stop() == 0
        assert "hunter2" not in cli.stderr  # never logged


async def test_restart_on_the_same_db_keeps_seqs(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    async with (
        serve_cli("--db", db) as cli,
        httpx.AsyncClient(base_url=cli.url(), trust_env=False) as http,
    ):
        response = await http.post("/api/events", json=heartbeats("e1", 3))
        assert response.json()["seqs"] == [1, 2, 3]
        assert await cli.stop(signal.SIGTERM) == 0
        assert_clean(cli.stderr)
        assert db in cli.stderr  # says where it keeps events

    async with (
        serve_cli("--db", db) as cli,
        httpx.AsyncClient(base_url=cli.url(), trust_env=False) as http,
    ):
        response = await http.post("/api/events", json=heartbeats("e1", 1))
        assert response.json()["seqs"] == [4]
        events = (await http.get("/api/executions/e1/events")).json()
        assert [e["seq"] for e in events] == [1, 2, 3, 4]
        executions = (await http.get("/api/executions")).json()
        assert [(e["executionId"], e["lastSeq"]) for e in executions] == [("e1", 4)]
        # Replay after a restart comes from the file.
        async with ws_client(cli.ws_url("e1", since=1)) as ws:
            with trio.fail_after(TIMEOUT):
                seqs = [orjson.loads(await ws.get_message())["seq"] for _ in range(3)]
            assert seqs == [2, 3, 4]
        assert await cli.stop(signal.SIGINT) == 0
        assert_clean(cli.stderr)


async def serve_on_a_taken_port() -> tuple[int, int, str]:
    """Run ``serve`` on a port another socket listens on: (port, exit status, stderr)."""
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(START_TIMEOUT):
            result = await trio.run_process(
                command("serve", "--port", str(port), "--db", ":memory:"),
                capture_stderr=True,
                check=False,
                env=environment(),
            )
    return port, result.returncode, result.stderr.decode()


async def test_port_in_use_exits_1_without_a_traceback() -> None:
    _, status, stderr = await serve_on_a_taken_port()
    assert status == 1
    assert "Traceback" not in stderr
    assert "cannot start" in stderr


async def test_port_in_use_message_names_the_port_and_the_fix() -> None:
    port, _, stderr = await serve_on_a_taken_port()
    assert f"port {port}" in stderr
    assert "in use" in stderr
    assert "--port" in stderr  # says what to do


@pytest.mark.parametrize("host", ["nosuchhost.invalid", "192.0.2.1"])
async def test_a_host_it_cannot_listen_on_is_named_with_its_flag_in_one_line(host: str) -> None:
    with trio.fail_after(START_TIMEOUT):
        result = await trio.run_process(
            command("serve", "--port", "0", "--db", ":memory:", "--host", host),
            capture_stderr=True,
            check=False,
            env=environment(),
        )
    [line] = result.stderr.decode().splitlines()
    assert result.returncode == 1
    assert "cannot start" in line
    assert f"--host {host!r}" in line


async def test_unusable_db_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    with trio.fail_after(START_TIMEOUT):
        result = await trio.run_process(
            command("serve", "--port", "0", "--db", str(tmp_path / "no" / "such" / "dir.db")),
            capture_stderr=True,
            check=False,
            env=environment(),
        )
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "Traceback" not in stderr
    assert "cannot start" in stderr
    assert str(tmp_path / "no" / "such" / "dir.db") in stderr


def serve_help(env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command("serve", "--help"),
        capture_output=True,
        text=True,
        check=True,
        env=env or environment(),
        timeout=START_TIMEOUT,
    )
    return result.stdout


def serve_options() -> Sequence[str]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.choices and "serve" in a.choices]
    assert isinstance(commands.choices, dict)
    serve = commands.choices["serve"]
    return [s for a in serve._actions for s in a.option_strings if s.startswith("--")]


def test_help_lists_every_flag() -> None:
    text = serve_help()
    assert set(SERVE_FLAGS) <= set(serve_options())
    for flag in ["--help", *SERVE_FLAGS, *serve_options()]:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", text), flag
    top = subprocess.run(
        command("--help"), capture_output=True, text=True, check=True, timeout=START_TIMEOUT
    ).stdout
    for name in ("serve", "demo", "tail"):
        assert name in top


def test_help_does_not_show_the_token_from_the_environment() -> None:
    assert "hunter2" not in serve_help(environment(TRIO_OBS_TOKEN="hunter2"))


@pytest.mark.parametrize("subcommand", ["serve", "demo", "tail"])
def test_help_says_each_default_once_and_only_a_real_one(subcommand: str) -> None:
    text = subprocess.run(
        command(subcommand, "--help"),
        capture_output=True,
        text=True,
        check=True,
        timeout=START_TIMEOUT,
    ).stdout
    flat = " ".join(text.split())  # help lines wrap anywhere
    for useless in ("(default: None)", "(default: [])", "(default: False)"):
        assert useless not in flat
    for option in re.split(r"\s(?=-{1,2}[a-z])", flat):
        assert option.count("default") <= 1, option
    if subcommand == "serve":
        assert "--buffer-bytes SIZE" in flat and "(default: 64MiB)" in flat


async def test_a_bad_price_file_exits_1_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "prices.json").write_text('{"gpt-4o": {"input": "cheap"}}')
    for path in (tmp_path / "prices.json", tmp_path / "missing.json"):
        with trio.fail_after(START_TIMEOUT):
            result = await trio.run_process(
                command("serve", "--port", "0", "--db", ":memory:", "--prices", str(path)),
                capture_stderr=True,
                check=False,
                env=environment(),
            )
        [line] = result.stderr.decode().splitlines()
        assert result.returncode == 1
        assert "cannot start" in line and str(path) in line
