"""Hubs: where events are ordered, stored and fanned out (SQLite in-process, or Redis).

Every hub implements :class:`~trio_obs.hub.base.Hub`; the services and the server
use that protocol only and cannot tell which hub they have.
"""
