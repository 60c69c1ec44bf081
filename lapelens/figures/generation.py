"""Generation figures: shares of outputs in a language, each with its Wilson 95% interval.

A share here is k of n generations (n = 10 to 100), so its interval is wide (±0.14 at n = 50,
±0.31 at n = 10) and is drawn with it. A result is a ``GenerationResult`` (its ``summary``,
``samples``, ``meta`` and ``share_columns``; nothing here imports it).

- :func:`share_bars`: unconditional steering and Kojima's pinning (Table 4 from BOS), before and
  after, one group per target language; any flat summary with share columns.
- :func:`steering_heatmaps`: Table 5, source x target heatmaps before, steered, and steered with
  the source's neurons deactivated, the share in every cell.
- :func:`deactivation_figure`: Tables 1 and 2, the share of outputs in the prompt's language and
  the outputs' perplexity under the unperturbed model, per condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lapelens.figures.style import CELL_HEIGHT, finish, span, title_text, wilson

#: Colours of the conditions, in the order a result lists them (before / after ...).
PALETTE = ("#9e9e9e", "#1f77b4", "#d62728", "#2ca02c")
_BAR_TEXT = {"size": 10}


def _label(column: Any) -> str:
    return (column[0] if isinstance(column, tuple) else str(column)).replace("_", " ")


def _sampling(meta: dict) -> str:
    s = meta.get("sampling") or {}
    how = (
        f"sampled at temperature {s.get('temperature', 1):g}"
        if s.get("do_sample", True)
        else f"greedy (repetition penalty {s.get('repetition_penalty', 1):g})"
    )
    return f"{s.get('max_new_tokens', '?')} new tokens, {how}; language by langdetect"


def _neurons(meta: dict) -> str:
    counts = meta.get("neurons") or {}
    return span(counts.values()) if counts else "?"


def _half_widths(shares: np.ndarray, n: np.ndarray) -> str:
    """The range of the intervals' half-widths, for a caption."""
    low, high = wilson(shares, n)
    half = (high - low) / 2
    half = half[np.isfinite(half)]
    if not half.size:
        return "?"
    return (
        f"±{half.min():.2f}"
        if np.isclose(half.min(), half.max(), atol=0.005)
        else f"±{half.min():.2f} to ±{half.max():.2f}"
    )


def _interval_caption(shares: np.ndarray, n: np.ndarray, what: str) -> str:
    return f"{what}: Wilson 95% intervals ({_half_widths(shares, n)}; each one in the hover)."


def _of(share: float | int, n: float | int) -> str:
    return f"{round(share * n)} of {n:g}" if np.isfinite(share * n) else "n not recorded"


def _bars(
    fig: Any,
    x: list[str],
    shares: pd.DataFrame,
    n: np.ndarray,
    row: int | None = None,
    col: int | None = None,
    legend: bool = True,
) -> None:
    """Grouped bars of the share columns, their Wilson intervals, and each value above its interval."""
    import plotly.graph_objects as go

    where = {"row": row, "col": col} if row is not None else {}
    for k, column in enumerate(shares.columns):
        y = shares[column].to_numpy(dtype=np.float64)
        low, high = wilson(y, n)
        colour = PALETTE[k % len(PALETTE)]
        hover = [
            f"{_label(column)}, {xi}: {v:.2f} [{lo:.2f}, {hi:.2f}], {_of(v, m)}"
            for xi, v, lo, hi, m in zip(x, y, low, high, n)
        ]
        fig.add_trace(
            go.Bar(
                x=x,
                y=np.round(y, 6),
                name=_label(column),
                marker_color=colour,
                offsetgroup=str(k),
                legendgroup=str(column),
                showlegend=legend,
                hovertext=hover,
                hoverinfo="text",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": np.round(high - y, 6),
                    "arrayminus": np.round(y - low, 6),
                    "thickness": 1,
                    "width": 3,
                },
            ),
            **where,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=np.round(high + 0.015, 6),
                text=[f"{v:.2f}" for v in y],
                mode="text",
                textposition="top center",
                textfont=_BAR_TEXT,
                offsetgroup=str(k),
                showlegend=False,
                legendgroup=str(column),
                hoverinfo="skip",
                name=f"{_label(column)} (values)",
            ),
            **where,
        )


def _legend_top(fig: Any, above: int = 4) -> Any:
    """The legend in one row above the plot area, ``above`` pixels over it (clear of subplot
    titles); call it once the figure has its size."""
    area = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    fig.update_layout(
        barmode="group",
        scattermode="group",
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1 + above / area, "yanchor": "bottom"},
    )
    return fig


def share_bars(
    result: Any,
    figure: str = "Share of outputs in the target language",
    columns: Sequence[Any] | None = None,
    n_column: str | None = None,
    names: dict[str, str] | None = None,
) -> Any:
    """Bars of the share columns (``result.share_columns`` or ``columns``, shown as ``names``),
    one group per row of the summary, with Wilson intervals on ``n`` generations (``n_column``,
    else ``n_samples`` or ``n_prompts``)."""
    import plotly.graph_objects as go

    summary, meta = result.summary, result.meta
    cols = list(columns) if columns is not None else list(result.share_columns)
    x = [" → ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in summary.index]
    n = _counts(result, n_column)
    fig = go.Figure()
    _bars(fig, x, summary[cols].rename(columns=names or {}), n)
    levels = [str(name) for name in summary.index.names if name]
    fig.update_layout(
        xaxis={"title": " → ".join(levels), "tickmode": "array", "tickvals": x},
        yaxis={"title": "share of outputs in the target language", "range": [0, 1.12]},
    )
    shares = summary[cols].to_numpy(dtype=np.float64)
    caption = [
        f"n = {span(n)} generations per bar{_prompting(meta)}, {_sampling(meta)}.",
        _intervention(meta),
        _interval_caption(shares, np.broadcast_to(n[:, None], shares.shape), "Error bars"),
    ]
    return _legend_top(
        finish(
            fig,
            title_text(figure, meta.get("method"), meta.get("model")),
            caption,
            width=160 + len(x) * (34 * len(cols) + 24),
            height=430,
            top=96,
        )
    )


def _counts(result: Any, column: str | None = None) -> np.ndarray:
    """Generations per row of the summary."""
    summary = result.summary
    for name in ([column] if column else []) + ["n_samples", "n_prompts"]:
        if name in summary.columns:
            return summary[name].to_numpy(dtype=np.float64)
    per = result.meta.get("n_samples") or result.meta.get("n_prompts")
    if isinstance(per, dict):
        return np.array([float(per.get(str(i), np.nan)) for i in summary.index])
    if isinstance(per, (int, float)):
        return np.full(len(summary), float(per))
    return np.full(len(summary), np.nan)


def _prompting(meta: dict) -> str:
    if meta.get("prompt_tokens"):
        return f" (prompts: the first {meta['prompt_tokens']} tokens of aligned texts)"
    return " from BOS alone"


def _intervention(meta: dict) -> str:
    if meta.get("scale") is not None:
        others = (
            "; every other language's neurons deactivated at the same time" if meta.get("deactivate_others") else ""
        )
        return (
            f"{meta.get('method', '?')} neurons per language: {_neurons(meta)}, set to {meta['scale']:g} x their mean "
            f"activation on the target language{others}."
        )
    if meta.get("neurons"):
        return (
            f"{meta.get('method', '?')} neurons per language: {_neurons(meta)} (top-k and bottom-k), pinned to their "
            "median activation on the target language."
        )
    return ""


def steering_heatmaps(result: Any) -> Any:
    """Table 5: share of outputs in the target language, source (rows) x target (columns), before,
    steered, and steered with the source's neurons deactivated; the value in every cell."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    summary, meta = result.summary, result.meta
    cols = list(result.share_columns)
    sources = list(dict.fromkeys(summary.index.get_level_values(0)))
    langs = list(dict.fromkeys(sources + list(summary.index.get_level_values(1))))
    targets = [l for l in langs if l in set(summary.index.get_level_values(1))]
    n = _counts(result, "n_prompts")
    titles = {
        "before": "before (no intervention)",
        "steered": "target's neurons steered",
        "deactivated_and_steered": "steered + source's deactivated",
    }
    fig = make_subplots(
        rows=1, cols=len(cols), subplot_titles=[titles.get(str(c), _label(c)) for c in cols], horizontal_spacing=0.06
    )
    for k, column in enumerate(cols, 1):
        z = np.full((len(sources), len(targets)), np.nan)
        count = np.full_like(z, np.nan)
        for (src, tgt), v, m in zip(summary.index, summary[column].to_numpy(dtype=np.float64), n):
            z[sources.index(src), targets.index(tgt)] = v
            count[sources.index(src), targets.index(tgt)] = m
        low, high = wilson(z, count)
        text = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
        hover = [
            [
                f"{s} → {t}: {'–' if np.isnan(z[i, j]) else f'{z[i, j]:.2f} [{low[i, j]:.2f}, {high[i, j]:.2f}], n = {count[i, j]:g}'}"
                for j, t in enumerate(targets)
            ]
            for i, s in enumerate(sources)
        ]
        fig.add_trace(
            go.Heatmap(
                z=np.round(z, 6),
                x=targets,
                y=sources,
                text=text,
                texttemplate="%{text}",
                textfont={"size": 11},
                hovertext=hover,
                hoverinfo="text",
                coloraxis="coloraxis",
                name=titles.get(str(column), _label(column)),
            ),
            row=1,
            col=k,
        )
        fig.update_xaxes(title_text="target", tickmode="array", tickvals=targets, row=1, col=k)
        fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=sources, showticklabels=k == 1, row=1, col=k)
    fig.update_yaxes(title_text="source (prompt's language)", row=1, col=1)
    fig.update_layout(
        plot_bgcolor="white",
        coloraxis={
            "colorscale": "Blues",
            "cmin": 0,
            "cmax": 1,
            "colorbar": {"title": {"text": "share in the target", "side": "right"}},
        },
    )
    shares = summary[cols].to_numpy(dtype=np.float64)
    caption = [
        f"n = {span(n)} prompts per cell (the first {meta.get('prompt_tokens', '?')} tokens of aligned texts in the "
        f"source language), {_sampling(meta)}.",
        _intervention(meta).replace(
            " on the target language.", " on the target language; right: the source's neurons also deactivated."
        ),
        _interval_caption(shares, np.broadcast_to(n[:, None], shares.shape), "Cells"),
    ]
    return finish(
        fig,
        title_text(
            "Table 5: share of outputs in the target language, prompted in the source language",
            meta.get("method"),
            meta.get("model"),
        ),
        caption,
        width=150 + len(cols) * (40 * len(langs) + 40),
        height=110 + CELL_HEIGHT * 0.8 * len(sources),
        top=80,
    )


def deactivation_figure(result: Any) -> Any:
    """Tables 1 and 2: per language, the share of outputs in the prompt's language (Wilson
    intervals) and the outputs' perplexity under the unperturbed model, per condition."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    summary, meta = result.summary, result.meta
    conditions = list(dict.fromkeys(c[0] for c in result.share_columns))
    langs = [str(l) for l in summary.index]
    n = _prompt_counts(result)
    method = meta.get("method", "?")
    names = {
        "normal": "normal",
        "deactivated": f"its {method} neurons deactivated",
        "random": "random neurons (same sizes) deactivated",
    }
    shares = pd.DataFrame(
        {names.get(c, c): summary[(c, "share_in_language")].to_numpy(dtype=np.float64) for c in conditions}
    )
    fig = make_subplots(
        rows=2,
        cols=1,
        vertical_spacing=0.16,
        subplot_titles=["share of outputs in the prompt's language", "perplexity of the outputs (unperturbed model)"],
    )
    _bars(fig, langs, shares, n, row=1, col=1)
    for k, c in enumerate(conditions):
        ppl = summary[(c, "ppl")].to_numpy(dtype=np.float64)
        tokens = (
            summary[(c, "tokens")].to_numpy(dtype=np.float64)
            if (c, "tokens") in summary.columns
            else np.full(len(langs), np.nan)
        )
        fig.add_trace(
            go.Bar(
                x=langs,
                y=np.round(ppl, 6),
                name=names.get(c, c),
                marker_color=PALETTE[k % len(PALETTE)],
                offsetgroup=str(k),
                legendgroup=str((c, "share_in_language")),
                showlegend=False,
                text=[f"{v:.1f}" for v in ppl],
                textposition="outside",
                textfont=_BAR_TEXT,
                hovertext=[
                    f"{names.get(c, c)}, {l}: PPL {v:.3g} over {t:g} tokens" for l, v, t in zip(langs, ppl, tokens)
                ],
                hoverinfo="text",
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(title_text="share in the prompt's language", range=[0, 1.12], row=1, col=1)
    fig.update_yaxes(title_text="PPL", row=2, col=1)
    fig.update_xaxes(title_text="prompt's language", tickmode="array", tickvals=langs)
    tokens = [summary[(c, "tokens")] for c in conditions if (c, "tokens") in summary.columns]
    caption = [
        f"n = {span(n)} prompts per language and condition{_prompting(meta)}, {_sampling(meta)}.",
        f"{method} neurons per language: {_neurons(meta)}"
        + ("; random: the same number per language, drawn at random" if "random" in conditions else "")
        + ".",
        _interval_caption(shares.to_numpy(), np.broadcast_to(n[:, None], shares.shape), "Shares")
        + (
            f" PPL: token-weighted over a language's outputs ({span(pd.concat(tokens))} generated tokens)."
            if tokens
            else ""
        ),
    ]
    return _legend_top(
        finish(
            fig,
            title_text("Tables 1, 2: generation with the prompt's language deactivated", method, meta.get("model")),
            caption,
            width=200 + len(langs) * (32 * len(conditions) + 20),
            height=760,
            top=124,
        ),
        30,
    )


def _prompt_counts(result: Any) -> np.ndarray:
    """Prompts per language of a generation-under-deactivation result: recorded per language, else
    counted from its samples."""
    per = result.meta.get("n_prompts")
    langs = [str(l) for l in result.summary.index]
    if isinstance(per, dict):
        return np.array([float(per.get(l, np.nan)) for l in langs])
    samples = result.samples
    if {"language", "condition"} <= set(samples.columns) and len(samples):
        first = samples["condition"].iloc[0]
        counts = samples[samples["condition"] == first].groupby("language").size()
        return np.array([float(counts.get(l, np.nan)) for l in langs])
    return np.full(len(langs), np.nan)


def generation_figure(result: Any) -> Any:
    """The figure that fits a generation result's summary: heatmaps for (source, target) rows,
    the two panels for (condition, metric) columns, bars otherwise."""
    if result.summary.index.nlevels == 2:
        return steering_heatmaps(result)
    if result.summary.columns.nlevels == 2:
        return deactivation_figure(result)
    return share_bars(result)
