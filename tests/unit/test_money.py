from decimal import Decimal

import pytest

from catalog.money import Prices, format_usd, request_cost


def test_it_computes_cost_exactly_from_token_counts_and_prices():
    prices = Prices(Decimal("10"), Decimal("30"))
    # 15 * 10 / 1e6 + 20 * 30 / 1e6 = 0.00015 + 0.0006
    assert request_cost(prices, prompt_tokens=15, completion_tokens=20) == Decimal("0.00075")


def test_it_keeps_sub_micro_dollar_costs():
    prices = Prices(Decimal("0.075"), Decimal("0.3"))
    cost = request_cost(prices, prompt_tokens=1, completion_tokens=1)
    # 0.075e-6 + 0.3e-6 = 0.000000375: micro-dollars would round this to zero
    assert cost == Decimal("0.000000375")
    assert format_usd(cost) == "0.000000375"


def test_it_never_rounds_the_smallest_price_step():
    prices = Prices(Decimal("0.000001"), Decimal("0"))
    assert format_usd(request_cost(prices, prompt_tokens=3, completion_tokens=0)) == "0.000000000003"


def test_it_formats_without_exponent_or_trailing_zeros():
    assert format_usd(Decimal("0")) == "0"
    assert format_usd(Decimal("1.500000")) == "1.5"
    assert format_usd(Decimal("12")) == "12"
    assert format_usd(Decimal("1E-9")) == "0.000000001"


@pytest.mark.parametrize("bad", [Decimal("-1"), Decimal("0.0000001")])
def test_it_rejects_negative_or_too_precise_prices(bad):
    with pytest.raises(ValueError):
        Prices(bad, Decimal("1"))


def test_it_refuses_float_prices():
    with pytest.raises(TypeError):
        Prices(0.1, Decimal("1"))


def test_it_rejects_negative_token_counts():
    with pytest.raises(ValueError):
        request_cost(Prices(Decimal("1"), Decimal("1")), prompt_tokens=-1, completion_tokens=0)
