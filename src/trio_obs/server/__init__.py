"""The server: one port, HTTP routes (h11) and WebSocket streams (wsproto), thin drivers."""
