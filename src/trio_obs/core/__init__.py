"""The socket-free, clock-free core: every rule of trio-obs, driven by the I/O layers.

Nothing here imports trio, sqlite3, h11, wsproto or a socket, and nothing reads a
clock: callers pass ``now`` in. Each module holds one kind of rule (the README's
"Development" section lists them).
"""
