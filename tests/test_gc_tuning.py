"""The server's cyclic-GC settings (``ServerConfig.tune_gc``) hold while it serves, nest, and
give the process its own back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from trio_obs.server.app import GC_THRESHOLDS, tuned_gc


@pytest.fixture
def own_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def test_the_thresholds_hold_while_serving_and_come_back_after_the_last_server(
    own_thresholds: tuple[int, int, int],
) -> None:
    with tuned_gc(True):
        assert gc.get_threshold() == GC_THRESHOLDS
        with tuned_gc(True):  # a second server in the process
            assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_threshold() == GC_THRESHOLDS  # the first still serves
        assert gc.get_freeze_count() > 0  # the start's heap is out of the collections
    assert gc.get_threshold() == own_thresholds
    assert gc.get_freeze_count() == 0


def test_a_server_told_not_to_tune_leaves_the_gc_alone(
    own_thresholds: tuple[int, int, int],
) -> None:
    with tuned_gc(False):
        assert gc.get_threshold() == own_thresholds
    assert gc.get_threshold() == own_thresholds
