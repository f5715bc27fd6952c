"""Server-rendered SVG charts of the usage page (no script: the page's CSP allows none
inline, and a bar chart needs none). Geometry uses SVG presentation attributes (x, y,
width, height) and CSS classes (static/openclaw/dashboard.css), never style attributes."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 1000, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 28
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (some are skipped when there are many)
    title: str  # the tooltip: the bucket and its value
    value: Decimal | int


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten at least `value` (the axis top)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for _ in range(2):
        for step in (1, 2, 5):
            candidate = Decimal(step).scaleb(exponent)
            if candidate >= value:
                return candidate
        exponent += 1
    return Decimal(10).scaleb(exponent)


def _num(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.1")), "f")


def bar_chart(bars: Sequence[Bar], *, title: str, axis_label: Callable[[Decimal], str], css_class: str) -> SafeString:
    """A bar chart of `bars` as inline SVG markup, with a y axis of three gridlines."""
    plot_w, plot_h = Decimal(WIDTH - LEFT - RIGHT), Decimal(HEIGHT - TOP - BOTTOM)
    top = nice_ceiling(max((Decimal(bar.value) for bar in bars), default=Decimal(0)))
    parts = [format_html('<svg class="chart {}" viewBox="0 0 {} {}" role="img" aria-label="{}" '
                         'xmlns="http://www.w3.org/2000/svg">', css_class, WIDTH, HEIGHT, title),
             format_html("<title>{}</title>", title)]
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):
        y = Decimal(TOP) + plot_h * (1 - fraction)
        parts.append(format_html('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>', LEFT, WIDTH - RIGHT,
                                 _num(y), _num(y)))
        parts.append(format_html('<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>', LEFT - 6,
                                 _num(y + 4), axis_label(top * fraction)))
    if bars:
        slot = plot_w / len(bars)
        gap = min(slot * Decimal("0.2"), Decimal(4)) if slot > 3 else Decimal(0)
        every = max(1, -(-len(bars) // MAX_X_LABELS))
        for index, bar in enumerate(bars):
            x = Decimal(LEFT) + slot * index
            height = plot_h * Decimal(bar.value) / top
            parts.append(format_html(
                '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
                _num(x + gap / 2), _num(Decimal(TOP) + plot_h - height), _num(slot - gap), _num(height), bar.title))
            if index % every == 0:
                parts.append(format_html('<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                                         _num(x + slot / 2), HEIGHT - 8, bar.label))
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(str(part) for part in parts))


def usd_axis(amount: Decimal) -> str:
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount.normalize():,f}" if amount == amount.to_integral_value() else f"${amount:,.2f}"
    return "$" + format(amount.normalize(), "f")


def count_axis(count: Decimal) -> str:
    return f"{count.normalize():,f}"
