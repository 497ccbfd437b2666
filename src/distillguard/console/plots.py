"""Server-side SVG of the account page: where one account's signal value stands in the scan's
population. Class names only (no inline styles), so the console's CSP holds."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def population_strip(bins: Sequence[int], lo: float | None, hi: float | None, value: float | None,
                     threshold: float | None, width: int = 320, height: int = 64) -> Markup:
    """A histogram of the population's values (min to max), the threshold as a dashed line and
    the account's value as a marker."""
    if lo is None or hi is None or not bins:
        return Markup("")
    left, right, top, bottom = 4, 4, 6, 16
    plot_w, plot_h = width - left - right, height - top - bottom
    span = (hi - lo) or 1.0
    tallest = max(max(bins), 1)
    step = plot_w / len(bins)

    def x_of(v: float) -> float:
        return left + plot_w * min(max((v - lo) / span, 0.0), 1.0)

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="strip" '
              f'aria-label="population histogram">')]
    for i, n in enumerate(bins):
        h = plot_h * n / tallest
        parts.append(f'<rect x="{_n(left + i * step + 0.5)}" y="{_n(top + plot_h - h)}" width="{_n(step - 1)}" '
                     f'height="{_n(h)}" class="pop"><title>{n} accounts</title></rect>')
    if threshold is not None and lo <= threshold <= hi:
        x = x_of(threshold)
        parts.append(f'<line x1="{_n(x)}" y1="{top}" x2="{_n(x)}" y2="{top + plot_h}" class="threshold">'
                     f'<title>threshold {escape(f"{threshold:g}")}</title></line>')
    if value is not None:
        x = x_of(value)
        parts.append(f'<path d="M{_n(x)} {top + plot_h + 1} l-5 9 h10 z" class="marker">'
                     f'<title>this account: {escape(f"{value:.4g}")}</title></path>')
    parts.append(f'<text x="{left}" y="{height - 1}" class="axis">{escape(f"{lo:.3g}")}</text>'
                 f'<text x="{width - right}" y="{height - 1}" text-anchor="end" class="axis">'
                 f'{escape(f"{hi:.3g}")}</text></svg>')
    return Markup("".join(parts))
