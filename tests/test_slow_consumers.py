"""Slow and stalled readers (SPEC §4), checked on the raw byte stream a client receives.

A frame is never cut, whatever closes the connection; falling behind is not a fault
(an execution stream is served from the store until it is live again); stalling is
(closed with 4008 after ``--stall-timeout``, cleanly once the client reads again).
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest
import trio

from support import TIMEOUT, Address, parse_metrics, running_server, split_frames
from trio_obs.core.frames import frame_length
from trio_obs.core.protocol import GOING_AWAY, SLOW_CONSUMER, SLOW_CONSUMER_CODE

pytestmark = pytest.mark.usefixtures("no_server_errors")

_HANDSHAKE = (
    "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


class RawStream:
    """A WebSocket client that keeps every byte the server sends, for inspection."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.data = bytearray()

    @classmethod
    async def open(cls, srv: Address, target: str, *, rcvbuf: int = 4096) -> RawStream:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        with trio.fail_after(TIMEOUT):
            await sock.connect(("127.0.0.1", srv.port))
            await sock.send(_HANDSHAKE.format(target=target, port=srv.port).encode())
        raw = cls(sock)
        with trio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in raw.data:
                await raw.read_some()
        head, _, rest = bytes(raw.data).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        raw.data = bytearray(rest)
        return raw

    async def read_some(self, n: int = 65536) -> bytes:
        chunk = await self.sock.recv(n)
        self.data += chunk
        return chunk

    async def read_to_end(self) -> None:
        """Read until the server closes the TCP connection."""
        with trio.fail_after(TIMEOUT):
            while await self.read_some():
                pass

    def frames(self) -> tuple[list[tuple[int, bytes]], bytes]:
        return split_frames(bytes(self.data))

    def close(self) -> None:
        self.sock.close()


def assert_cut_by_the_end_only(rest: bytes) -> None:
    """What follows the whole frames is nothing, or the start of ONE text frame and then the
    end of the connection: nothing was appended to it (a close frame inside it, say)."""
    if not rest:
        return
    length = frame_length(rest[:10])
    assert rest[0] == 0x81, "the cut frame is a text frame"
    assert length is None or length > len(rest), "a whole frame would have been split off"
    header = 2 if rest[1] & 0x7F < 126 else 4 if rest[1] & 0x7F == 126 else 10
    payload = rest[header:]
    assert payload.startswith(b'{"type":"tool:output"'[: len(payload)])
    assert b"\x88" not in payload, "no close frame inside an unfinished frame"


def events_of(frames: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """The stream events among the text frames (every one must be whole JSON)."""
    out = []
    for opcode, payload in frames:
        if opcode == 0x1:
            obj = orjson.loads(payload)  # a cut frame would not parse
            if "seq" in obj:
                out.append(obj)
    return out


def close_of(frames: list[tuple[int, bytes]]) -> tuple[int, str] | None:
    """The close frame's code and reason, if the server sent one (it must be the last)."""
    closes = [(i, p) for i, (op, p) in enumerate(frames) if op == 0x8]
    if not closes:
        return None
    index, payload = closes[0]
    assert index == len(frames) - 1, "nothing follows a close frame"
    return int.from_bytes(payload[:2], "big"), payload[2:].decode()


async def until_closed(srv: Any, *streams: str) -> None:
    """Wait until the server has closed every connection to ``streams``."""
    with trio.fail_after(TIMEOUT):
        while any(srv.obs.broker.get_listener_count(s) for s in streams):  # noqa: ASYNC110 - polling another side
            await trio.sleep(0.05)


async def _fill(srv: Any, execution: str, count: int, size: int) -> None:
    """Store ``count`` tool outputs of ``size`` characters (a start at seq 1 first)."""
    tool = await srv.obs.tools.start(execution, "Bash", "yes")
    for i in range(count):
        await srv.obs.tools.output(execution, tool.tool_use_id, f"{i}:" + "x" * size)


async def test_a_stalled_reader_is_closed_with_4008_after_whole_frames_only() -> None:
    # Once closing, the server waits the longer of the stall timeout and the close grace (5 s)
    # for the reader to take the rest of its frame, then drops the connection.
    async with running_server(stall_timeout=3.0, close_grace=5.0) as srv:
        raw = await RawStream.open(srv, "/ws?observability=stall&since=0")
        try:
            # The client reads nothing while far more than the socket buffers hold is sent.
            await _fill(srv, "stall", 400, 16_000)
            await until_closed(srv, "stall")
            # Reading again, it gets whole frames, then the close frame, then the end.
            await raw.read_to_end()
        finally:
            raw.close()
        frames, rest = raw.frames()
        assert rest == b"", f"{len(rest)} bytes of a cut frame"
        assert close_of(frames) == (SLOW_CONSUMER_CODE, SLOW_CONSUMER)
        seqs = [e["seq"] for e in events_of(frames)]
        assert seqs == list(range(1, len(seqs) + 1))  # a gap-free prefix
        assert len(seqs) < 401  # it really was cut short
        _, samples = parse_metrics((await srv.http.get("/metrics")).text)
        assert samples["trio_obs_slow_consumer_closes_total"] == 1.0


async def test_a_reader_that_never_reads_again_is_dropped_with_nothing_appended() -> None:
    async with running_server(stall_timeout=0.3, close_grace=0.3) as srv:
        raw = await RawStream.open(srv, "/ws?observability=gone&since=0")
        try:
            await _fill(srv, "gone", 400, 16_000)
            await until_closed(srv, "gone")
            await trio.sleep(0.6)  # past the grace: the server has given up on it
            await raw.read_to_end()
        finally:
            raw.close()
        frames, rest = raw.frames()
        assert_cut_by_the_end_only(rest)
        events_of(frames)  # every text frame is whole JSON
        # Either the client took the frame's rest and the close frame in time, or the
        # connection was dropped: never a close frame after part of a frame.
        assert (
            close_of(frames) is None
            if rest
            else close_of(frames)
            in (
                None,
                (SLOW_CONSUMER_CODE, SLOW_CONSUMER),
            )
        )


async def test_server_shutdown_finishes_the_frame_in_flight_then_closes() -> None:
    stop = trio.Event()

    async def server(*, task_status: trio.TaskStatus[Any]) -> None:
        async with running_server(stall_timeout=30, close_grace=5.0) as srv:
            task_status.started(srv)
            await stop.wait()

    async with trio.open_nursery() as nursery:
        srv = await nursery.start(server)
        raw = await RawStream.open(srv, "/ws?observability=stop&since=0")
        await _fill(srv, "stop", 200, 16_000)  # the socket is full, a frame half sent
        stop.set()  # the server stops while the client reads nothing...
        await trio.sleep(0.2)
        try:
            await raw.read_to_end()  # ...then it reads again, within the grace
        finally:
            raw.close()
    frames, rest = raw.frames()
    assert rest == b"", f"{len(rest)} bytes of a cut frame"
    events_of(frames)
    assert close_of(frames) == (GOING_AWAY, "server shutting down")


async def test_falling_behind_is_served_from_the_store_without_a_gap_or_a_close() -> None:
    # Memory holds 16 events per execution (and at most 64 KiB): a reader far behind is
    # served from the store, page by page, while new events keep arriving, then live.
    async with running_server(
        queue_size=16, buffer_size=8, buffer_bytes=64 * 1024, stall_timeout=5
    ) as srv:
        await _fill(srv, "behind", 3000, 200)
        raw = await RawStream.open(srv, "/ws?observability=behind&since=0", rcvbuf=8192)
        done = trio.Event()

        async def keep_posting() -> None:
            tool = await srv.obs.tools.start("behind", "Bash", "more")
            for i in range(200):
                await srv.obs.tools.output("behind", tool.tool_use_id, f"live {i}")
                await trio.sleep(0.002)
            done.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_posting)
                with trio.fail_after(TIMEOUT * 3):
                    while True:  # a slow reader: small reads, with pauses
                        await raw.read_some(4096)
                        await trio.sleep(0.001)
                        last = srv.obs.broker.last_seq("behind")
                        seqs = [e["seq"] for e in events_of(raw.frames()[0])]
                        if done.is_set() and seqs and seqs[-1] == last:
                            break
        finally:
            raw.close()
        frames, _ = raw.frames()
        assert close_of(frames) is None  # never closed for being slow
        seqs = [e["seq"] for e in events_of(frames)]
        assert seqs == list(range(1, srv.obs.broker.last_seq("behind") + 1))
        _, samples = parse_metrics((await srv.http.get("/metrics")).text)
        assert samples["trio_obs_store_catchups_total"] >= 1
        assert samples["trio_obs_slow_consumer_closes_total"] == 0


async def test_a_slow_reader_is_never_closed_while_it_reads() -> None:
    # Any byte taken is progress, also while the socket is not "writable" (which needs a
    # good part of the server's send buffer free: megabytes on loopback). The server sees
    # a reader take bytes when its kernel reopens its window: each half of its buffer.
    # A stall timeout that a loaded machine's pauses of this process do not reach.
    async with running_server(stall_timeout=5.0, close_grace=5.0) as srv:
        raw = await RawStream.open(srv, "/ws?observability=slow&since=0", rcvbuf=4096)
        try:
            await _fill(srv, "slow", 200, 4000)  # far more than the buffers hold
            reading_since = trio.current_time()
            while trio.current_time() - reading_since < 11.0:  # over two stall timeouts
                with trio.fail_after(TIMEOUT):
                    await raw.read_some(400)  # 4 KB/s
                await trio.sleep(0.1)
                assert srv.obs.broker.get_listener_count("slow") == 1, "closed while reading"
            frames, _ = raw.frames()
            assert close_of(frames) is None
            seqs = [e["seq"] for e in events_of(frames)]
            assert seqs == list(range(1, len(seqs) + 1))
            # Then it takes nothing more: closed once the stall timeout has passed.
            await until_closed(srv, "slow")
            await raw.read_to_end()
        finally:
            raw.close()
        frames, rest = raw.frames()
        assert rest == b"" and close_of(frames) == (SLOW_CONSUMER_CODE, SLOW_CONSUMER)
        _, samples = parse_metrics((await srv.http.get("/metrics")).text)
        assert samples["trio_obs_slow_consumer_closes_total"] == 1.0


async def test_stalled_readers_that_read_again_get_whole_frames_then_the_close() -> None:
    # Eight readers with 4 KB buffers stall, and the server closes them: each has part of
    # a frame when it does. The close frame waits for the rest of that frame, and the
    # readers that come back read whole frames, then the close, never a cut frame.
    # (they read again within a stall timeout of their close: 3 s, for a loaded machine)
    async with running_server(stall_timeout=3.0, close_grace=0.01) as srv:
        raws = [
            await RawStream.open(srv, f"/ws?observability=s{i}&since=0", rcvbuf=4096)
            for i in range(8)
        ]
        try:
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(_fill, srv, f"s{i}", 30, 16_000)
            await until_closed(srv, *(f"s{i}" for i in range(8)))
            async with trio.open_nursery() as nursery:
                for raw in raws:
                    nursery.start_soon(raw.read_to_end)
        finally:
            for raw in raws:
                raw.close()
        for raw in raws:
            frames, rest = raw.frames()
            assert rest == b"", f"{len(rest)} bytes of a cut frame"
            assert close_of(frames) == (SLOW_CONSUMER_CODE, SLOW_CONSUMER)
            seqs = [e["seq"] for e in events_of(frames)]
            assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < 31
