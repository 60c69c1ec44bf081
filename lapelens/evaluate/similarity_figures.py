"""Fig. 6 and Fig. 7 from a SimilarityResult / DominanceResult (pure: result in, ``go.Figure`` out)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lapelens.figures.style import model_label

#: Pixels per legend entry, for the room under the panels.
_ENTRY = 21
_BAND = "rgba(80, 80, 80, 0.18)"


def _band(x: list, low: pd.Series, high: pd.Series, color: str, legend: str, name: str = "95% interval") -> Any:
    import plotly.graph_objects as go

    return go.Scatter(x=x + x[::-1], y=high.tolist() + low.tolist()[::-1], mode="lines", fill="toself", fillcolor=color,
                      line=dict(width=0), hoverinfo="skip", name=name, legend=legend)


def _legends_under(fig: Any, entries: list[int]) -> None:
    """One legend under each panel (``legend``, ``legend2``, ...), left-aligned with it."""
    for n, _ in enumerate(entries, 1):
        axis = fig.layout[f"xaxis{'' if n == 1 else n}"]
        key = "legend" if n == 1 else f"legend{n}"
        fig.layout[key] = dict(x=axis.domain[0], y=-0.14, xanchor="left", yanchor="top", font=dict(size=11), tracegroupgap=0, traceorder="normal",
                               bgcolor="rgba(255,255,255,0)")
    fig.update_layout(margin=dict(b=90 + _ENTRY * max(entries)), height=480 + _ENTRY * max(entries))


def _title(what: str, meta: dict) -> str:
    how = f"{meta.get('measure', 'raw')}, vectors: {meta.get('vectors', '?')}"
    return f"{what} — {model_label(meta.get('model'))} ({meta.get('n_texts', '?')} texts; {how})"


def ses_figure(result: Any) -> Any:
    """Aligned - mismatched cosine per layer (mean over pairs, its interval, each pair thin), top-1
    retrieval with its interval and chance, and the neurons per layer: one legend per panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ses, meta = result.ses, result.meta
    has_retrieval, neurons = "retrieval" in ses, result.neurons_per_layer
    titles = ["Aligned − mismatched cosine"]
    titles += ["Top-1 retrieval of the translation"] if has_retrieval else []
    titles += ["Language-specific neurons"] if neurons is not None else []
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    layers = list(ses.index)
    gap = ses["gap"] if "gap" in ses else ses["mean"] - ses["mismatched"]
    entries = []
    traces = []
    if result.pairs is not None and "gap" in result.pairs:
        langs = list(dict.fromkeys(result.pairs.index.get_level_values("source")))
        for n, (src, tgt) in enumerate((a, b) for i, a in enumerate(langs) for b in langs[i + 1:]):
            pair = result.pairs.xs((src, tgt), level=("source", "target"))["gap"]
            traces.append(go.Scatter(x=list(pair.index), y=pair.tolist(), mode="lines", name="each pair",
                                     line=dict(color="rgba(120,120,120,0.45)", width=1), legend="legend",
                                     legendgroup="pairs", showlegend=n == 0, hovertext=f"{src}-{tgt}"))
    if "gap_low" in ses:
        traces.append(_band(layers, ses["gap_low"], ses["gap_high"], _BAND, "legend"))
    traces.append(go.Scatter(x=layers, y=gap.tolist(), name="mean over pairs", mode="lines+markers",
                             line=dict(color="black", width=3), legend="legend"))
    for col, dash in (("mean", "dot"), ("mismatched", "dash")):
        traces.append(go.Scatter(x=layers, y=ses[col].tolist(), name=f"{'aligned' if col == 'mean' else col} cosine",
                                 mode="lines", line=dict(color="grey", dash=dash), visible="legendonly", legend="legend"))
    for t in traces:
        fig.add_trace(t, row=1, col=1)
    entries.append(sum(1 for t in traces if t.showlegend is not False))
    fig.update_yaxes(title_text="cosine (aligned − mismatched)", row=1, col=1)
    col = 1
    if has_retrieval:
        col += 1
        chance = meta.get("chance")
        panel = [_band(layers, ses["retrieval_low"], ses["retrieval_high"], "rgba(31,119,180,0.2)", "legend2"),
                 go.Scatter(x=layers, y=ses["retrieval"].tolist(), name="retrieval, mean over pairs",
                            mode="lines+markers", line=dict(color="#1f77b4", width=3), legend="legend2")]
        if chance is not None:
            panel.append(go.Scatter(x=layers, y=[chance] * len(layers), name=f"chance (1/{meta.get('n_texts', '?')})",
                                    mode="lines", line=dict(color="black", dash="dot", width=1), legend="legend2"))
        for t in panel:
            fig.add_trace(t, row=1, col=col)
        entries.append(len(panel))
        fig.update_yaxes(title_text="share of texts retrieving their translation", range=[0, 1.02], row=1, col=col)
    if neurons is not None:
        col += 1
        key = f"legend{len(entries) + 1}"
        for lang in neurons.columns:
            fig.add_trace(go.Bar(x=list(neurons.index), y=neurons[lang].tolist(), name=lang, legend=key), row=1, col=col)
        entries.append(len(neurons.columns))
        fig.update_layout(barmode="stack")
        fig.update_yaxes(title_text="neurons", row=1, col=col)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(title=_title("SES per layer (Fig. 6)", meta), width=480 + 380 * (len(titles) - 1))
    _legends_under(fig, entries)
    return fig


def dominance_figure(result: Any) -> Any:
    """Retrieval into each target (chance dotted) beside the aligned cosine into it (solid) and its
    mismatched control (dashed); under raw, Eq. 6's shifted cosine, its control and the unshifted one."""
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    meta, palette = result.meta, plotly.colors.qualitative.Plotly
    eq6 = result.shifted is not None
    panels = ([(result.retrieval, "Retrieval into the target")] if result.retrieval is not None else [])
    right = ([(result.shifted, "solid"), (result.shifted_mismatched, "dash"), (result.unshifted, "dot")] if eq6
             else [(result.aligned, "solid"), (result.mismatched, "dash")])
    titles = [p[1] for p in panels] + ["Eq. 6: cosine after h_k − v_k + v_c" if eq6 else "Aligned vs mismatched cosine into the target"]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.09)
    targets = list((result.retrieval if result.retrieval is not None else result.shifted).columns)
    layers = list((result.retrieval if result.retrieval is not None else result.shifted).index)
    for n, lang in enumerate(targets):
        color = palette[n % len(palette)]
        if panels:
            fig.add_trace(go.Scatter(x=layers, y=result.retrieval[lang].tolist(), name=f"to {lang}", mode="lines+markers",
                                     line=dict(color=color), legendgroup=lang), row=1, col=1)
        for table, dash in right:
            if table is not None:
                fig.add_trace(go.Scatter(x=layers, y=table[lang].tolist(), name=f"to {lang}", mode="lines",
                                         line=dict(color=color, dash=dash), legendgroup=lang,
                                         showlegend=not panels and dash == "solid"), row=1, col=len(titles))
    if panels and meta.get("chance") is not None:
        fig.add_trace(go.Scatter(x=layers, y=[meta["chance"]] * len(layers), name="chance", mode="lines",
                                 line=dict(color="black", dash="dot", width=1)), row=1, col=1)
    keys = ([("shifted", "solid"), ("mismatched target text", "dash"), ("unshifted", "dot")] if eq6
            else [("aligned", "solid"), ("mismatched, all pairs t ≠ u", "dash")])
    for name, dash in keys:  # the right panel's line styles, in the legend
        fig.add_trace(go.Scatter(x=[None], y=[None], name=name, mode="lines", line=dict(color="grey", dash=dash)),
                      row=1, col=len(titles))
    if panels:
        fig.update_yaxes(title_text="share of source texts retrieving their translation", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="mean cosine to the target", row=1, col=len(titles))
    fig.update_xaxes(title_text="layer")
    headline = ""
    if result.contrast is not None and "retrieval" in result.contrast.index:
        c = result.contrast.loc["retrieval"]
        headline = (f"<br><sub>retrieval into {c['reference']} minus the best other target ({c['best_other']}), mean over "
                    f"layers: {c['value']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]; {c['reference']} top at "
                    f"{int(c['layers_on_top'])} of {int(c['n_layers'])} layers</sub>")
    fig.update_layout(title=_title("Dominance (Fig. 7)", meta) + headline, width=520 + 420 * (len(titles) - 1),
                      height=560, margin=dict(t=110), legend=dict(font=dict(size=11), tracegroupgap=4))
    return fig
