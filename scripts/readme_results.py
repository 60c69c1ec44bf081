"""Write (or check) the generated result blocks of the README and the docs from the files in ``figures/<model>/``.

Every number of a block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` comes from
files; nothing is typed by hand. ``BLOCKS`` says which file holds each block:

- ``README.md``, ``summary``: one row per model of ``SUMMARY_MODELS`` from its ``summary.json`` (LAPE
  against random on the deactivated language, the layer thirds) and its ``ses.csv`` when that holds the
  standardized measure; a model whose folder is absent is a row saying "not run".
- ``docs/results.md``:
  - ``smollm2-135m``, ``gemma-3-270m``, ``qwen2.5-coder-0.5b``: the CSV/JSON files that
    ``scripts/real_model_results.py`` copied out of a ``lapelens reproduce`` run (its ``config.json``
    and ``summary.json`` included);
  - ``embedded``, ``embedded-steering-limits``: ``figures/embedded/*.csv`` and, for the numbers no CSV
    holds (LAPE's diagonal with its intervals, the ratio sweep, SES), the data of the run's own figures
    (``fig2_perturb_lape.html``, ``fig4_sweep.html``, ``fig6_ses.html``). The settings the text states are
    read from ``lapelens.ReproduceConfig`` and checked against what the CSVs record: if the defaults
    change, the check fails; re-run ``lapelens reproduce`` rather than only regenerate the text;
  - ``robustness``: ``figures/<model>/robustness/robustness.csv`` (``scripts/robustness.py``) of every
    model that has one.
- ``docs/embedded-model.md``, ``embedded-model``: ``lapelens/data/model/training_summary.json``.

A table is read from ``figures/<model>/NAME`` or ``figures/<model>/tables/NAME``. ``--check`` fails
(exit 1) when a file differs from what the data say; ``tests/test_readme.py`` runs it.

    python scripts/readme_results.py            # rewrite the blocks
    python scripts/readme_results.py --check    # compare only
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
    "gemma-3-270m": "Gemma 3 270M (Q4_K_M GGUF, dequantized)",
    "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B-Instruct (AWQ, then Q4_K_M GGUF, dequantized)",
}
#: The README's rows, in order: folder name under figures/ -> label.
SUMMARY_MODELS = {
    "embedded": "embedded (8 × 1,024 neurons)",
    "smollm2-135m": "SmolLM2-135M (30 × 1,536)",
    "gemma-3-270m": "Gemma 3 270M (18 × 2,048)",
    "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B (24 × 4,864)",
}
METHOD_NAMES = {
    "lape": "LAPE",
    "lave": "LAVE",
    "lap": "LAP",
    "ap": "AP (Kojima)",
    "random": "random (LAPE's sizes)",
    "pv": "PV",
}


def _pct(x: float, signed: bool = True) -> str:
    return f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _path(folder: Path, name: str) -> Path:
    """``folder/name``, else ``folder/tables/name`` or the result's own folder (``ses/ses.csv``,
    ``dominance/dominance_summary.csv``), as a run lays them out; the first if none exists."""
    stage = name.removesuffix(".csv").split("_")[0]
    for candidate in (folder / name, folder / "tables" / name, folder / stage / name, folder / "ses" / name):
        if candidate.is_file():
            return candidate
    return folder / name


def _has(folder: Path, name: str) -> bool:
    return _path(folder, name).is_file()


def _csv(folder: Path, name: str, **kw) -> pd.DataFrame:
    return pd.read_csv(_path(folder, name), **kw)


def _relative(folder: Path, method: str, column: str) -> pd.DataFrame:
    """A perturbation matrix (row: language deactivated, column: evaluated) of ``column`` (``relative``,
    ``relative_low``, ``relative_high``): from the result folder ``perturb_METHOD/table.csv`` a run
    publishes, else the flat ``perturb_METHOD_relative[_low|_high].csv`` of older folders."""
    table = folder / f"perturb_{method}" / "table.csv"
    if table.is_file():
        frame = pd.read_csv(table)
        frame = frame[frame["perturbed"] != "none"]
        return frame.pivot(index="perturbed", columns="evaluated", values=column)
    return _csv(folder, f"perturb_{method}_{column}.csv", index_col=0)


def _deactivated_generation(folder: Path) -> pd.DataFrame:
    return _csv(folder, "deactivated_generation.csv", header=[0, 1], index_col=0).dropna(how="all")


def _deactivated_generation_table(dg: pd.DataFrame, langs: list[str]) -> str:
    """Tables 1/2: share in the prompt's language and the output's perplexity, per condition."""
    rows = [
        [f"{label}, {name}"] + [f"{dg.loc[l, (cond, metric)]:.1f}" for l in langs]
        for label, metric in (("share", "share_in_language"), ("PPL", "ppl"))
        for name, cond in (("normal", "normal"), ("LAPE deactivated", "deactivated"), ("random deactivated", "random"))
    ]
    return _table(["condition"] + langs, rows)


@functools.cache
def _partial(folder: Path) -> dict | None:
    """A model run stage by stage with the CLI (``lapelens collect`` / ``identify`` / ``perturb``, and
    ``scripts/ses_runs.py``) rather than by ``reproduce``: its LAPE neurons and the LAPE and random perturbation
    results, read from ``neurons_lape/``, ``perturb_lape/`` and ``perturb_random/``; None if they are not all there."""
    parts = {"neurons": folder / "neurons_lape", "lape": folder / "perturb_lape", "random": folder / "perturb_random"}
    if not all(p.is_dir() for p in parts.values()):
        return None
    import lapelens

    return {key: lapelens.load(path) for key, path in parts.items()}


def _partial_row(label: str, folder: Path, run: dict) -> list[str]:
    lape, rand = run["lape"].summary()["diag_mean_relative"], run["random"].summary()["diag_mean_relative"]
    per_layer = run["neurons"].per_layer().sum(axis=1).astype(float)
    thirds = " / ".join(f"{100 * v:.0f}%" for v in _thirds(per_layer.sort_index()))
    n = int(run["neurons"].mask.sum())
    change = f"{_pct(lape)} vs {_pct(rand)} ({lape / rand:.1f}×)"
    return [label, f"{n:,}", change, thirds, _standardized_ses(folder)]


def render_partial(name: str, folder: Path, run: dict) -> str:
    """The block of a model run stage by stage (see :func:`_partial`)."""
    neurons, lape, rand = run["neurons"], run["lape"], run["random"]
    langs = list(neurons.languages)
    per_layer = neurons.per_layer()
    summed = per_layer.sum(axis=1)
    per_lang = per_layer.sum(axis=0)
    meta = lape.meta
    out = [
        f"**{MODELS.get(name, name)}**, run stage by stage: `lapelens collect --corpus embedded:help "
        f"--tokens-per-language 32768`, `lapelens identify --method lape` (`top_rate` "
        f"{neurons.meta.get('top_rate', 0.01)}) and `--method random`, `lapelens perturb --tokens-per-language "
        f"{meta.get('tokens_per_language', 2048)}` on each set, `scripts/ses_runs.py` and "
        "`scripts/stage_figures.py`.",
        "LAPE neurons per language: "
        + ", ".join(f"{l} {int(per_lang[l])}" for l in langs)
        + ". Per layer, summed over languages: "
        + ", ".join(str(int(v)) for v in summed)
        + "; by thirds of the layers "
        + " / ".join(f"{100 * v:.0f}%" for v in _thirds(summed.astype(float)))
        + ".",
    ]
    for key, result in (("LAPE", lape), ("random (LAPE's sizes)", rand)):
        from lapelens.constants import UNPERTURBED

        table = result.relative.drop(index=UNPERTURBED, errors="ignore")
        rows = [[r] + [_pct(table.loc[r, c]) for c in table.columns] for r in table.index]
        out.append(
            f"Perplexity change (%) when {key} neurons of the row's language are deactivated, per evaluated "
            f"language (Fig. 2):\n\n" + _table(["deactivated"] + list(table.columns), rows)
        )
    out.append(
        f"Mean change on the deactivated language: LAPE {_pct(lape.summary()['diag_mean_relative'])}, random "
        f"{_pct(rand.summary()['diag_mean_relative'])}; on the other languages: LAPE "
        f"{_pct(lape.summary()['offdiag_mean_relative'])}, random {_pct(rand.summary()['offdiag_mean_relative'])}."
    )
    if _has(folder, "ses.csv"):
        out += _similarity_sentences(folder, "SES (Fig. 6)")
    return "\n\n".join(out)


def render(name: str, folder: Path) -> str:
    if not (folder / "summary.json").is_file() and (run := _partial(folder)) is not None:
        return render_partial(name, folder, run)
    if not (folder / "summary.json").is_file():
        return (
            f"Not run: `figures/{name}/` is not in the repository (`scripts/real_model_results.py` copies a "
            f"`lapelens reproduce --model {name}` run there)."
        )
    cfg = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    times = summary.get("timings_seconds", {})
    langs = list(cfg["languages"])
    out = [
        f"**{MODELS.get(name, name)}**, `lapelens reproduce --model {name}`: LAPE `top_rate` {cfg['top_rate']}, "
        f"{cfg['tokens_per_language']:,} statistics tokens and {cfg['eval_tokens_per_language']:,} held-out tokens "
        f"per language, `seq_len` {cfg['seq_len']}; stage times: statistics {times.get('stats', '?')} s, "
        f"LAPE perturbation {times.get('perturb_lape', '?')} s, total {round(sum(times.values()) / 60)} min."
    ]

    per_lang = _csv(folder, "lape_per_language.csv", index_col=0)
    per_layer = _csv(folder, "lape_per_layer.csv", index_col=0).sum(axis=1)
    n_layers = len(per_layer)
    k = max(1, n_layers // 6)
    low, high, total = per_layer.iloc[:k].sum(), per_layer.iloc[-k:].sum(), per_layer.sum()
    jac = _csv(folder, "lape_jaccard_between_languages.csv", index_col=0)
    out.append(
        "LAPE neurons per language (Table 3): "
        + ", ".join(f"{l} {int(per_lang.loc[l, 'neurons'])}" for l in langs)
        + f". Per layer, summed over languages (Fig. 5): {', '.join(str(int(v)) for v in per_layer)}; the first {k} "
        f"layers hold {_pct(low / total, False)} and the last {k} {_pct(high / total, False)}. "
        f"zh–ja Jaccard overlap {jac.loc['zh', 'ja']:.2f}."
    )

    comp = _csv(folder, "perturbation_summary.csv", index_col=0)
    rows = []
    for m in comp.index:
        r = comp.loc[m]
        vs = r.get("ratio_vs_reference")
        rows.append(
            [
                METHOD_NAMES.get(m, m),
                _pct(r["diag_mean_relative"]),
                _pct(r["offdiag_mean_relative"]),
                f"{r['diag_offdiag_ratio']:.2f}" + (f" ({vs:.1f}× random)" if pd.notna(vs) and m != "random" else ""),
                f"{int(r['diag_largest_in_column'])} / {int(r['languages'])}",
            ]
        )
    out.append(
        "Perplexity change when a language's neurons are deactivated (Fig. 2/3; relative change, held-out text):\n\n"
        + _table(
            ["method", "diagonal mean", "off-diagonal mean", "diag / off-diag", "diag largest in its column"], rows
        )
    )

    rel, lo, hi = (_relative(folder, "lape", part) for part in ("relative", "relative_low", "relative_high"))
    rows = [
        [f"**{s}**"] + [(f"**{_pct(rel.loc[s, l])}**" if s == l else _pct(rel.loc[s, l])) for l in langs] for s in langs
    ]
    rows.append(["95% interval (diag.)"] + [f"{100 * lo.loc[l, l]:.0f}–{100 * hi.loc[l, l]:.0f}" for l in langs])
    out.append(
        "LAPE's matrix (row: language deactivated; column: language evaluated):\n\n"
        + _table(["deactivated \\ evaluated"] + langs, rows)
    )

    if _has(folder, "split_half_stability.csv"):
        st = _csv(folder, "split_half_stability.csv", index_col=0)
        out.append(
            "Split-half stability (beyond the paper; LAPE on the even vs the odd chunks of the same tokens): Jaccard "
            + ", ".join(f"{l} {st.loc[l, 'jaccard']:.2f}" for l in langs if l in st.index)
            + f" (random sets of these sizes: ≤ {st['jaccard_random'].max():.3f})."
        )
    if _has(folder, "jaccard_lape_vs_methods.csv"):
        agree = _csv(folder, "jaccard_lape_vs_methods.csv", index_col=0).mean()
        out.append(
            "Agreement with LAPE (mean Jaccard over languages): "
            + ", ".join(f"{METHOD_NAMES.get(m, m).split(' ')[0]} {v:.2f}" for m, v in agree.items())
            + "."
        )

    ses = _csv(folder, "ses.csv", index_col=0)
    if "retrieval" in ses.columns:  # a run with the standardized measure (similarity schema 2)
        out += _similarity_sentences(folder, "SES (Fig. 6)")
    elif "mismatched" in ses.columns:
        gap = ses["mean"] - ses["mismatched"]
        best = int(gap.idxmax())
        out.append(
            f"SES (Fig. 6): aligned minus mismatched-text control is largest at layer {best} "
            f"({ses.loc[best, 'mean']:.2f} vs {ses.loc[best, 'mismatched']:.2f}); at the first layer "
            f"{ses['mean'].iloc[0]:.2f} vs {ses['mismatched'].iloc[0]:.2f}, at the last {ses['mean'].iloc[-1]:.2f} vs "
            f"{ses['mismatched'].iloc[-1]:.2f}."
        )
        dom = _csv(folder, "dominance.csv", index_col=0)
        if _has(folder, "dominance_mismatched.csv"):
            ctrl = _csv(folder, "dominance_mismatched.csv", index_col=0)
            gain = (dom - ctrl).mean().sort_values(ascending=False)
            out.append(
                "Dominance (Fig. 7, Eq. 6): mean over layers of shifted SES minus the mismatched control, per target: "
                + ", ".join(f"{l} {v:.3f}" for l, v in gain.items())
                + "."
            )

    unc = _csv(folder, "steer_unconditional.csv", index_col=0)
    koj = _csv(folder, "kojima.csv", index_col=0) if _has(folder, "kojima.csv") else None
    rows = [
        ["before"] + [f"{unc.loc[l, 'before']:.2f}" for l in langs],
        [f"LAPE steering, scale {cfg['steer_scale']}" + (" +off" if cfg.get("steer_deactivate_others") else "")]
        + [f"{unc.loc[l, 'after']:.2f}" for l in langs],
    ]
    if koj is not None:
        rows.append(["Kojima: AP top/bottom-k pinned to medians"] + [f"{koj.loc[l, 'after']:.2f}" for l in langs])
    out.append(
        f"Unconditional generation from BOS ({int(unc['n_samples'].iloc[0])} samples per target, "
        f"{cfg['unconditional_tokens']} tokens, temperature 1): share in the target language (langdetect), Table 4:\n\n"
        + _table(["setting"] + langs, rows)
    )
    if _has(folder, "deactivated_generation.csv"):
        out.append(
            "Generation under deactivation (Tables 1/2; prompts in each language, greedy): share of the output in "
            "the prompt's language, and the output's perplexity under the unperturbed model:\n\n"
            + _deactivated_generation_table(_deactivated_generation(folder), langs)
        )
    pr = _csv(folder, "steer_prompted.csv")
    out.append(
        f"Prompted steering (Table 5, {int(pr['n_prompts'].iloc[0])} prompts per pair, greedy, "
        f"{cfg['max_new_tokens']} tokens): mean target share over the {len(pr)} source–target pairs "
        f"{pr['before'].mean():.2f} before, {pr['steered'].mean():.2f} steered, "
        f"{pr['deactivated_and_steered'].mean():.2f} with the source's neurons also deactivated."
    )
    return "\n\n".join(out)


# ---- the embedded model ------------------------------------------------------------------------
def _ses_sentence(ses: pd.DataFrame, label: str) -> str:
    """SES of the standardized measure (ses.csv, similarity schema 2): where aligned - mismatched peaks."""
    best = int(ses["gap"].idxmax())
    row, first, last = ses.loc[best], ses.iloc[0], ses.iloc[-1]
    return (
        f"{label}, standardized cosines: aligned minus mismatched texts is largest at layer {best} of "
        f"0–{len(ses) - 1}, {row['gap']:.2f} [{row['gap_low']:.2f}, {row['gap_high']:.2f}] (first layer "
        f"{first['gap']:.2f}, last {last['gap']:.2f}); top-1 retrieval of the translation there "
        f"{row['retrieval']:.2f} (first {first['retrieval']:.2f}, last {last['retrieval']:.2f})."
    )


def _similarity_sentences(folder: Path, label: str) -> list[str]:
    """SES of the standardized measure, then dominance when the folder holds it."""
    out = [_ses_sentence(_csv(folder, "ses.csv", index_col=0), label)]
    if _has(folder, "dominance_contrast.csv"):
        summary = _csv(folder, "dominance_summary.csv", index_col=0)
        out.append(_dominance_sentence(summary, _csv(folder, "dominance_contrast.csv", index_col=0)))
    return out


def _dominance_sentence(summary: pd.DataFrame, contrast: pd.DataFrame) -> str:
    """Dominance as retrieval into each target (dominance_summary.csv, dominance_contrast.csv)."""
    c = contrast.loc["retrieval"]
    order = summary["retrieval"].sort_values(ascending=False)
    return (
        "Dominance (Fig. 7): retrieval into each target, mean over sources and layers: "
        + ", ".join(f"{l} {v:.2f}" for l, v in order.items())
        + f"; {c['reference']} minus the best other target ({c['best_other']}) {c['value']:+.3f} "
        f"[{c['low']:+.3f}, {c['high']:+.3f}], {c['reference']} best at {int(c['layers_on_top'])} of "
        f"{int(c['n_layers'])} layers."
    )


def _figure_traces(path: Path) -> dict[str, dict]:
    """The traces of a plotly HTML figure written by the run, by name (heatmaps by type), with
    plotly's packed arrays (``{"dtype", "bdata", "shape"}``) decoded."""
    html = path.read_text()
    start = html.index("[", html.index("Plotly.newPlot("))
    traces, _ = json.JSONDecoder().raw_decode(html[start:])

    def unpack(v):
        if isinstance(v, dict) and "bdata" in v:
            a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            return a.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else a
        return v

    return {t.get("name") or t["type"]: {k: unpack(v) for k, v in t.items()} for t in traces}


def _small_pct(x: float) -> str:
    """A relative change as a signed percentage; one significant digit when it rounds to 0.0%."""
    return _pct(x) if abs(100 * x) >= 0.05 or x == 0 else f"{100 * x:+.1g}%"


def _run_config():
    """The default settings of ``lapelens reproduce`` on the embedded model (what the run used)."""
    sys.path.insert(0, str(ROOT))
    import lapelens

    return lapelens.ReproduceConfig(out="").resolved()


def render_embedded(folder: Path) -> str:
    cfg = _run_config()
    langs = list(cfg.languages)
    unc = _csv(folder, "steer_unconditional.csv", index_col=0)
    pr = _csv(folder, "steer_prompted.csv")
    dg = _deactivated_generation(folder)
    grid = _csv(folder, "steer_unconditional_grid.csv")
    # The settings stated below come from today's defaults: they must agree with what the run recorded.
    tokens_per_prompt = dg[("normal", "tokens")].iloc[0] / pr["n_prompts"].iloc[0]
    recorded = {
        "n_samples": unc["n_samples"].iloc[0],
        "n_prompts": pr["n_prompts"].iloc[0],
        "max_new_tokens": tokens_per_prompt,
        "unconditional_tokens": int(re.search(r"(\d+) tokens", grid["setting"].iloc[0]).group(1)),
        "steer_scale": float(re.search(r"--scale (\S+)", grid.iloc[1, 1]).group(1)),
    }
    differ = {k: (v, getattr(cfg, k)) for k, v in recorded.items() if v != getattr(cfg, k)}
    if differ:
        raise SystemExit(f"figures/embedded/ was not made with today's reproduce defaults (run, default): {differ}")

    out = [
        f"- Statistics: {cfg.tokens_per_language:,} tokens per language, {cfg.seq_len}-token chunks (every command's "
        f"default). LAPE `top_rate` {cfg.top_rate} (the embedded model's default; 0.01 for any other model).\n"
        f"- Perplexity: {cfg.eval_tokens_per_language:,} held-out tokens per language."
    ]

    per_lang = _csv(folder, "lape_per_language.csv", index_col=0)
    per_layer = _csv(folder, "lape_per_layer.csv", index_col=0).sum(axis=1)
    out.append(
        "**Neurons per language (LAPE, Table 3):** "
        + ", ".join(f"{l} {int(per_lang.loc[l, 'neurons'])}" for l in langs)
        + ".\nPer layer (summed over languages, Fig. 5): "
        + ", ".join(str(int(v)) for v in per_layer)
        + f": the skewed U, with {_pct(per_layer.iloc[0] / per_layer.sum(), False)} in the first layer, "
        f"{_pct(per_layer.iloc[-1] / per_layer.sum(), False)} in the last and {_pct(per_layer.iloc[1:-1].sum() / per_layer.sum(), False)} "
        f"in the {len(per_layer) - 2} between."
    )

    comp = _csv(folder, "perturbation_summary.csv", index_col=0).sort_values("diag_mean_relative", ascending=False)
    names = {
        **METHOD_NAMES,
        "ap": f"AP (k = {cfg.ap_k} top + {cfg.ap_k} bottom)",
        "pv": f"PV ({cfg.pv_steps} tuning steps)",
    }
    rows = []
    for m, r in comp.iterrows():
        meaningful = r["diag_mean_relative"] > 0 and r["offdiag_mean_relative"] > 0
        ratio = (
            f"{r['diag_offdiag_ratio']:.2f}" + (f" ({r['ratio_vs_reference']:.1f}× random)" if m != "random" else "")
            if meaningful
            else "–"
        )
        rows.append(
            [
                names.get(m, m),
                _small_pct(r["diag_mean_relative"]),
                _small_pct(r["offdiag_mean_relative"]),
                ratio,
                f"{int(r['diag_largest_in_column'])} / {int(r['languages'])}",
            ]
        )
    out.append(
        '**Perplexity change when a language\'s neurons are deactivated (Fig. 2/3).** "Diagonal" means the\n'
        'language\'s own text; "off-diagonal" means the other languages. Relative change = (perturbed − base) / base.\n\n'
        + _table(
            ["method", "diagonal mean", "off-diagonal mean", "diag / off-diag", "diag largest in its column"], rows
        )
    )

    import lapelens

    lape = lapelens.load(folder / "perturb_lape")
    z = lape.relative.drop(index="none")
    low, high = (frame.drop(index="none") for frame in lape.interval("relative"))
    bounds = [(100 * low.loc[l, l], 100 * high.loc[l, l]) for l in z.columns]
    out.append(
        "LAPE's diagonal, with paired-bootstrap 95% intervals over chunks (`perturb_lape/`):\n\n"
        + _table(
            [""] + list(z.columns),
            [
                ["relative change"] + [_pct(z.loc[l, l]) for l in z.columns],
                ["95% interval"] + [f"{float(a):.1f}–{float(b):.1f}" for a, b in bounds],
            ],
        )
    )
    beaten = [col for col in z.columns if z[col].idxmax() != col]
    for col in beaten:
        top = z[col].idxmax()
        line = (
            f"Deactivating {top} also hurts {col} ({_pct(z.loc[top, col])}), more than {col}'s own neurons do "
            f"({_pct(z.loc[col, col])}): {'the one column' if len(beaten) == 1 else 'one of the columns'} where\n"
            "the diagonal is not the largest."
        )
        if {top, col} == {"zh", "ja"}:
            line += (
                " Chinese and Japanese share Han characters, and with one token per\n"
                "character they share those tokens too."
            )
        out.append(line)

    sweep = lapelens.load(folder / "sweep")
    out.append(
        f"**Selection-ratio sweep (Fig. 4, {cfg.sweep_target}; `sweep/`):** deactivating the "
        f"{cfg.sweep_target} neurons that LAPE selects at `top_rate` "
        + ", ".join(f"{100 * x:g}" for x in sweep.ratios)
        + f"% ({', '.join(str(int(n)) for n in sweep.n_neurons)} neurons) "
        f"raises {cfg.sweep_target} perplexity by "
        + ", ".join(_pct(y) for y in sweep.value("relative")[cfg.sweep_target])
        + "."
    )

    before = (unc["before"] * unc["n_samples"]).round().astype(int).sort_values(ascending=False)
    out.append(
        f"**Generation from BOS alone ({int(unc['n_samples'].iloc[0])} samples, temperature 1, {cfg.unconditional_tokens} "
        "tokens; the `before` column of `steer_unconditional.csv`):** langdetect says "
        + ", ".join(f"{l} {n}" for l, n in before.items())
        + f", other {int(unc['n_samples'].iloc[0] - before.sum())}."
    )

    rows = [
        [f"**{r['setting']}**" if "(default)" in r["setting"] else r["setting"]]
        + [f"{r[l]:.2f}" for l in langs]
        + [f"**{int(r['n_at_least_0.8'])}**" if "(default)" in r["setting"] else str(int(r["n_at_least_0.8"]))]
        for _, r in grid.iterrows()
    ]
    out.append(
        f"**Unconditional steering (Table 4 / Kojima's setting), {int(unc['n_samples'].iloc[0])} samples per target, "
        "share in the target\nlanguage (langdetect).** Each target neuron is set to *scale × its mean activation on that "
        'language*\n(the mean of `act_fn(gate)` over all tokens). "+off" also deactivates the other languages\'\n'
        "neurons. Temperature 1. `steer_unconditional_grid.csv` gives each row's `lapelens steer` flags.\n\n"
        + _table(["setting"] + langs + ["≥ 0.8"], rows)
    )

    koj = _csv(folder, "kojima.csv", index_col=0)
    change = koj["after"] - koj["before"]
    moved = change.abs() > 0.05
    out.append(
        "Kojima's median pinning of AP neurons (`kojima.csv`) moves the shares little (before → after: "
        + ", ".join(f"{l} {koj.loc[l, 'before']:.2f} → {koj.loc[l, 'after']:.2f}" for l in koj.index[moved])
        + (f", the others ±{change[~moved].abs().max():.2f}" if (~moved).any() else "")
        + ")."
    )

    out.append(
        f"**Prompted steering (Table 5, {int(pr['n_prompts'].iloc[0])} prompts per source–target pair, greedy, "
        f"{cfg.max_new_tokens} tokens, scale {cfg.steer_scale:g}):** the mean\ntarget share over the {len(pr)} pairs rises "
        f"from {pr['before'].mean():.2f} to {pr['steered'].mean():.2f} when steering, and to "
        f"{pr['deactivated_and_steered'].mean():.2f} when the source's\nneurons are also deactivated."
    )

    out.append(
        f"**Generation under deactivation (Tables 1/2, {int(pr['n_prompts'].iloc[0])} prompts, greedy, "
        f"{cfg.max_new_tokens} tokens):** the share of output\nin the prompt's language, and the output's perplexity "
        "under the unperturbed model:\n\n" + _deactivated_generation_table(dg, langs)
    )

    if _has(folder, "ses.csv") and "retrieval" in _csv(folder, "ses.csv", index_col=0).columns:
        out += _similarity_sentences(folder, "**SES (Fig. 6; `fig6_ses.html`)**")
        return "\n\n".join(out)
    ses = _figure_traces(folder / "fig6_ses.html")
    mean = pd.Series(ses["mean"]["y"], index=ses["mean"]["x"])
    control = pd.Series(
        ses["mean, mismatched texts (control)"]["y"], index=ses["mean, mismatched texts (control)"]["x"]
    )
    top = mean.round(2)
    peak = list(top.index[top == top.max()])
    where = f"layers {peak[0]}–{peak[-1]}" if len(peak) > 1 else f"layer {peak[0]}"
    gap = mean - control
    out.append(
        f"**SES (Fig. 6; `fig6_ses.html`):** the mean cosine of parallel sentences is highest at {where} "
        f"({mean.max():.2f}). It falls\nto {mean.iloc[-1]:.2f} at layer {mean.index[-1]}. The mismatched-text control is only "
        f"{gap.min():.2f}–{gap.max():.2f} lower at every layer, so this\nmodel shows no mid-layer peak of language-independent "
        "representation."
    )
    return "\n\n".join(out)


def render_embedded_steering_limits(folder: Path) -> str:
    """The Limitations bullet on unconditional steering, from ``steer_unconditional_grid.csv``."""
    grid = _csv(folder, "steer_unconditional_grid.csv").set_index("setting")
    flags = grid.columns[0]
    langs = list(_run_config().languages)
    default = grid.loc[next(s for s in grid.index if "(default)" in s)]
    paper = grid.loc[next(s for s in grid.index if s.startswith("scale 1 "))]
    seeds = grid.loc[[s for s in grid.index if s.startswith("same, seed")]]
    steered = grid.loc[[s for s in grid.index if not s.startswith("before")], langs]
    scale = re.search(r"--scale (\S+)", default[flags]).group(1)
    tokens = re.search(r"--max-new-tokens (\d+)", default[flags]).group(1)
    n_default, n_paper = int(default["n_at_least_0.8"]), int(paper["n_at_least_0.8"])
    more = ", ".join(
        f"{int(n)} with {s.removeprefix('same, ')}" for s, n in seeds["n_at_least_0.8"].items() if n != n_default
    )
    weakest = steered.max().idxmin()
    lucky = [
        f"{l} reaches 0.8 only with {s.removeprefix('same, ')}"
        for l in langs
        if default[l] < 0.8
        for s in seeds.index
        if seeds.loc[s, l] >= 0.8 and (steered.drop(s)[l] < 0.8).all()
    ]
    return (
        f"- Unconditional steering needs {scale}× the paper's activation value and {tokens}-token samples to reach a 0.8\n"
        f"  target share for {n_default} of {len(langs)} languages"
        + (f" ({more})" if more else "")
        + f"; at the paper's value (1×) {'no language reaches' if n_paper == 0 else f'{n_paper} reach'} it\n"
        f"  ({paper[langs].min():.2f}–{paper[langs].max():.2f}). {weakest} reaches at most {steered[weakest].max():.2f} under every "
        "setting" + "".join(f", and {x}" for x in lucky) + " (`figures/embedded/steer_unconditional_grid.csv`)."
    )


def render_embedded_model(path: Path) -> str:
    """The embedded model's validation table, from its ``training_summary.json``."""
    per = json.loads(path.read_text())["per_language"]
    langs = list(_run_config().languages)
    return _table(
        [""] + langs,
        [
            ["model PPL / unigram PPL"] + [f"{per[l]['ratio']:.3f}" for l in langs],
            ["bits per byte"] + [f"{per[l]['bits_per_byte']:.2f}" for l in langs],
        ],
    )


# ---- the README's one table and the robustness runs -----------------------------------------------
def _thirds(per_layer: pd.Series) -> list[float]:
    """Share of the selected (language, neuron) pairs in each third of the layers, cut as
    ``LanguageNeurons.layer_shares`` cuts them (``numpy.array_split``)."""
    total = per_layer.sum()
    return [per_layer.iloc[g].sum() / total for g in np.array_split(np.arange(len(per_layer)), 3)]


def _standardized_ses(folder: Path) -> str:
    """The peak of aligned minus mismatched standardized cosines, or a dash when the run kept only the raw
    cosine (a ``ses.csv`` without ``gap``, or only the figure)."""
    if not _has(folder, "ses.csv"):
        return "– (raw cosine only)" if (folder / "fig6_ses.html").is_file() else "–"
    ses = _csv(folder, "ses.csv", index_col=0)
    if "gap" not in ses.columns:
        return "– (raw cosine only)"
    best = int(ses["gap"].idxmax())
    return f"{ses.loc[best, 'gap']:.2f} at layer {best} of 0–{len(ses) - 1}"


def render_summary(root: Path) -> str:
    """The README's results table: one row per model of ``SUMMARY_MODELS``."""
    rows = []
    for name, label in SUMMARY_MODELS.items():
        folder = root / "figures" / name
        if not (folder / "summary.json").is_file() and (run := _partial(folder)) is not None:
            rows.append(_partial_row(label, folder, run))
            continue
        if not (folder / "summary.json").is_file():
            rows.append([label, "not run", "–", "–", "–"])
            continue
        summary = json.loads((folder / "summary.json").read_text())
        lape, rand = summary["perturbation"]["lape"], summary["perturbation"].get("random")
        change = _pct(lape["diag_mean_relative"])
        if rand is not None:
            change += f" vs {_pct(rand['diag_mean_relative'])} ({lape['diag_mean_relative'] / rand['diag_mean_relative']:.1f}×)"
        per_layer = pd.Series(summary["lape_per_layer"]).astype(float)
        per_layer.index = per_layer.index.astype(int)
        thirds = " / ".join(f"{100 * v:.0f}%" for v in _thirds(per_layer.sort_index()))
        rows.append(
            [label, f"{sum(summary['lape_per_language'].values()):,}", change, thirds, _standardized_ses(folder)]
        )
    return _table(
        [
            "model",
            "LAPE neurons, summed over languages",
            "PPL change on the deactivated language: LAPE vs random",
            "LAPE neurons in the first / middle / last third of the layers",
            "SES, standardized: largest aligned − mismatched gap",
        ],
        rows,
    )


def _robustness_models(root: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in (root / "figures").glob("*/robustness/robustness.csv"))


def render_robustness(root: Path) -> str:
    """The layer profile under other budgets, texts and top rates, per model (``scripts/robustness.py``)."""
    models = _robustness_models(root)
    if not models:
        return (
            "No robustness run is in the repository: `scripts/robustness.py --out figures/<model>/robustness` "
            "writes one."
        )
    out = []
    for name in models:
        frame = pd.read_csv(root / "figures" / name / "robustness" / "robustness.csv", index_col=[0, 1])
        rows = [
            [
                condition,
                f"{rate:g}",
                f"{int(r['pairs']):,}",
                f"{100 * r['first_third']:.0f}% / {100 * r['middle_third']:.0f}% / {100 * r['last_third']:.0f}%",
                f"{100 * r['first_layer']:.1f}%",
                f"{100 * r['last_layer']:.1f}%",
                f"{r['jaccard_vs_reference']:.2f}",
            ]
            for (condition, rate), r in frame.iterrows()
        ]
        out.append(
            f"**{MODELS.get(name, name)}** (`figures/{name}/robustness/`):\n\n"
            + _table(
                [
                    "text, tokens per language",
                    "top_rate",
                    "pairs",
                    "first / middle / last third",
                    "first layer",
                    "last layer",
                    "Jaccard vs help 32k, 0.01",
                ],
                rows,
            )
        )
    return "\n\n".join(out)


@dataclass(frozen=True)
class Block:
    """A generated block: the file (from the repository root) that holds it, and how it is rendered."""

    file: str
    make: Callable[[Path], str]


#: Every generated block, by name.
BLOCKS = {
    "summary": Block("README.md", render_summary),
    "embedded": Block("docs/results.md", lambda root: render_embedded(root / "figures" / "embedded")),
    "embedded-steering-limits": Block(
        "docs/results.md", lambda root: render_embedded_steering_limits(root / "figures" / "embedded")
    ),
    **{
        name: Block("docs/results.md", lambda root, name=name: render(name, root / "figures" / name)) for name in MODELS
    },
    "robustness": Block("docs/results.md", render_robustness),
    "embedded-model": Block(
        "docs/embedded-model.md",
        lambda root: render_embedded_model(root / "lapelens" / "data" / "model" / "training_summary.json"),
    ),
}
FILES = tuple(dict.fromkeys(b.file for b in BLOCKS.values()))


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- results:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /results:{re.escape(name)} -->)", re.S)


def missing(text: str, file: str) -> list[str]:
    """The blocks of ``file`` whose markers ``text`` lacks (a deleted marker must not pass the check)."""
    return [name for name, b in BLOCKS.items() if b.file == file and not _pattern(name).search(text)]


def rewrite(text: str, root: Path, file: str) -> str:
    """``text`` (the content of ``file``) with each of its blocks rendered again from ``root``."""
    for name, b in BLOCKS.items():
        pattern = _pattern(name)
        if b.file == file and pattern.search(text):
            block = b.make(root)
            text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    args = p.parse_args()
    status = 0
    for file in FILES:
        path = ROOT / file
        old = path.read_text(encoding="utf-8")
        if missing(old, file):
            print(f"{file} lacks the generated blocks {missing(old, file)}", file=sys.stderr)
            status = 1
            continue
        new = rewrite(old, ROOT, file)
        if args.check:
            if new != old:
                print(f"{file}'s results differ from figures/*/ (run scripts/readme_results.py)", file=sys.stderr)
                status = 1
        elif new != old:
            path.write_text(new, encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
