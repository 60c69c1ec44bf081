"""Fig. 4: PPL change on every language as more of one language's top neurons are deactivated.

The changes of one sweep span orders of magnitude (on Gemma 3 270M: +0.4% for en and +122% for fr
at 1%, +3.5e11% at 10%), so the y axis is the signed log of Fig. 2's colours, labelled in values:
a change of +0.4% stays visibly above zero beside one of 10^11 %. The rate the run's own LAPE
neurons use is marked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lapelens.figures.perturbation import Value, _text_caption
from lapelens.figures.style import finish, signed_log, signed_log_ticks, title_text


def sweep_figure(result: Any, value: Value = "relative") -> Any:
    """Lines per evaluated language (the target's thick) with 95% intervals, x: the selection
    ratio with the number of target neurons it deactivates, the selected rate dashed."""
    import plotly.graph_objects as go

    frame = result.value(value)
    lo, hi = result.interval(value)
    scale, unit = (100.0, "%") if value == "relative" else (1.0, "")
    log = value != "ppl"
    put = signed_log if log else np.asarray
    x = [r * 100 for r in result.ratios]
    fig = go.Figure()
    for lang in frame.columns:
        y, low, high = (np.asarray(f[lang], dtype=np.float64) * scale for f in (frame, lo, hi))
        own = lang == result.target
        fig.add_trace(
            go.Scatter(
                x=x,
                y=put(y),
                name=f"{lang} (target)" if own else lang,
                mode="lines+markers",
                line={"width": 4 if own else 1.5},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": put(high) - put(y),
                    "arrayminus": put(y) - put(low),
                    "thickness": 1,
                },
                customdata=np.stack([y, low, high, np.asarray(result.n_neurons)], axis=1),
                hovertemplate=f"{lang}, ratio %{{x}}%: %{{customdata[0]:.4g}}{unit} [%{{customdata[1]:.4g}}, "
                "%{customdata[2]:.4g}] (%{customdata[3]} neurons)<extra></extra>",
            )
        )
    values = np.concatenate([np.asarray(f, dtype=np.float64).ravel() * scale for f in (lo, hi)])
    values = values[np.isfinite(values)]
    yaxis: dict[str, Any] = {"title": {"relative": "PPL change (%)", "change": "PPL change", "ppl": "PPL"}[value]}
    if log:
        tickvals, ticktext = signed_log_ticks(max(float(values.max()), 1.0), unit, bottom=min(float(values.min()), 0.0))
        yaxis.update(tickmode="array", tickvals=tickvals, ticktext=ticktext, title=yaxis["title"] + ", signed log")
    target = result.target
    fig.update_layout(
        xaxis={
            "title": f"selection ratio: share of all neurons LAPE keeps (and {target} neurons deactivated)",
            "tickmode": "array",
            "tickvals": x,
            "ticktext": [f"{v:g}%<br>{n:,}" for v, n in zip(x, result.n_neurons)],
        },
        yaxis=yaxis,
        legend={"title": {"text": "evaluated"}, "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
    )
    rate = result.meta.get("selected_rate")
    if rate is not None:
        fig.add_vline(x=rate * 100, line={"dash": "dash", "color": "black", "width": 1})
        fig.add_annotation(
            x=rate * 100,
            xref="x",
            y=1,
            yref="paper",
            yanchor="bottom",
            showarrow=False,
            text=f"this run's top_rate: {rate * 100:g}%",
            font={"size": 11},
        )
    counts = ", ".join(f"{n:,} ({v:g}%)" for v, n in zip(x, result.n_neurons) if v > 0)
    caption = [
        _text_caption(result.matrix),
        f"{target} neurons deactivated per ratio: {counts}"
        + (
            f"; LAPE's filter admits no more past {min(v for v, s in zip(x, result.saturated) if s):g}%"
            if any(result.saturated)
            else ""
        )
        + ".",
        ("Dashed: the top_rate of this run's LAPE neurons (Fig. 2). " if rate is not None else "")
        + ("y: the signed log of the change, labelled in values." if log else ""),
    ]
    return finish(
        fig,
        title_text(
            f"Fig. 4: PPL change as more {target} neurons are deactivated",
            result.meta.get("method", "lape"),
            result.meta.get("model"),
        ),
        caption,
        width=760,
        height=470,
        caption_gap=78,
        top=84,
    )
