"""The usage page's SVG charts (billing/charts.py): markup the CSP accepts (no style
attributes, no script), bars scaled to a round axis top, labels escaped."""
from decimal import Decimal

import pytest

from billing.charts import Bar, bar_chart, count_axis, nice_ceiling, usd_axis


@pytest.mark.parametrize("value, top", [(Decimal("0.93"), Decimal("1")), (Decimal("1.2"), Decimal("2")),
                                        (Decimal("37"), Decimal("50")), (Decimal("500"), Decimal("500")),
                                        (Decimal("0"), Decimal("1")), (Decimal("0.0004"), Decimal("0.0005"))])
def test_the_axis_top_is_the_next_one_two_or_five(value, top):
    assert nice_ceiling(value) == top


def test_bars_are_scaled_to_the_axis_and_carry_their_values_as_tooltips():
    svg = bar_chart([Bar("1 May", "1 May: $0.50", Decimal("0.5")), Bar("2 May", "2 May: $1.00", Decimal("1"))],
                    title="Spend per day", axis_label=usd_axis, css_class="spend")
    assert svg.startswith('<svg class="chart spend"') and svg.endswith("</svg>")
    assert "style=" not in svg and "<script" not in svg
    heights = [float(part.split('"')[0]) for part in svg.split('height="')[1:]]
    assert heights[1] == pytest.approx(2 * heights[0])
    assert "<title>2 May: $1.00</title>" in svg and ">$0.5<" in svg and ">$1<" in svg


def test_labels_are_escaped_and_an_empty_chart_has_only_its_axis():
    svg = bar_chart([Bar("<b>", "<script>", 3)], title="x", axis_label=count_axis, css_class="requests")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    empty = bar_chart([], title="Requests per hour", axis_label=count_axis, css_class="requests")
    assert "<rect" not in empty and ">0<" in empty
