"""Money, exact (catalog/money.py): request costs from token counts and prices, USD
formatting, and the nano-dollar amounts budgets count in."""
from decimal import Decimal

import pytest

from catalog.money import (
    Prices, display_usd, format_usd, nanos_to_usd, price_per_mtok_from_per_token, request_cost, scale_price, usd_to_nanos,
)


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


# --- nano-dollars and prices per million tokens -------------------------------------------

def test_usd_to_nanos_rounds_up_to_the_next_nano():
    assert usd_to_nanos(Decimal("0.000000000001")) == 1
    assert usd_to_nanos(Decimal("0.000000001000")) == 1
    assert usd_to_nanos(Decimal("0.000000001001")) == 2
    assert usd_to_nanos(Decimal("0")) == 0


def test_usd_to_nanos_is_exact_for_whole_nanos():
    assert usd_to_nanos(Decimal("0.000147")) == 147_000
    assert usd_to_nanos(Decimal("0.000815000000")) == 815_000
    assert usd_to_nanos(Decimal("1")) == 1_000_000_000
    assert usd_to_nanos(Decimal("9000000000")) == 9_000_000_000_000_000_000  # fits a signed int64
    assert isinstance(usd_to_nanos(Decimal("1.5")), int)


@pytest.mark.parametrize("amount", [0.000147, 1, "0.1"])
def test_usd_to_nanos_refuses_anything_but_decimal(amount):
    with pytest.raises(TypeError):
        usd_to_nanos(amount)


def test_nanos_to_usd_is_exact_to_the_nano():
    assert nanos_to_usd(1) == Decimal("0.000000001")
    assert str(nanos_to_usd(815_000)) == "0.000815000"
    assert str(nanos_to_usd(1_500_000_000)) == "1.500000000"
    assert nanos_to_usd(0) == 0
    for nanos in (1, 147_000, 999_999_999, 123_456_789_012):
        assert usd_to_nanos(nanos_to_usd(nanos)) == nanos


def test_scale_price_rounds_half_up_to_six_places():
    assert str(scale_price(Decimal("2.50"), Decimal("0.85"))) == "2.125000"
    assert str(scale_price(Decimal("10.00"), Decimal("0.85"))) == "8.500000"
    assert scale_price(Decimal("0.000001"), Decimal("0.5")) == Decimal("0.000001")  # 0.0000005 up
    assert scale_price(Decimal("0.000005"), Decimal("0.5")) == Decimal("0.000003")  # 0.0000025 up, not to even
    assert scale_price(Decimal("0.000003"), Decimal("0.3333")) == Decimal("0.000001")  # 0.0000009999
    assert scale_price(Decimal("0.000001"), Decimal("0.4999")) == Decimal("0.000000")
    assert scale_price(Decimal("3"), Decimal("0")) == Decimal("0")


def test_price_per_mtok_from_litellm_per_token_floats():
    assert price_per_mtok_from_per_token(1e-05) == Decimal("10")
    assert str(price_per_mtok_from_per_token(1e-05)) == "10"
    assert str(price_per_mtok_from_per_token(1.5e-07)) == "0.15"
    assert str(price_per_mtok_from_per_token(2.5e-06)) == "2.5"
    assert str(price_per_mtok_from_per_token(1e-3)) == "1000"
    assert str(price_per_mtok_from_per_token("3e-06")) == "3"
    assert price_per_mtok_from_per_token(0) == 0
    # Never more than the price precision, so it is a valid Prices value.
    assert str(price_per_mtok_from_per_token(1.2345675e-07)) == "0.123457"
    Prices(price_per_mtok_from_per_token(1.2345675e-07), price_per_mtok_from_per_token(3e-08))


@pytest.mark.parametrize("amount,shown", [
    (Decimal("0"), "$0.00"),
    (Decimal("1234.567"), "$1,234.57"),
    (Decimal("0.005"), "$0.005"),
    (Decimal("0.0000424"), "$0.000042"),
    (Decimal("0.000000001"), "<$0.000001"),
    (Decimal("0.01"), "$0.01"),
    (Decimal("-2.5"), "-$2.50"),
    (None, "—"),
])
def test_amounts_are_shown_to_people_in_cents_or_six_places_under_a_cent(amount, shown):
    assert display_usd(amount) == shown


@pytest.mark.parametrize("amount,shown", [
    (Decimal("0.0018"), "$0.0018"),
    (Decimal("1234.50"), "$1,234.5"),
    (Decimal("5"), "$5"),
    (Decimal("-2.25"), "-$2.25"),
    (Decimal("0.000000000001"), "$0.000000000001"),
    (None, "—"),
])
def test_exact_amounts_keep_every_place_they_have(amount, shown):
    assert display_usd(amount, exact=True) == shown


def test_display_refuses_floats():
    with pytest.raises(TypeError):
        display_usd(0.1)


def test_the_template_filters_format_dollars_and_counts():
    from django.template import Context, Template

    html = Template("{% load money %}{{ a|usd }} {{ n|thousands }} {{ s|thousands }}").render(
        Context({"a": Decimal("12.5"), "n": 1234567, "s": "x"}))
    assert html == "$12.50 1,234,567 x"
