"""Model prices and a run's cost (SPEC §12 "Totals and names")."""

from __future__ import annotations

import pytest

from trio_obs.core.prices import SHIPPED_PRICES, Price, PriceFileError, cost, parse_prices, price_of


def test_a_model_is_priced_by_its_name_or_the_longest_name_it_starts_with() -> None:
    assert price_of("gpt-4o", SHIPPED_PRICES) == Price(2.50, 10.00)
    assert price_of("gpt-4o-2024-08-06", SHIPPED_PRICES) == Price(2.50, 10.00)
    assert price_of("gpt-4o-mini-2024-07-18", SHIPPED_PRICES) == Price(0.15, 0.60)
    assert price_of("claude-sonnet-4-5-20250929", SHIPPED_PRICES) == Price(3.00, 15.00)
    assert price_of("models/gemini-2.5-flash", SHIPPED_PRICES) == Price(0.30, 2.50)
    assert price_of("gpt-4omega", SHIPPED_PRICES) is None  # a name, not any prefix
    assert price_of("", SHIPPED_PRICES) is None


def test_cost_is_a_sum_or_unknown_never_zero_for_an_unpriced_model() -> None:
    models = {"gpt-4o": (1_000_000, 100_000), "gpt-4o-mini": (2_000_000, 0)}
    assert cost(models, SHIPPED_PRICES) == pytest.approx(2.50 + 1.00 + 0.30)
    assert cost({**models, "my-local-llama": (10, 10)}, SHIPPED_PRICES) == "unknown"
    assert cost({"": (10, 10)}, SHIPPED_PRICES) == "unknown"  # the model was not said
    assert cost({}, SHIPPED_PRICES) == 0


def test_a_price_file_overrides_and_extends_the_shipped_table() -> None:
    prices = parse_prices('{"my-local-llama": {"input": 0, "output": 0},'
                          ' "gpt-4o": {"input": 1, "output": 2}}')  # fmt: skip
    assert prices["my-local-llama"] == Price(0, 0) and prices["gpt-4o"] == Price(1, 2)
    assert prices["o3"] == SHIPPED_PRICES["o3"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "is not JSON"),
        ("[]", "must be a JSON object"),
        ('{"m": 3}', "exactly the numbers"),
        ('{"m": {"input": 1}}', "exactly the numbers"),
        ('{"m": {"input": -1, "output": 1}}', "non-negative numbers"),
        ('{"m": {"input": "1", "output": 1}}', "non-negative numbers"),
        ('{"m": {"input": true, "output": 1}}', "non-negative numbers"),
    ],
)
def test_a_bad_price_file_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(PriceFileError, match=says) as caught:
        parse_prices(text, "prices.json")
    assert "\n" not in str(caught.value) and "prices.json" in str(caught.value)
