"""WebSocket text frames built once per event and shared by every connection (RFC 6455 §5.2)."""

from __future__ import annotations

from typing import Final

_TEXT_FIN: Final = 0x81  # FIN + text opcode


def text_frame(payload: bytes) -> bytes:
    """One unmasked server-to-client text frame around ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((_TEXT_FIN, n))
    elif n < 1 << 16:
        header = bytes((_TEXT_FIN, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((_TEXT_FIN, 127)) + n.to_bytes(8, "big")
    return header + payload


def frame_length(header: bytes | memoryview) -> int | None:
    """The whole length of the server frame that starts with ``header``, or None if too short.

    Used to walk a byte stream frame by frame (the server never masks its frames).
    """
    if len(header) < 2:
        return None
    n = header[1] & 0x7F
    if n < 126:
        return 2 + n
    if n == 126:
        return None if len(header) < 4 else 4 + int.from_bytes(header[2:4], "big")
    return None if len(header) < 10 else 10 + int.from_bytes(header[2:10], "big")
