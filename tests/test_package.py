"""The public surface (``trio_obs/__init__.py``): few names, each documented; the names the
package exported before are still found, with a warning that says where they live now."""

from __future__ import annotations

import importlib
import inspect

import pytest

import trio_obs


@pytest.mark.parametrize("name", trio_obs.__all__)
def test_every_public_name_is_documented_in_the_package(name: str) -> None:
    assert hasattr(trio_obs, name)
    assert name in (trio_obs.__doc__ or "") or name == "__version__"
    value = getattr(trio_obs, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(trio_obs._MOVED))
def test_a_name_exported_before_is_found_with_a_warning(name: str) -> None:
    module = trio_obs._MOVED[name]
    assert name not in trio_obs.__all__
    vars(trio_obs).pop(name, None)  # as on first use
    with pytest.warns(DeprecationWarning, match=f"import it from {module}"):
        value = getattr(trio_obs, name)
    assert value is getattr(importlib.import_module(module), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        trio_obs.Nope  # noqa: B018


def test_broker_is_the_emitting_hub_under_its_former_name() -> None:
    from trio_obs.producers import Broker

    assert Broker is trio_obs.EmittingHub


FORMER_SURFACE = [
    "ALL",
    "GLOBAL",
    "AgentHeartbeatEvent",
    "AssertionResult",
    "AssertionResultEvent",
    "AssertionService",
    "Broker",
    "ClientMessage",
    "ConnectedEvent",
    "Envelope",
    "ErrorEvent",
    "EventStream",
    "ExecutionService",
    "ExecutionStatusEvent",
    "ExecutionSummary",
    "Filters",
    "HttpPublisher",
    "Hub",
    "InvalidInput",
    "LiveSubscription",
    "LocalHub",
    "MessageBusEvent",
    "MessageBusLogEntry",
    "MessageBusService",
    "Observability",
    "Ping",
    "PongEvent",
    "PostRejected",
    "ResetEvent",
    "ServerConfig",
    "ServerEvent",
    "Services",
    "SkillEndEvent",
    "SkillService",
    "SkillStartEvent",
    "Store",
    "StoreError",
    "StreamClosed",
    "StreamEvent",
    "StreamRefused",
    "Subscribe",
    "SubscribedEvent",
    "Subscription",
    "SubscriptionEnded",
    "ToolEndEvent",
    "ToolOutputEvent",
    "ToolStartEvent",
    "ToolUseService",
    "TranscriptEntry",
    "TranscriptEntryEvent",
    "TranscriptService",
    "TrioObsError",
    "Unsubscribe",
    "UnsubscribedEvent",
    "WaveStatusEvent",
    "__version__",
    "decode_events",
    "decode_server_event",
    "decode_stream_event",
    "encode",
    "open_observability",
    "open_redis_observability",
    "open_store",
    "open_stream",
    "post_events",
    "serve",
]
"""``trio_obs.__all__`` of 0.2.0 before the surface was made small (66 names)."""


def test_every_name_of_the_former_surface_is_public_or_found() -> None:
    assert set(FORMER_SURFACE) <= set(trio_obs.__all__) | set(trio_obs._MOVED)
