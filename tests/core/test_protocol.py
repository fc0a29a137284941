"""The protocol's tables: each fact once, and complete."""

from __future__ import annotations

import typing

from trio_obs.core.protocol import ERROR_CODE_OF_STATUS, ErrorCode
from trio_obs.server.http import REASONS


def test_every_error_status_the_server_can_answer_has_its_code() -> None:
    errors = {status for status in REASONS if status >= 400}
    assert set(ERROR_CODE_OF_STATUS) == errors


def test_every_code_is_one_of_the_error_codes() -> None:
    assert set(ERROR_CODE_OF_STATUS.values()) <= set(typing.get_args(ErrorCode))
