"""Charts of a report as inline SVG: no script, no network, the same bytes for the same facts.

Every text that reaches the markup goes through :func:`markupsafe.escape` (account ids and
labels come from the logs, which the attacker writes); everything else is a number this module
formats itself. A report is read offline by people who distrust it, so the pictures are plain
shapes with ``<title>`` tooltips, not a charting library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup, escape

from distillguard.detect.linkage import EVIDENCE

ACTION_COLOURS = {"block": "#b2182b", "fallback": "#ef6548", "throttle": "#fdae61", "monitor": "#4393c3",
                  "allow": "#999999"}
FAMILY_COLOURS = {"account": "#7b3294", "network": "#1b9e77", "client": "#d95f02", "timing": "#386cb0"}
#: accounts drawn in the graph picture (the most strongly linked); the caption says how many of how many
GRAPH_NODES = 300


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def timeline(days: Sequence[str], exchanges: Sequence[int], created: Sequence[int],
             width: int = 900, height: int = 260) -> Markup:
    """Bars of exchanges per day, and marks of account creations per day on their own scale."""
    if not days:
        return Markup('<p class="empty">No exchanges in the window.</p>')
    days, exchanges, created = _every_day(days, exchanges, created)
    left, right, top, bottom = 60, 50, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(days)
    step = plot_w / n
    max_ex = max(max(exchanges), 1)
    max_cr = max(max(created), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="exchanges and account creations per day" class="chart">']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{_n(y)}" x2="{left + plot_w}" y2="{_n(y)}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{_n(y + 4)}" text-anchor="end" class="axis">{int(max_ex * frac):,}</text>')
        parts.append(f'<text x="{left + plot_w + 6}" y="{_n(y + 4)}" class="axis created">{int(round(max_cr * frac)):,}</text>')
    for i, (day, ex, cr) in enumerate(zip(days, exchanges, created)):
        x = left + i * step
        h = plot_h * ex / max_ex
        label = escape(day)
        parts.append(f'<rect x="{_n(x + step * 0.1)}" y="{_n(top + plot_h - h)}" width="{_n(max(step * 0.8, 0.5))}" '
                     f'height="{_n(h)}" class="bar"><title>{label}: {ex:,} exchanges</title></rect>')
        if cr:
            cy = top + plot_h * (1 - cr / max_cr)
            parts.append(f'<circle cx="{_n(x + step / 2)}" cy="{_n(cy)}" r="3.5" class="dot">'
                         f'<title>{label}: {cr:,} accounts created</title></circle>')
    for i in sorted({0, n // 2, n - 1}):
        parts.append(f'<text x="{_n(left + (i + 0.5) * step)}" y="{height - 22}" text-anchor="middle" '
                     f'class="axis">{escape(days[i])}</text>')
    parts.append(f'<text x="{left}" y="{height - 4}" class="legend">bars: exchanges per day (left scale) · '
                 f'dots: accounts created per day (right scale)</text></svg>')
    return Markup("".join(parts))


def _every_day(days: Sequence[str], exchanges: Sequence[int], created: Sequence[int]
               ) -> tuple[list[str], list[int], list[int]]:
    """The series with the days that had nothing filled in, so that the axis is time."""
    from datetime import date, timedelta

    by_day = {d: (e, c) for d, e, c in zip(days, exchanges, created)}
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    every = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return every, [by_day.get(d, (0, 0))[0] for d in every], [by_day.get(d, (0, 0))[1] for d in every]


def capability_bars(areas: Sequence[str], campaign: Sequence[float], organic: Sequence[float],
                    width: int = 900) -> Markup:
    """Paired horizontal bars: each capability area's share of prompts, campaign vs organic."""
    row_h, left, right, top = 34, 190, 70, 8
    height = top + row_h * len(areas) + 24
    plot_w = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="share of prompts per capability area" class="chart">']
    for i, (area, c, o) in enumerate(zip(areas, campaign, organic)):
        y = top + i * row_h
        name = escape(area.replace("_", " "))
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" class="axis">{name}</text>')
        for j, (value, cls) in enumerate(((c, "campaign"), (o, "organic"))):
            w = plot_w * max(0.0, min(1.0, value or 0.0))
            parts.append(f'<rect x="{left}" y="{y + 3 + j * 13}" width="{_n(w)}" height="11" class="{cls}">'
                         f'<title>{name}, {cls}: {100 * (value or 0):.1f}%</title></rect>')
            parts.append(f'<text x="{_n(left + w + 4)}" y="{y + 12 + j * 13}" class="axis">{100 * (value or 0):.1f}%</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" class="legend">dark: campaign · light: accounts allowed in '
                 f'the same window (organic baseline)</text></svg>')
    return Markup("".join(parts))


def _dominant_family(counts: dict[str, int]) -> str:
    best = max(EVIDENCE, key=lambda k: (counts.get(k, 0) * EVIDENCE[k].weight, k))
    return EVIDENCE[best].family


def layout(nodes: Sequence[str], edges: Sequence[tuple[int, int, float]], iterations: int = 200) -> np.ndarray:
    """Fruchterman-Reingold positions in [0, 1]^2, deterministic: the start comes from each
    account's sha256 and the steps are fixed, so the same graph is drawn the same way."""
    n = len(nodes)
    if n == 0:
        return np.zeros((0, 2))
    seed = np.array([[int.from_bytes(hashlib.sha256(a.encode()).digest()[i:i + 4], "big") / 2 ** 32
                      for i in (0, 4)] for a in nodes])
    pos = seed.copy()
    k = 1.0 / np.sqrt(n)
    src = np.array([e[0] for e in edges], dtype=int)
    dst = np.array([e[1] for e in edges], dtype=int)
    w = np.array([e[2] for e in edges], dtype=float)
    w = w / w.max() if len(w) else w
    temperature = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt((delta ** 2).sum(-1)) + 1e-9
        force = (delta / dist[..., None] * (k * k / dist)[..., None]).sum(1)
        if len(src):
            d = pos[src] - pos[dst]
            dd = np.sqrt((d ** 2).sum(-1)) + 1e-9
            pull = d / dd[:, None] * (dd * dd / k * w)[:, None]
            np.add.at(force, src, -pull)
            np.add.at(force, dst, pull)
        # a weak pull to the centre keeps unconnected parts on the page
        force -= (pos - 0.5) * 0.05 * n * k
        length = np.sqrt((force ** 2).sum(-1)) + 1e-9
        pos += force / length[:, None] * np.minimum(length, temperature)[:, None]
        temperature = max(temperature * 0.98, 0.002)
    pos -= pos.min(0)
    span = pos.max(0)
    span[span == 0] = 1
    return np.round(pos / span, 4)


def graph(edge_rows: Sequence[dict], actions: dict[str, str], members: int, size: int = 640) -> tuple[Markup, str]:
    """The linkage graph of the strongest-linked members; returns (svg, caption)."""
    if not edge_rows:
        return Markup('<p class="empty">No linkage edges between members were kept.</p>'), ""
    # the accounts drawn: first those touched by the most kinds of evidence, then the most
    # strongly linked, so that a picture of a large campaign shows its cells *and* what ties them
    degree: dict[str, float] = {}
    kinds: dict[str, set[str]] = {}
    for e in edge_rows:
        for end in (e["a"], e["b"]):
            degree[end] = degree.get(end, 0.0) + e["weight"]
            kinds.setdefault(end, set()).update(k for k, v in e["kinds"].items() if v)
    nodes = sorted(degree, key=lambda a: (-len(kinds[a]), -degree[a], a))[:GRAPH_NODES]
    nodes.sort()
    index = {a: i for i, a in enumerate(nodes)}
    kept = [e for e in edge_rows if e["a"] in index and e["b"] in index]
    pos = layout(nodes, [(index[e["a"]], index[e["b"]], e["weight"]) for e in kept])
    pad = 16
    xy = pad + pos * (size - 2 * pad)
    max_w = max(e["weight"] for e in kept) if kept else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" role="img" '
             f'aria-label="linkage graph of member accounts" class="graph">']
    for e in sorted(kept, key=lambda e: (e["weight"], e["a"], e["b"])):
        i, j = index[e["a"]], index[e["b"]]
        family = _dominant_family(e["kinds"])
        shared = ", ".join(f"{k} {v}" for k, v in sorted(e["kinds"].items()) if v)
        parts.append(f'<line x1="{_n(xy[i, 0])}" y1="{_n(xy[i, 1])}" x2="{_n(xy[j, 0])}" y2="{_n(xy[j, 1])}" '
                     f'stroke="{FAMILY_COLOURS[family]}" stroke-width="{_n(0.4 + 2.2 * e["weight"] / max_w)}" '
                     f'stroke-opacity="0.45"><title>{escape(e["a"])} - {escape(e["b"])}: weight '
                     f'{e["weight"]:.2f}; shared {escape(shared)}</title></line>')
    for a in nodes:
        i = index[a]
        colour = ACTION_COLOURS.get(actions.get(a, "allow"), "#999999")
        parts.append(f'<circle cx="{_n(xy[i, 0])}" cy="{_n(xy[i, 1])}" r="4" fill="{colour}" stroke="#333" '
                     f'stroke-width="0.5"><title>{escape(a)}: {escape(actions.get(a, "allow"))}</title></circle>')
    parts.append("</svg>")
    caption = (f"{len(nodes):,} of {members:,} member accounts (those linked by the most kinds of evidence, "
               f"then the most strongly linked) and the {len(kept):,} edges between them kept by the query below.")
    return Markup("".join(parts)), caption
