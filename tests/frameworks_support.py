"""Helpers of the tests with real agent frameworks: a small OpenAI-compatible server on
loopback (no network), which answers a chat completion as a model would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

USAGE = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}


def completion(request: dict[str, Any]) -> dict[str, Any]:
    """The model's answer: a call of the first tool offered (once), else a sentence."""
    messages = request.get("messages") or []
    tools = request.get("tools") or []
    answered = any(m.get("role") == "tool" for m in messages)
    if tools and not answered:
        name = tools[0]["function"]["name"]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": '{"city": "Paris"}'},
                }
            ],
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": "It is sunny in Paris."}
        finish = "stop"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": f"{request.get('model', 'model')}-2025",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": USAGE,
    }


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        request = orjson.loads(self.rfile.read(length) or b"{}")
        body = orjson.dumps(completion(request))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def openai_server() -> Iterator[str]:
    """An OpenAI-compatible chat completions server on a free loopback port: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
