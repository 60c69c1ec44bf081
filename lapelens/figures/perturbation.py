"""Fig. 2 and Fig. 3: PPL-change heatmaps, every one of a run on one signed-log colour scale.

Rows: the language whose neurons (or PV parameters) are deactivated; columns: the language of the
held-out text; the number in every cell. A result is a ``PerturbationResult`` (read through its
``value``, ``interval``, ``relative``, ``chunks`` and ``meta``; nothing here imports it).

- Colour: ``signed_log`` of the change (in % for ``relative``, PPL for ``change``), linear in
  ``ppl``. :func:`colour_range` computes one range for several results (the methods of a run), so
  that random neurons' ±10% do not take the colours LAPE's ±176% take on another figure. The
  range ends at the largest change that is not a collapse, and never inside ±``MIN_TOP`` %: a
  matrix of ±0.01% stays white instead of spanning deep red to deep blue.
- Collapse: a cell whose perplexity is ``COLLAPSE`` times the unperturbed one or more (a change of
  +900%) prints "collapse" and takes the end colour; the caption counts such cells. The model no
  longer predicts that language at all, and a number such as "5.6e12%" says nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from lapelens.constants import UNPERTURBED
from lapelens.figures.style import CELL_HEIGHT, CELL_WIDTH, finish, signed_log, signed_log_ticks, span, title_text

Value = Literal["ppl", "change", "relative"]
#: Perplexity multiplied by this much or more counts as a collapse (relative change >= +900%).
COLLAPSE = 10.0
#: The colour scale of changes ends at ±MIN_TOP % at least (±1 PPL for absolute changes).
MIN_TOP = 10.0
MIN_TOP_CHANGE = 1.0
#: From this magnitude on a cell prints two significant digits and a power of ten ("4.3e6%").
COMPACT_FROM = 1e4
_LABELS = {"relative": "PPL change (%)", "change": "PPL change", "ppl": "PPL"}


def cell_text(value: float, kind: Value = "relative") -> str:
    """How a heatmap cell prints its number (``value`` already in % for "relative"), as in Fig. 2;
    the hover text keeps every digit."""
    unit = "%" if kind == "relative" else ""
    if math.isfinite(value) and abs(value) >= COMPACT_FROM:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}{unit}"
    if kind == "relative":
        return f"{0.0 if abs(value) < 0.05 else value:.1f}%"  # no "-0.0%"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{0.0 if abs(value) < 0.005 else value:.2f}"


def _scale(kind: Value) -> float:
    return 100.0 if kind == "relative" else 1.0


def _perturbed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(index=UNPERTURBED)


def collapsed(result: Any) -> pd.DataFrame:
    """Boolean (deactivated x evaluated): the perplexity is ``COLLAPSE`` x the unperturbed or more."""
    return _perturbed(result.relative) >= COLLAPSE - 1.0


def colour_range(results: Sequence[Any] | Any, kind: Value = "relative") -> tuple[float, float]:
    """(low, high) of the colour scale shared by ``results``, in the values' units (% for
    ``relative``): ±(largest change of a cell that is not a collapse), at least ±``MIN_TOP``;
    for ``ppl`` the smallest and largest perplexity that is not a collapse."""
    results = list(results) if isinstance(results, (list, tuple)) else [results]
    if kind == "ppl":
        kept = np.concatenate(
            [
                np.r_[r.ppl.loc[UNPERTURBED].to_numpy(), _perturbed(r.ppl).to_numpy()[~collapsed(r).to_numpy()]]
                for r in results
            ]
        )
        kept = kept[np.isfinite(kept)]
        return (float(kept.min()), float(kept.max())) if kept.size else (0.0, 1.0)
    values = [(_perturbed(r.value(kind)) * _scale(kind)).to_numpy()[~collapsed(r).to_numpy()] for r in results]
    kept = np.abs(np.concatenate(values)) if values else np.array([])
    kept = kept[np.isfinite(kept)]
    top = max(MIN_TOP if kind == "relative" else MIN_TOP_CHANGE, float(kept.max()) if kept.size else 0.0)
    return -top, top


def _colour(z: np.ndarray, kind: Value) -> np.ndarray:
    return z if kind == "ppl" else signed_log(z)


def _colorbar(kind: Value, low: float | int, high: float | int) -> dict:
    bar: dict[str, Any] = {
        "title": {"text": _LABELS[kind] + ("" if kind == "ppl" else ", signed log"), "side": "right"}
    }
    if kind != "ppl":
        vals, text = signed_log_ticks(high, "%" if kind == "relative" else "", bottom=low)
        bar.update(tickmode="array", tickvals=vals, ticktext=text)
    return bar


def _cells(result: Any, kind: Value) -> dict[str, Any]:
    """Z (colour), text and hover of one result's perturbed rows."""
    scale, unit = _scale(kind), "%" if kind == "relative" else ""
    frame = _perturbed(result.value(kind))
    lo, hi = (_perturbed(f) for f in result.interval(kind))
    gone = collapsed(result)
    ratio = _perturbed(result.relative) + 1.0
    z = frame.to_numpy() * scale
    text = [
        ["collapse" if gone.iloc[i, j] else cell_text(v, kind) for j, v in enumerate(row)] for i, row in enumerate(z)
    ]
    hover = [
        [
            f"deactivated {r}, evaluated {c}: {z[i, j]:.4g}{unit} [{lo.loc[r, c] * scale:.4g}, {hi.loc[r, c] * scale:.4g}]"
            + (f"; PPL x{ratio.loc[r, c]:.3g}: collapse" if gone.loc[r, c] else "")
            for j, c in enumerate(frame.columns)
        ]
        for i, r in enumerate(frame.index)
    ]
    return {
        "z": _colour(z, kind),
        "x": list(frame.columns),
        "y": list(frame.index),
        "text": text,
        "hovertext": hover,
        "collapsed": int(gone.to_numpy().sum()),
        "cells": int(gone.size),
    }


def _text_caption(result: Any) -> str:
    """Held-out text per language: chunks and predicted tokens (from the per-chunk table)."""
    base = result.chunks[result.chunks["perturbed"] == UNPERTURBED]
    per = base.groupby("evaluated", sort=False)["tokens"].agg(["size", "sum"])
    seq = result.meta.get("seq_len")
    seq = f" of {span(seq)} tokens" if seq else ""
    return (
        f"Held-out text per language: {span(per['size'])} chunks{seq}, {span(per['sum'])} predicted tokens; "
        "95% paired-bootstrap intervals over chunks in the hover."
    )


def _units(result: Any) -> str:
    return str(result.meta.get("unit") or "units")


def _sizes(result: Any) -> str:
    sizes = result.meta.get("sizes") or {}
    return span(sizes.values()) if sizes else "?"


def _colour_caption(kind: Value, low: float | int, high: float | int, shared: bool) -> str:
    if kind == "ppl":
        return f"Colour: PPL from {low:.3g} to {high:.3g}."
    unit = "%" if kind == "relative" else " PPL"
    where = "one scale for every method of this run" if shared else "this matrix's own scale"
    return f"Colour: signed log of the change, {where}, ending at ±{high:,.3g}{unit}."


def _collapse_caption(counts: Mapping[str, tuple[int, int]]) -> str:
    broken = {m: c for m, c in counts.items() if c[0]}
    if not broken:
        return ""
    where = ", ".join(f"{m}: {k} of {n} cells" for m, (k, n) in broken.items())
    return f"“collapse”: perplexity x{COLLAPSE:g} or more, the model breaks ({where})."


def heatmap(
    result: Any, value: Value = "relative", scale: tuple[float, float] | None = None, title: str | None = None
) -> Any:
    """Fig. 2 for one result; ``scale``: the (low, high) of :func:`colour_range` over the results
    drawn beside it (default: this result's own)."""
    import plotly.graph_objects as go

    shared = scale is not None
    low, high = scale if shared else colour_range(result, value)
    cells = _cells(result, value)
    method, unit = result.meta.get("method", "?"), _units(result)
    fig = go.Figure(
        go.Heatmap(
            z=cells["z"],
            x=cells["x"],
            y=cells["y"],
            text=cells["text"],
            texttemplate="%{text}",
            textfont={"size": 12},
            hovertext=cells["hovertext"],
            hoverinfo="text",
            colorscale="Blues" if value == "ppl" else "RdBu_r",
            zmin=float(_colour(np.array(low), value)),
            zmax=float(_colour(np.array(high), value)),
            colorbar=_colorbar(value, low, high),
        )
    )
    fig.update_layout(
        xaxis={"title": "evaluated language", "side": "bottom", "tickmode": "array", "tickvals": cells["x"]},
        yaxis={"title": "deactivated language", "autorange": "reversed", "tickmode": "array", "tickvals": cells["y"]},
    )
    verb = "zeroed" if unit == "parameters" else "deactivated"
    caption = [
        _text_caption(result),
        f"{unit.capitalize()} {verb} per language: {_sizes(result)}.",
        _colour_caption(value, low, high, shared),
        _collapse_caption({method: (cells["collapsed"], cells["cells"])}),
    ]
    return finish(
        fig,
        title
        or title_text(f"Fig. 2: PPL change when a language's {unit} are {verb}", method, result.meta.get("model")),
        caption,
        width=260 + CELL_WIDTH * len(cells["x"]),
        height=130 + CELL_HEIGHT * len(cells["y"]),
    )


def compare_figure(
    results: Mapping[str, Any], value: Value = "relative", columns: int = 3, scale: tuple[float, float] | None = None
) -> Any:
    """Fig. 3: one heatmap per method on a grid (``columns`` per row), numbers in the cells, all on
    one colour axis: ``scale`` (default: :func:`colour_range` of ``results``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(results)
    shared = scale is not None
    low, high = scale if shared else colour_range([results[n] for n in names], value)
    cols = max(1, min(columns, len(names)))
    rows = math.ceil(len(names) / cols)
    cells = {n: _cells(results[n], value) for n in names}
    n_x, n_y = len(cells[names[0]]["x"]), len(cells[names[0]]["y"])
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.05, vertical_spacing=0.3 / rows
    )
    for k, n in enumerate(names):
        row, col, c = k // cols + 1, k % cols + 1, cells[n]
        fig.add_trace(
            go.Heatmap(
                z=c["z"],
                x=c["x"],
                y=c["y"],
                text=c["text"],
                texttemplate="%{text}",
                textfont={"size": 10},
                hovertext=c["hovertext"],
                hoverinfo="text",
                name=n,
                coloraxis="coloraxis",
            ),
            row=row,
            col=col,
        )
        fig.update_xaxes(tickmode="array", tickvals=c["x"], row=row, col=col)
        fig.update_yaxes(
            autorange="reversed", tickmode="array", tickvals=c["y"], showticklabels=col == 1, row=row, col=col
        )
    fig.update_layout(
        coloraxis={
            "colorscale": "Blues" if value == "ppl" else "RdBu_r",
            "cmin": float(_colour(np.array(low), value)),
            "cmax": float(_colour(np.array(high), value)),
            "colorbar": _colorbar(value, low, high),
        }
    )
    first = results[names[0]]
    units = ", ".join(
        f"{n} {_sizes(results[n])}" + (f" {_units(results[n])}" if _units(results[n]) != "neurons" else "")
        for n in names
    )
    caption = [
        _text_caption(first),
        f"Deactivated per language (neurons unless stated): {units}.",
        _colour_caption(value, low, high, True),
        _collapse_caption({n: (cells[n]["collapsed"], cells[n]["cells"]) for n in names}),
    ]
    return finish(
        fig,
        title_text(
            "Fig. 3: PPL change when a language is deactivated, per method", ", ".join(names), first.meta.get("model")
        ),
        caption,
        width=int(170 + cols * (CELL_WIDTH * 0.8 * n_x + 30)),
        height=int(60 + rows * (CELL_HEIGHT * 0.8 * n_y + 60)),
        caption_gap=40,
    )
