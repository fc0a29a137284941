"""The Redis hub's codec (hub/redis_codec.py): what a batch becomes before its script runs."""

from __future__ import annotations

import pytest

from trio_obs.core import events as ev
from trio_obs.core.errors import InvalidInput
from trio_obs.core.protocol import MAX_ID_BYTES
from trio_obs.hub.redis_codec import plan


def output(tool_use_id: str) -> ev.ToolOutputEvent:
    return ev.ToolOutputEvent(execution_id="e1", tool_use_id=tool_use_id, chunk="x")


def test_an_id_over_the_limit_is_refused_before_the_script() -> None:
    with pytest.raises(InvalidInput) as refused:
        plan([output("ok"), output("t" * (MAX_ID_BYTES + 1))])
    assert refused.value.code == "INVALID_EVENT"
    assert "event 1 (tool:output) has a toolUseId of 1,025 bytes" in str(refused.value)
    planned = plan([output("t" * MAX_ID_BYTES)])
    assert len(planned) == 1
