"""Fig. 5: a neuron set's neurons per layer, one line per language (the paper's skewed U shape).

A neuron set is a ``LanguageNeurons`` (read through ``per_layer()``, ``per_language()``,
``method`` and ``meta``; nothing here imports it).
"""

from __future__ import annotations

from typing import Any

from lapelens.figures.style import finish, span, title_text


def layers_figure(neurons: Any) -> Any:
    """Neurons per layer and language, with the selection's size and settings in the caption."""
    import plotly.graph_objects as go

    table = neurons.per_layer()
    fig = go.Figure(
        [
            go.Scatter(x=list(table.index), y=table[lang].tolist(), mode="lines+markers", name=lang)
            for lang in table.columns
        ]
    )
    fig.update_layout(
        xaxis={"title": "layer"},
        yaxis={"title": "neurons", "rangemode": "tozero"},
        legend={"title": {"text": "language"}, "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
    )
    meta, settings = neurons.meta, neurons.meta.get("settings") or {}
    total = neurons.n_layers * neurons.d_mlp
    rate = settings.get("top_rate")
    how = f"top_rate {rate:g}: " if rate is not None else ""
    selected = meta.get("selected", int(neurons.mask.any(dim=0).sum()))
    caption = [
        f"{how}{selected:,} neurons selected of {total:,} ({neurons.n_layers} layers x {neurons.d_mlp:,}); "
        f"per language {span(neurons.per_language()['neurons'])} (a neuron can belong to several languages).",
        f"Per layer, summed over languages: {span(table.sum(axis=1))}.",
    ]
    return finish(
        fig,
        title_text("Fig. 5: language-specific neurons per layer", neurons.method, meta.get("model")),
        caption,
        width=720,
        height=440,
    )
