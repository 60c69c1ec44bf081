"""Write (or check) the README's real-model results from the CSV/JSON files in ``figures/<model>/``.

Every number of the README section between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``
comes from the files that ``scripts/real_model_results.py`` copied out of a ``lapelens reproduce``
run; nothing is typed by hand. ``--check`` fails (exit 1) when the README differs from what the
files say; ``tests/test_readme.py`` runs it.

    python scripts/readme_results.py            # rewrite the sections
    python scripts/readme_results.py --check    # compare only
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
          "gemma-3-270m": "Gemma 3 270M (Q4_K_M GGUF, dequantized)"}
METHOD_NAMES = {"lape": "LAPE", "lave": "LAVE", "lap": "LAP", "ap": "AP (Kojima)", "random": "random (LAPE's sizes)", "pv": "PV"}


def _pct(x: float, signed: bool = True) -> str:
    return f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _csv(folder: Path, name: str, **kw) -> pd.DataFrame:
    return pd.read_csv(folder / name, **kw)


def render(name: str, folder: Path) -> str:
    cfg = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    times = summary.get("timings_seconds", {})
    langs = list(cfg["languages"])
    out = [f"**{MODELS.get(name, name)}**, `lapelens reproduce --model {name}`: LAPE `top_rate` {cfg['top_rate']}, "
           f"{cfg['tokens_per_language']:,} statistics tokens and {cfg['eval_tokens_per_language']:,} held-out tokens "
           f"per language, `seq_len` {cfg['seq_len']}; stage times: statistics {times.get('stats', '?')} s, "
           f"LAPE perturbation {times.get('perturb_lape', '?')} s, total {round(sum(times.values()) / 60)} min."]

    per_lang = _csv(folder, "lape_per_language.csv", index_col=0)
    per_layer = _csv(folder, "lape_per_layer.csv", index_col=0).sum(axis=1)
    n_layers = len(per_layer)
    k = max(1, n_layers // 6)
    low, high, total = per_layer.iloc[:k].sum(), per_layer.iloc[-k:].sum(), per_layer.sum()
    jac = _csv(folder, "lape_jaccard_between_languages.csv", index_col=0)
    out.append(
        "LAPE neurons per language (Table 3): " + ", ".join(f"{l} {int(per_lang.loc[l, 'neurons'])}" for l in langs)
        + f". Per layer, summed over languages (Fig. 5): {', '.join(str(int(v)) for v in per_layer)}; the first {k} "
        f"layers hold {_pct(low / total, False)} and the last {k} {_pct(high / total, False)}. "
        f"zh–ja Jaccard overlap {jac.loc['zh', 'ja']:.2f}.")

    comp = _csv(folder, "perturbation_summary.csv", index_col=0)
    rows = []
    for m in comp.index:
        r = comp.loc[m]
        vs = r.get("ratio_vs_reference")
        rows.append([METHOD_NAMES.get(m, m), _pct(r["diag_mean_relative"]), _pct(r["offdiag_mean_relative"]),
                     f"{r['diag_offdiag_ratio']:.2f}" + (f" ({vs:.1f}× random)" if pd.notna(vs) and m != "random" else ""),
                     f"{int(r['diag_largest_in_column'])} / {int(r['languages'])}"])
    out.append("Perplexity change when a language's neurons are deactivated (Fig. 2/3; relative change, held-out text):\n\n"
               + _table(["method", "diagonal mean", "off-diagonal mean", "diag / off-diag", "diag largest in its column"], rows))

    rel = _csv(folder, "perturb_lape_relative.csv", index_col=0)
    lo = _csv(folder, "perturb_lape_relative_low.csv", index_col=0)
    hi = _csv(folder, "perturb_lape_relative_high.csv", index_col=0)
    rows = [[f"**{s}**"] + [(f"**{_pct(rel.loc[s, l])}**" if s == l else _pct(rel.loc[s, l])) for l in langs] for s in langs]
    rows.append(["95% interval (diag.)"] + [f"{100 * lo.loc[l, l]:.0f}–{100 * hi.loc[l, l]:.0f}" for l in langs])
    out.append("LAPE's matrix (row: language deactivated; column: language evaluated):\n\n"
               + _table(["deactivated \\ evaluated"] + langs, rows))

    if (folder / "split_half_stability.csv").is_file():
        st = _csv(folder, "split_half_stability.csv", index_col=0)
        out.append("Split-half stability (beyond the paper; LAPE on the even vs the odd chunks of the same tokens): Jaccard "
                   + ", ".join(f"{l} {st.loc[l, 'jaccard']:.2f}" for l in langs if l in st.index)
                   + f" (random sets of these sizes: ≤ {st['jaccard_random'].max():.3f}).")
    if (folder / "jaccard_lape_vs_methods.csv").is_file():
        agree = _csv(folder, "jaccard_lape_vs_methods.csv", index_col=0).mean()
        out.append("Agreement with LAPE (mean Jaccard over languages): "
                   + ", ".join(f"{METHOD_NAMES.get(m, m).split(' ')[0]} {v:.2f}" for m, v in agree.items()) + ".")

    ses = _csv(folder, "ses.csv", index_col=0)
    if "mismatched" in ses.columns:
        gap = ses["mean"] - ses["mismatched"]
        best = int(gap.idxmax())
        out.append(f"SES (Fig. 6): aligned minus mismatched-text control is largest at layer {best} "
                   f"({ses.loc[best, 'mean']:.2f} vs {ses.loc[best, 'mismatched']:.2f}); at the first layer "
                   f"{ses['mean'].iloc[0]:.2f} vs {ses['mismatched'].iloc[0]:.2f}, at the last {ses['mean'].iloc[-1]:.2f} vs "
                   f"{ses['mismatched'].iloc[-1]:.2f}.")
    dom = _csv(folder, "dominance.csv", index_col=0)
    if (folder / "dominance_mismatched.csv").is_file():
        ctrl = _csv(folder, "dominance_mismatched.csv", index_col=0)
        gain = (dom - ctrl).mean().sort_values(ascending=False)
        out.append("Dominance (Fig. 7, Eq. 6): mean over layers of shifted SES minus the mismatched control, per target: "
                   + ", ".join(f"{l} {v:.3f}" for l, v in gain.items()) + ".")

    unc = _csv(folder, "steer_unconditional.csv", index_col=0)
    koj = _csv(folder, "kojima.csv", index_col=0) if (folder / "kojima.csv").is_file() else None
    rows = [["before"] + [f"{unc.loc[l, 'before']:.2f}" for l in langs],
            [f"LAPE steering, scale {cfg['steer_scale']}" + (" +off" if cfg.get("steer_deactivate_others") else "")]
            + [f"{unc.loc[l, 'after']:.2f}" for l in langs]]
    if koj is not None:
        rows.append(["Kojima: AP top/bottom-k pinned to medians"] + [f"{koj.loc[l, 'after']:.2f}" for l in langs])
    out.append(f"Unconditional generation from BOS ({int(unc['n_samples'].iloc[0])} samples per target, "
               f"{cfg['unconditional_tokens']} tokens, temperature 1): share in the target language (langdetect), Table 4:\n\n"
               + _table(["setting"] + langs, rows))
    if (folder / "deactivated_generation.csv").is_file():
        dg = pd.read_csv(folder / "deactivated_generation.csv", header=[0, 1], index_col=0).dropna(how="all")
        share = lambda cond: [f"{dg.loc[l, (cond, 'share_in_language')]:.1f}" for l in langs]  # noqa: E731
        ppl = lambda cond: [f"{dg.loc[l, (cond, 'ppl')]:.1f}" for l in langs]  # noqa: E731
        out.append("Generation under deactivation (Tables 1/2; prompts in each language, greedy): share of the output in "
                   "the prompt's language, and the output's perplexity under the unperturbed model:\n\n"
                   + _table(["condition"] + langs, [["share, normal"] + share("normal"), ["share, LAPE deactivated"] + share("deactivated"),
                                                    ["share, random deactivated"] + share("random"), ["PPL, normal"] + ppl("normal"),
                                                    ["PPL, LAPE deactivated"] + ppl("deactivated"), ["PPL, random deactivated"] + ppl("random")]))
    pr = _csv(folder, "steer_prompted.csv")
    out.append(f"Prompted steering (Table 5, {int(pr['n_prompts'].iloc[0])} prompts per pair, greedy, "
               f"{cfg['max_new_tokens']} tokens): mean target share over the {len(pr)} source–target pairs "
               f"{pr['before'].mean():.2f} before, {pr['steered'].mean():.2f} steered, "
               f"{pr['deactivated_and_steered'].mean():.2f} with the source's neurons also deactivated.")
    return "\n\n".join(out)


def rewrite(readme: str, root: Path) -> str:
    for name in MODELS:
        folder = root / "figures" / name
        pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /results:{re.escape(name)} -->)", re.S)
        if folder.is_dir() and pattern.search(readme):
            block = render(name, folder)
            readme = pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if the README differs")
    args = p.parse_args()
    path = ROOT / "README.md"
    old = path.read_text()
    new = rewrite(old, ROOT)
    if args.check:
        if new != old:
            print("README.md's results differ from figures/*/ (run scripts/readme_results.py)", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
