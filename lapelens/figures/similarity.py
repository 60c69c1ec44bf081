"""Fig. 6 and Fig. 7 from a SimilarityResult / DominanceResult (pure: result in, ``go.Figure`` out).

Every trace is drawn (none only in the legend): the aligned and mismatched cosines that the gap
is made of get their own panel, since beside the gap (0.0x) their 0.8-0.99 would flatten it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from lapelens.figures.style import finish, span, title_text

_BAND = "rgba(80, 80, 80, 0.18)"
#: Pixels of one row of a legend under a panel, and the room for the panel's axis title above it.
_LEGEND_ROW, _UNDER_AXIS = 22, 52


def _band(x: list, low: pd.Series, high: pd.Series, color: str, legend: str, name: str = "95% interval") -> Any:
    import plotly.graph_objects as go

    return go.Scatter(
        x=x + x[::-1],
        y=high.tolist() + low.tolist()[::-1],
        mode="lines",
        fill="toself",
        fillcolor=color,
        line=dict(width=0),
        hoverinfo="skip",
        name=name,
        legend=legend,
    )


def _legends_under(fig: Any, panels: int, plot_height: float | int) -> None:
    """One horizontal legend under each panel (``legend``, ``legend2``, ...), left-aligned with it."""
    for n in range(1, panels + 1):
        x_axis = fig.layout[f"xaxis{'' if n == 1 else n}"]
        y_axis = fig.layout[f"yaxis{'' if n == 1 else n}"]
        key = "legend" if n == 1 else f"legend{n}"
        fig.layout[key] = dict(
            x=x_axis.domain[0],
            y=y_axis.domain[0] - _UNDER_AXIS / plot_height,
            xanchor="left",
            yanchor="top",
            orientation="h",
            font=dict(size=11),
            bgcolor="rgba(255,255,255,0)",
            entrywidth=0,
        )


def _method(meta: dict) -> str:
    return f"{meta.get('measure', 'raw')} cosine, vectors: {meta.get('vectors', '?')}"


def _texts_caption(meta: dict) -> str:
    langs = meta.get("languages") or []
    pairs = f", {len(langs) * (len(langs) - 1) // 2} language pairs" if langs else ""
    return (
        f"n = {meta.get('n_texts', '?')} aligned texts per language{pairs}; means over pairs with 95% bootstrap "
        f"intervals over texts ({meta.get('n_boot', '?')} draws)."
    )


def ses_figure(result: Any) -> Any:
    """Aligned - mismatched cosine per layer (mean over pairs, its interval, each pair thin), top-1
    retrieval with its interval and chance, the aligned and mismatched cosines themselves, and the
    neurons per layer: a grid of two panels per row, one legend under each panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ses, meta = result.ses, result.meta
    has_retrieval, neurons = "retrieval" in ses, result.neurons_per_layer
    titles = ["Aligned − mismatched cosine"] + (["Top-1 retrieval of the translation"] if has_retrieval else [])
    titles += ["Aligned and mismatched cosine"] + (["Language-specific neurons"] if neurons is not None else [])
    cols = 2
    rows = math.ceil(len(titles) / cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.5 / rows
    )
    layers = list(ses.index)
    gap = ses["gap"] if "gap" in ses else ses["mean"] - ses["mismatched"]
    place = lambda k: {"row": k // cols + 1, "col": k % cols + 1}  # noqa: E731
    panel = 0
    if result.pairs is not None and "gap" in result.pairs:
        langs = list(dict.fromkeys(result.pairs.index.get_level_values("source")))
        for n, (src, tgt) in enumerate((a, b) for i, a in enumerate(langs) for b in langs[i + 1 :]):
            pair = result.pairs.xs((src, tgt), level=("source", "target"))["gap"]
            fig.add_trace(
                go.Scatter(
                    x=list(pair.index),
                    y=pair.tolist(),
                    mode="lines",
                    name="each pair",
                    line=dict(color="rgba(120,120,120,0.45)", width=1),
                    legend="legend",
                    legendgroup="pairs",
                    showlegend=n == 0,
                    hovertext=f"{src}-{tgt}",
                ),
                **place(panel),
            )
    if "gap_low" in ses:
        fig.add_trace(_band(layers, ses["gap_low"], ses["gap_high"], _BAND, "legend"), **place(panel))
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=gap.tolist(),
            name="mean over pairs",
            mode="lines+markers",
            line=dict(color="black", width=3),
            legend="legend",
        ),
        **place(panel),
    )
    fig.update_yaxes(title_text="cosine difference", **place(panel))
    if has_retrieval:
        panel += 1
        key = f"legend{panel + 1}"
        fig.add_trace(
            _band(layers, ses["retrieval_low"], ses["retrieval_high"], "rgba(31,119,180,0.2)", key), **place(panel)
        )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=ses["retrieval"].tolist(),
                name="retrieval, mean over pairs",
                mode="lines+markers",
                line=dict(color="#1f77b4", width=3),
                legend=key,
            ),
            **place(panel),
        )
        if meta.get("chance") is not None:
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=[meta["chance"]] * len(layers),
                    name=f"chance (1/{meta.get('n_texts', '?')})",
                    mode="lines",
                    line=dict(color="black", dash="dot", width=1),
                    legend=key,
                ),
                **place(panel),
            )
        fig.update_yaxes(title_text="share of texts", range=[0, 1.02], **place(panel))
    panel += 1
    key = f"legend{panel + 1}"
    for col, dash, name in (("mean", "solid", "aligned (translation)"), ("mismatched", "dash", "mismatched (t ≠ u)")):
        if f"{col}_low" in ses:  # in the legend with its line (one entry each: the panel's legend stays short)
            fig.add_trace(
                _band(layers, ses[f"{col}_low"], ses[f"{col}_high"], _BAND, key, f"{name}: 95% interval").update(
                    legendgroup=col, showlegend=False
                ),
                **place(panel),
            )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=ses[col].tolist(),
                name=name,
                mode="lines+markers",
                legendgroup=col,
                line=dict(color="#444", dash=dash, width=2),
                legend=key,
            ),
            **place(panel),
        )
    fig.update_yaxes(title_text="mean cosine", **place(panel))
    if neurons is not None:
        panel += 1
        key = f"legend{panel + 1}"
        for lang in neurons.columns:
            fig.add_trace(
                go.Bar(x=list(neurons.index), y=neurons[lang].tolist(), name=lang, legend=key), **place(panel)
            )
        fig.update_layout(barmode="stack")
        fig.update_yaxes(title_text="neurons", **place(panel))
    fig.update_xaxes(title_text="layer")
    row_height, top = 300, 70
    plot_height = rows * row_height + (rows - 1) * 90
    _legends_under(fig, panel + 1, plot_height)
    caption = [
        _texts_caption(meta),
        "Mismatched: each text against every text u ≠ t of the other language (a control for the shared offset); "
        "shaded: 95% intervals"
        + (f"; retrieval chance 1/{meta['n_texts']}" if has_retrieval and meta.get("n_texts") else "")
        + ".",
    ]
    if neurons is not None:
        caption.append(
            f"Neurons: {meta.get('neurons_method', '?')}, {int(neurons.to_numpy().sum()):,} (language, neuron) "
            f"pairs over {len(neurons.index)} layers; per layer {span(neurons.sum(axis=1))}."
        )
    return finish(
        fig,
        title_text("Fig. 6: similarity of aligned texts per layer", _method(meta), meta.get("model")),
        caption,
        width=1000,
        height=plot_height + top,
        top=top,
        caption_gap=_UNDER_AXIS + 2 * _LEGEND_ROW + 10,
    )


def dominance_figure(result: Any) -> Any:
    """Retrieval into each target (chance dotted) beside the aligned cosine into it (solid) and its
    mismatched control (dashed); under raw, Eq. 6's shifted cosine, its control and the unshifted one."""
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    meta, palette = result.meta, plotly.colors.qualitative.Plotly
    eq6 = result.shifted is not None
    panels = [(result.retrieval, "Retrieval into the target")] if result.retrieval is not None else []
    right = (
        [(result.shifted, "solid"), (result.shifted_mismatched, "dash"), (result.unshifted, "dot")]
        if eq6
        else [(result.aligned, "solid"), (result.mismatched, "dash")]
    )
    titles = [p[1] for p in panels] + [
        "Eq. 6: cosine after h_k − v_k + v_c" if eq6 else "Aligned vs mismatched cosine into the target"
    ]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.09)
    first = result.retrieval if result.retrieval is not None else (result.shifted if eq6 else result.aligned)
    targets, layers = list(first.columns), list(first.index)
    for n, lang in enumerate(targets):
        color = palette[n % len(palette)]
        if panels:
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=result.retrieval[lang].tolist(),
                    name=f"into {lang}",
                    mode="lines+markers",
                    line=dict(color=color),
                    legendgroup=lang,
                ),
                row=1,
                col=1,
            )
        for table, dash in right:
            if table is not None:
                fig.add_trace(
                    go.Scatter(
                        x=layers,
                        y=table[lang].tolist(),
                        name=f"into {lang}",
                        mode="lines",
                        line=dict(color=color, dash=dash),
                        legendgroup=lang,
                        showlegend=not panels and dash == "solid",
                    ),
                    row=1,
                    col=len(titles),
                )
    if panels and meta.get("chance") is not None:
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[meta["chance"]] * len(layers),
                name="chance",
                mode="lines",
                line=dict(color="black", dash="dot", width=1),
            ),
            row=1,
            col=1,
        )
    keys = (
        [("shifted", "solid"), ("mismatched target text", "dash"), ("unshifted", "dot")]
        if eq6
        else [("aligned", "solid"), ("mismatched, all pairs t ≠ u", "dash")]
    )
    for name, dash in keys:  # the right panel's line styles, in the legend
        fig.add_trace(
            go.Scatter(x=[None], y=[None], name=name, mode="lines", line=dict(color="grey", dash=dash)),
            row=1,
            col=len(titles),
        )
    if panels:
        fig.update_yaxes(title_text="share of source texts retrieving their translation", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="mean cosine to the target", row=1, col=len(titles))
    fig.update_xaxes(title_text="layer")
    fig.update_layout(legend=dict(font=dict(size=11), tracegroupgap=2, x=1.02, xanchor="left", y=1, yanchor="top"))
    caption = [_texts_caption(meta).replace("means over pairs", "per target, means over its source languages")]
    if result.contrast is not None and "retrieval" in result.contrast.index:
        c = result.contrast.loc["retrieval"]
        caption.append(
            f"Retrieval into {c['reference']} minus the best other target ({c['best_other']}), mean over layers: "
            f"{c['value']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]; {c['reference']} top at "
            f"{int(c['layers_on_top'])} of {int(c['n_layers'])} layers."
        )
    return finish(
        fig,
        title_text("Fig. 7: dominance of each target language per layer", _method(meta), meta.get("model")),
        caption,
        width=400 * len(titles) + 260,
        height=470,
        top=80,
    )
