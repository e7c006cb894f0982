"""The leaderboard's pictures as plain SVG / HTML (no plotting library needed): ratings with their
bootstrap intervals, and the win-rate matrix as a coloured table."""
from __future__ import annotations

import html
import math

ROW_HEIGHT, LEFT, WIDTH = 26, 190, 640


def ratings_svg(rows: list[dict]) -> str:
    """Each model's Bradley–Terry rating as a dot on its 95% interval, best at the top."""
    if not rows:
        return "<p id='arena-plot-empty'>No votes yet: vote on a battle to see ratings here.</p>"
    values = [v for r in rows for v in (r["rating"], r["ci_low"], r["ci_high"]) if not math.isnan(v)]
    low, high = min(values), max(values)
    pad = max((high - low) * 0.08, 10.0)
    low, high = low - pad, high + pad
    span = WIDTH - LEFT - 20

    def x(value: float) -> float:
        return LEFT + (value - low) / (high - low) * span

    height = ROW_HEIGHT * len(rows) + 56
    parts = [f"<svg id='arena-plot' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
             f"role='img' aria-label='Ratings with 95% intervals' style='font: 12px sans-serif'>"
             f"<text x='{LEFT}' y='14' fill='currentColor'>Rating (dot) and its 95% bootstrap interval (bar)</text>"]
    for i, row in enumerate(rows):
        y = 36 + i * ROW_HEIGHT
        name = html.escape(row["model"])
        lo, hi = (row["ci_low"], row["ci_high"]) if not math.isnan(row["ci_low"]) else (row["rating"], row["rating"])
        parts.append(f"<text x='{LEFT - 8}' y='{y + 4}' text-anchor='end' fill='currentColor'>{name}</text>"
                     f"<line x1='{x(lo):.1f}' y1='{y}' x2='{x(hi):.1f}' y2='{y}' stroke='#7a8ca3' stroke-width='3'/>"
                     f"<circle cx='{x(row['rating']):.1f}' cy='{y}' r='5' fill='#d9480f'>"
                     f"<title>{name}: {row['rating']:.0f} ({lo:.0f} to {hi:.0f}), {row['games']} votes</title></circle>")
    axis_y = height - 12
    for value in (low + pad, (low + high) / 2, high - pad):
        parts.append(f"<text x='{x(value):.1f}' y='{axis_y}' text-anchor='middle' fill='#888'>{value:.0f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _cell_colour(rate: float) -> str:
    """Red (0) through white (0.5) to green (1)."""
    if rate >= 0.5:
        fade = int(255 - (rate - 0.5) * 2 * 140)
        return f"rgb({fade},235,{fade})"
    fade = int(255 - (0.5 - rate) * 2 * 140)
    return f"rgb(245,{fade},{fade})"


def win_rate_html(names: list[str], matrix: list[list[float | None]]) -> str:
    """Row model's share of games won against the column model (ties as halves)."""
    if not names:
        return ""
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for name, row in zip(names, matrix):
        cells = "".join("<td style='color:#999'>–</td>" if rate is None else
                        f"<td style='background:{_cell_colour(rate)};color:#111'>{rate:.0%}</td>" for rate in row)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return ("<table id='arena-win-rates' style='border-collapse:collapse;text-align:center'>"
            "<caption>Win rate of the row model against the column model</caption>"
            f"<tr><th></th>{head}</tr>{''.join(body)}</table>")
