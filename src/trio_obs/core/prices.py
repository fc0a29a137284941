"""What model calls cost (SPEC §12 "Totals and names"): a shipped, dated price table.

Prices are USD per million tokens, input and output, as the providers list them for
standard (not batch, not cached) use. ``trio-obs serve --prices FILE`` overrides or
extends the table with a JSON object ``{"<model>": {"input": <USD per 1M input
tokens>, "output": <USD per 1M output tokens>}}``. A model is looked up by its name,
else the longest known name it starts with followed by ``-`` (``gpt-4o-2024-08-06``
is ``gpt-4o``), after any ``provider/`` prefix. A model with no price makes the cost
the string ``"unknown"``, never 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import attrs


@attrs.frozen
class Price:
    """USD per million input tokens and per million output tokens."""

    input: float
    output: float


Prices: TypeAlias = Mapping[str, Price]
Cost: TypeAlias = float | Literal["unknown"]

PRICES_DATE: Final = "2025-11-01"
"""When the shipped table was checked against the providers' price lists."""

SHIPPED_PRICES: Final[dict[str, Price]] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3": Price(2.00, 8.00),
    "o3-pro": Price(20.00, 80.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    # Anthropic
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-0": Price(15.00, 75.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4-0": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    # Google
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-2.0-flash-lite": Price(0.075, 0.30),
    "gemini-2.5-pro": Price(1.25, 10.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.5-flash-lite": Price(0.10, 0.40),
}
"""The shipped table (checked on :data:`PRICES_DATE`); Gemini 2.5 Pro at its up-to-200k
tokens rate."""


class PriceFileError(ValueError):
    """A ``--prices`` file that cannot be read as a price table (a one-line reason)."""


def price_of(model: str, prices: Prices) -> Price | None:
    """The price of ``model``: by name, else by the longest known ``name-`` it starts with."""
    if not model:
        return None
    for name in (model, model.rsplit("/", 1)[-1]):
        found = prices.get(name)
        if found is not None:
            return found
    bare = model.rsplit("/", 1)[-1]
    best: str | None = None
    for name in prices:
        if bare.startswith(name + "-") and (best is None or len(name) > len(best)):
            best = name
    return prices[best] if best is not None else None


def cost(models: Mapping[str, tuple[int, int]], prices: Prices) -> Cost:
    """USD for the input and output tokens of each model; ``"unknown"`` if one has no price."""
    total = 0.0
    for model, (tokens_in, tokens_out) in models.items():
        price = price_of(model, prices)
        if price is None:
            return "unknown"
        total += tokens_in * price.input / 1e6 + tokens_out * price.output / 1e6
    return round(total, 6)


def _price(model: str, value: Any) -> Price:
    if not isinstance(value, dict) or set(value) != {"input", "output"}:
        raise PriceFileError(
            f"the price of {model!r} must be an object with exactly the numbers "
            '"input" and "output" (USD per 1M tokens)'
        )
    numbers = (value["input"], value["output"])
    for number in numbers:
        ok = isinstance(number, int | float) and not isinstance(number, bool)
        if not ok or not math.isfinite(number) or number < 0:
            raise PriceFileError(
                f"the prices of {model!r} must be non-negative numbers, got {number!r}"
            )
    return Price(float(numbers[0]), float(numbers[1]))


def parse_prices(text: str, where: str = "the price file") -> dict[str, Price]:
    """A price table from JSON text: the shipped table, overridden and extended by it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceFileError(f"{where} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceFileError(f'{where} must be a JSON object {{"<model>": {{...}}}}')
    try:
        given = {str(model): _price(model, value) for model, value in data.items()}
    except PriceFileError as exc:
        raise PriceFileError(f"{where}: {exc}") from None
    return {**SHIPPED_PRICES, **given}
