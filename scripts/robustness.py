r"""Is LAPE's layer profile a property of the model? The same selection under other budgets, texts and top rates.

Statistics are additive, so each budget is collected once, in parts that start where the previous one stopped
(``lapelens collect --skip-tokens``), and a condition is the merge of its parts:

=============  ================================================================  ===========================
part           command (``--model M --out PART`` added)                           tokens per language
=============  ================================================================  ===========================
help_0_8k      ``lapelens collect --corpus embedded:help --tokens-per-language 8192``                       0 - 8,192
help_8k_32k    ``... --corpus embedded:help --skip-tokens 8192 --tokens-per-language 24576``        8,192 - 32,768
help_32k_128k  ``... --corpus embedded:help --skip-tokens 32768 --tokens-per-language 98304``     32,768 - 131,072
books_0_32k    ``... --corpus embedded:books --tokens-per-language 32768``                          0 - 32,768
books_32k_128k ``... --corpus embedded:books --skip-tokens 32768 --tokens-per-language 98304``    32,768 - 131,072
=============  ================================================================  ===========================

``embedded:help`` is the LibreOffice help and UI text of the embedded corpus, ``embedded:books`` its three
Debian books. (The default ``embedded`` corpus lists the help pages first, so its first 128k tokens per language
are the same help text: the real-model runs of ``lapelens reproduce`` saw help text only.)

For every condition and ``top_rate`` in 0.01, 0.02, 0.05 the script selects LAPE neurons and reports the share
of the selected (language, neuron) pairs in the first, middle and last third of the layers
(:meth:`lapelens.LanguageNeurons.layer_shares`), the share in the first and in the last layer, and the Jaccard
index of the selected pairs with the reference condition (help text, 32k tokens, top_rate 0.01).

    python scripts/robustness.py --model smollm2-135m --parts runs/robustness/smollm2-135m \
        --out figures/smollm2-135m/robustness --save-counts    # table, figure, and the counts it used
    python scripts/robustness.py --model smollm2-135m --out figures/smollm2-135m/robustness --check

``--save-counts`` writes each part's firing counts in the official ``activation.{lang}.train.{part}`` format
(counts only, no activation sums: what LAPE reads) into ``OUT/counts/``; ``--check`` recomputes the table from
those committed counts and fails if it differs from the committed ``robustness.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

PARTS = ("help_0_8k", "help_8k_32k", "help_0_32k", "help_32k_128k", "books_0_32k", "books_32k_128k")
#: Condition -> (text, tokens per language, the ways its parts can be merged, first found first). A condition
#: none of whose ways was collected for a model is left out of its table; ``help_0_32k`` is the 32k help budget
#: collected in one part.
CONDITIONS = {
    "help 8k": ("help", 8192, (("help_0_8k",),)),
    "help 32k": ("help", 32768, (("help_0_8k", "help_8k_32k"), ("help_0_32k",))),
    "help 128k": ("help", 131072, (("help_0_8k", "help_8k_32k", "help_32k_128k"),)),
    "books 32k": ("books", 32768, (("books_0_32k",),)),
    "books 128k": ("books", 131072, (("books_0_32k", "books_32k_128k"),)),
}
TOP_RATES = (0.01, 0.02, 0.05)
REFERENCE = ("help 32k", 0.01)


def load_parts(parts_dir: Path | None, counts_dir: Path, languages: list[str]) -> dict:
    """Part name -> ActivationStats, from ``lapelens collect`` folders or from the committed official counts."""
    import lapelens
    from lapelens.stats import ActivationStats

    out = {}
    for part in PARTS:
        if parts_dir is not None:
            if (parts_dir / part / "stats.json").is_file():  # a part still being collected has only a checkpoint
                out[part] = lapelens.load(parts_dir / part)
        elif any(counts_dir.glob(f"activation.*.train.{part}")):
            out[part] = ActivationStats.from_official(counts_dir, part, languages)
    return out


def pairs(neurons) -> set[tuple[int, int, int]]:
    """The selected (language, layer, neuron) triples."""
    return set(map(tuple, neurons.mask.nonzero().tolist()))


def table(parts: dict, languages: list[str]) -> tuple[pd.DataFrame, dict]:
    """One row per (condition, top_rate); also the selections themselves, for the figure."""
    import lapelens

    rows, selections, merged = [], {}, {}
    for name, (_text, _tokens, ways) in CONDITIONS.items():
        used = next((way for way in ways if all(part in parts for part in way)), None)
        if used is None:
            continue
        merged[name] = used
        stats = parts[used[0]]
        for part in used[1:]:
            stats = stats.merge(parts[part])
        stats = stats.select(languages)
        for rate in TOP_RATES:
            selections[name, rate] = lapelens.identify(stats, "lape", top_rate=rate)
    if not selections:
        raise SystemExit(f"none of the parts {', '.join(PARTS)} was found")
    reference = pairs(selections.get(REFERENCE, next(iter(selections.values()))))
    for (name, rate), sel in selections.items():
        text, tokens, _ = CONDITIONS[name]
        used = merged[name]
        shares = sel.layer_shares(3)
        per_layer = sel.per_layer().sum(axis=1)
        chosen = pairs(sel)
        union = chosen | reference
        rows.append(
            {
                "condition": name,
                "text": text,
                "tokens_per_language": tokens,
                "top_rate": rate,
                "parts": "+".join(used),
                "pairs": len(chosen),
                "first_third": shares["first"],
                "middle_third": shares["middle"],
                "last_third": shares["last"],
                "first_layer": per_layer.iloc[0] / per_layer.sum(),
                "last_layer": per_layer.iloc[-1] / per_layer.sum(),
                "jaccard_vs_reference": len(chosen & reference) / len(union) if union else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index(["condition", "top_rate"]), selections


def figure(frame: pd.DataFrame, selections: dict, model: str):
    """Left: the thirds of every condition as stacked bars. Right: the per-layer share at top_rate 0.01."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from lapelens.figures.style import model_label

    labels = [f"{c}, {r:g}" for c, r in frame.index]
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.45, 0.55],
        horizontal_spacing=0.12,
        subplot_titles=(
            "Share of selected pairs by third of the layers",
            "Share of selected pairs per layer (top_rate 0.01)",
        ),
    )
    for column, color in (("first_third", "#4c78a8"), ("middle_third", "#bab0ac"), ("last_third", "#e45756")):
        fig.add_trace(
            go.Bar(
                y=labels,
                x=frame[column].tolist(),
                orientation="h",
                name=column.replace("_", " "),
                marker_color=color,
                text=[f"{v:.0%}" for v in frame[column]],
                textposition="inside",
                legendgroup="thirds",
                legendgrouptitle_text="layers",
            ),
            row=1,
            col=1,
        )
    for name in dict.fromkeys(name for name, _ in selections):
        sel = selections[name, 0.01]
        per_layer = sel.per_layer().sum(axis=1)
        fig.add_trace(
            go.Scatter(
                x=list(per_layer.index),
                y=(per_layer / per_layer.sum()).tolist(),
                mode="lines+markers",
                name=name,
                legendgroup="conditions",
                legendgrouptitle_text="text, tokens per language",
            ),
            row=1,
            col=2,
        )
    fig.update_layout(
        barmode="stack",
        width=1300,
        height=max(520, 120 + 26 * len(labels)),
        title=f"LAPE layer profile under other budgets, texts and top rates — {model_label(model)}",
        legend={"font": {"size": 11}, "tracegroupgap": 14},
    )
    fig.update_xaxes(title_text="share", tickformat=".0%", range=[0, 1], row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="layer", row=1, col=2)
    fig.update_yaxes(title_text="share of pairs", tickformat=".0%", row=1, col=2)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model the statistics are of (for titles)")
    parser.add_argument("--parts", type=Path, help="folder holding the five `lapelens collect` part folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for robustness.csv, the figure and counts/")
    parser.add_argument("--languages", default="en,zh,fr,es,vi,id,ja")
    parser.add_argument("--save-counts", action="store_true", help="also write the parts' counts into OUT/counts/")
    parser.add_argument(
        "--check", action="store_true", help="recompute from OUT/counts/ and compare with OUT/robustness.csv"
    )
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args(argv)
    start = time.time()
    languages = args.languages.split(",")
    counts = args.out / "counts"
    parts = load_parts(None if args.check else args.parts, counts, languages)
    frame, selections = table(parts, languages)
    if args.check:
        committed = pd.read_csv(args.out / "robustness.csv", index_col=[0, 1])
        fresh = pd.read_csv(pd.io.common.StringIO(frame.to_csv()), index_col=[0, 1])
        pd.testing.assert_frame_equal(committed, fresh)
        print(f"{args.out / 'robustness.csv'} recomputes from {counts} ({time.time() - start:.0f} s)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "robustness.csv")
    if args.save_counts:
        for part, stats in parts.items():
            stats.select(languages).to_official(counts, part)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(frame.drop(columns=["parts"]))
    if not args.no_figure:
        from lapelens.figures import write_figure

        write_figure(figure(frame, selections, args.model), args.out / "robustness.html")
    print(f"wrote {args.out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
