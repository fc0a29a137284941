"""The flusher's round (server/flush.py): frames made once per list taken, and the
deliveries counted per connection that took it."""

from __future__ import annotations

import trio_obs
from trio_obs.core import events as ev
from trio_obs.core.routing import Envelope
from trio_obs.server.flush import Round
from trio_obs.server.metrics import ServerMetrics


def envelopes(n: int) -> list[Envelope]:
    return [
        Envelope.of("e1", ev.ToolOutputEvent(execution_id="e1", tool_use_id="t", chunk="x", seq=i))
        for i in range(1, n + 1)
    ]


def test_connections_at_the_same_point_share_one_list_of_frames() -> None:
    shared, own = envelopes(3), envelopes(1)
    visit = Round()
    first = visit.frames_of(shared)
    assert visit.frames_of(shared) is first  # made once for every connection
    assert first == [env.frame for env in shared]
    visit.frames_of(own)
    assert {id(w.envs): w.connections for w in visit.written.values()} == {
        id(shared): 2,
        id(own): 1,
    }


async def test_a_round_counts_each_event_once_per_connection_that_took_it(
    obs: trio_obs.Observability,
) -> None:
    metrics = ServerMetrics(obs.hub, lambda: 0)
    visit = Round()
    shared = envelopes(2)
    for _ in range(3):
        visit.frames_of(shared)
    visit.account(metrics)
    assert metrics.events_out["tool:output"] == 6
