"""The figures' shared look: how a model is named, the title and caption every figure carries, the
signed-log axis, Wilson intervals on shares, and sizes.

Every figure is titled ``<figure> — <method> — <model>`` and carries a caption under the plot
stating what it was computed on (samples per bar or cell, tokens, neurons), read from the result's
own metadata, so a PNG taken out of the README still says what it shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Float64

from lapelens.pretrained import PRETRAINED

#: Pixels per heatmap cell: wide enough for "-12.3%" and "collapse" at the cell font size.
CELL_WIDTH, CELL_HEIGHT = 72, 46
#: z of a two-sided 95% normal interval (Wilson intervals on shares).
Z95 = 1.959963984540054
#: Title and caption fonts; characters are assumed this many pixels wide when a figure is sized
#: so that they fit (plotly neither wraps nor shrinks a title).
TITLE_SIZE, CAPTION_SIZE = 15, 11
TITLE_CHAR, CAPTION_CHAR = 7.6, 5.9
#: Room the caption's first line keeps under the plot area (tick labels and the axis title).
CAPTION_GAP = 62
CAPTION_LINE = 15
GREY = "#555"


def model_label(name: object) -> str:
    """A model's name for a title: a hub name as it is, a local folder by its last part, the
    shipped model as "embedded" (its folder is ``.../lapelens/data/model`` on each machine); a
    named pretrained model (``lapelens.pretrained``) with its quantization, which its numbers carry."""
    if not name:
        return "?"
    text = str(name)
    path = Path(text)
    if path.is_absolute() or text.startswith("."):
        text = "embedded" if path.parts[-3:] == ("lapelens", "data", "model") else path.name
    known = PRETRAINED.get(text)
    return f"{text} ({known.quantization.split(' (')[0]})" if known is not None else text


def title_text(figure: str, method: str | None, model: object) -> str:
    """``<figure> — <method> — <model>`` (the method left out when a figure has none)."""
    parts = [figure] + ([method] if method else []) + [model_label(model)]
    return " — ".join(parts)


def finish(
    fig: Any,
    title: str,
    caption: Sequence[str],
    *,
    width: float | int,
    height: float | int,
    top: int = 60,
    caption_gap: int = CAPTION_GAP,
    min_width: int = 0,
) -> Any:
    """Give ``fig`` its title, a caption (one line per item) under the plot area, and a size at
    which both fit: the width grows to the longest line, the bottom margin to the caption.
    ``height``: the top margin and the plot area (with its axis labels down to ``caption_gap``);
    the caption's lines are added below it."""
    lines = [line for line in caption if line]
    longest = max([len(title) * TITLE_CHAR] + [len(_plain(line)) * CAPTION_CHAR for line in lines])
    width = int(max(width, min_width, 40 + longest))
    bottom = caption_gap + CAPTION_LINE * len(lines) + 12
    margin = fig.layout.margin.to_plotly_json() if fig.layout.margin else {}
    fig.update_layout(
        title={"text": title, "font": {"size": TITLE_SIZE}, "x": 0.01, "xanchor": "left"},
        width=width,
        height=int(height) + bottom,
        margin={**margin, "t": top, "b": bottom},
    )
    if lines:
        fig.add_annotation(
            text="<br>".join(lines),
            xref="paper",
            yref="paper",
            x=0,
            y=0,
            xanchor="left",
            yanchor="top",
            yshift=-caption_gap,
            align="left",
            showarrow=False,
            font={"size": CAPTION_SIZE, "color": GREY},
            name="caption",
        )
    return fig


def _plain(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


def span(values: Iterable[Any]) -> str:
    """Label a span of values: "12" for equal values, "9–14" for a range (a caption's neurons or samples per language);
    "?" when none is known."""
    vals = sorted({int(v) for v in values if v is not None and math.isfinite(float(v))})
    if not vals:
        return "?"
    return f"{vals[0]:,}" if len(vals) == 1 else f"{vals[0]:,}–{vals[-1]:,}"


# ---- shares ---------------------------------------------------------------------------------------
def wilson(
    share: Float[np.ndarray, "*shape"] | float | int, n: Float[np.ndarray, "*shape"] | float | int
) -> tuple[Float64[np.ndarray, "*shape"], Float64[np.ndarray, "*shape"]]:
    """Wilson score 95% interval (low, high) of a share ``k / n`` (``k`` recovered as ``share * n``)."""
    p = np.asarray(share, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.round(p * n)
        phat = k / n
        denom = 1 + Z95**2 / n
        centre = (phat + Z95**2 / (2 * n)) / denom
        half = Z95 * np.sqrt(phat * (1 - phat) / n + Z95**2 / (4 * n**2)) / denom
    return np.asarray(np.clip(centre - half, 0, 1)), np.asarray(np.clip(centre + half, 0, 1))


# ---- the signed-log scale ---------------------------------------------------------------------------
def signed_log(z: Float[np.ndarray, "*shape"] | float | int, unit: float | int = 1.0) -> Float64[np.ndarray, "*shape"]:
    """``sign(z) * log10(1 + |z| / unit)``: linear near 0, logarithmic beyond ``unit``, defined for
    negative values (a PPL change can be either sign; plotly's log axis takes none)."""
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(np.sign(z) * np.log10(1.0 + np.abs(z) / unit))


def signed_log_ticks(
    top: float | int, unit: str = "%", bottom: float | int | None = None
) -> tuple[list[float], list[str]]:
    """Tick positions (on the signed-log scale) and labels (in values) from ``bottom`` (default
    ``-top``) to ``top``: 0, the powers of ten in between (and 3 x them over three decades or
    fewer), and the ends themselves, leaving out a tick that would crowd one kept before it."""
    bottom = -top if bottom is None else bottom
    ends = [e for e in (top, bottom) if e != 0]
    decades = math.log10(max(abs(top), abs(bottom), 1.0))
    steps = (1.0, 3.0) if decades <= 3 else (1.0,)
    powers = [sign * step * 10.0**e for e in range(math.floor(decades) + 1) for step in steps for sign in (1, -1)]
    powers = [p for p in powers if bottom <= p <= top]
    low, high = float(signed_log(bottom)), float(signed_log(top))
    gap = 0.06 * (high - low)
    kept: list[float] = []
    for t in [0.0] + ends + sorted(powers, key=abs):  # 0 and the ends first: they bound the scale
        if all(abs(float(signed_log(t)) - float(signed_log(k))) >= gap for k in kept):
            kept.append(t)
    kept.sort()
    return [float(signed_log(t)) for t in kept], [_value_label(t, unit) for t in kept]


def _value_label(value: float | int, unit: str) -> str:
    if value == 0:
        return f"0{unit}"
    sign = "+" if value > 0 else "−"
    size = abs(value)
    if size >= 1e5:
        mantissa, exponent = f"{size:.1e}".split("e")
        return f"{sign}{mantissa.removesuffix('.0')}e{int(exponent)}{unit}"
    return f"{sign}{size:,.0f}{unit}" if size >= 10 else f"{sign}{size:.2g}{unit}"
