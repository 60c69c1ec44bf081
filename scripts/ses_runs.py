"""The SES and dominance numbers of docs/similarity.md: every measure on one model's embeddings, side by side.

Embeds the first ``--n-texts`` aligned texts of the embedded corpus' valid split (text no model here was trained
on) once, or reads embeddings saved by an earlier run, then computes Fig. 6 (similarity) and Fig. 7 (dominance)
under five settings: standardized (held out; the default), standardized fit on all texts, raw (the paper's plain
cosine), centered, and standardized with the first content token left out of the mean. The default's result is
saved in ``OUT/``, the others in ``OUT/<measure>_<vectors>[_first_token_out]/``; the default's figures (Fig. 6,
Fig. 7) go to ``--figures`` (default ``OUT``); the condensed report is printed.

    python scripts/ses_runs.py smollm2-135m --out figures/smollm2-135m/similarity
    python scripts/ses_runs.py gemma-3-270m --out figures/gemma-3-270m/similarity
    python scripts/ses_runs.py qwen2.5-coder-0.5b --out figures/qwen2.5-coder-0.5b/ses --figures figures/qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lapelens
from lapelens.evaluate.embeddings import SentenceEmbeddings, sentence_embeddings
from lapelens.evaluate.similarity import DominanceResult, SimilarityResult
from lapelens.figures import write_figures

#: (measure, vectors, first content token in the mean)
SETTINGS = (
    ("standardized", "heldout", True),
    ("standardized", "all", True),
    ("raw", "heldout", True),
    ("centered", "heldout", True),
    ("standardized", "heldout", False),
)


def name_of(measure: str, vectors: str, first: bool) -> str:
    """The folder of a setting's result under OUT ("" for the default)."""
    if (measure, vectors, first) == SETTINGS[0]:
        return ""
    return f"{measure}_{vectors}" + ("" if first else "_first_token_out")


def embed(model_name: str, n_texts: int, saved: Path | None) -> SentenceEmbeddings:
    if saved is not None and (saved / "embeddings.json").is_file():
        return SentenceEmbeddings.load(saved)
    model = lapelens.load_model(model_name)
    languages = list(lapelens.PAPER_LANGUAGES)
    parallel = lapelens.load_parallel("embedded", split="valid", languages=languages).head(n_texts)
    emb = sentence_embeddings(model, parallel, languages, progress=True)
    emb.meta.update(parallel="embedded", split="valid")
    if saved is not None:
        emb.save(saved)
    return emb


def report(name: str, root: Path) -> str:
    """The condensed numbers of one model's five results."""
    std, raw = SimilarityResult.load(root), SimilarityResult.load(root / "raw_heldout")
    alls = SimilarityResult.load(root / "standardized_all")
    out = SimilarityResult.load(root / "standardized_heldout_first_token_out")
    dom, dom_raw = DominanceResult.load(root), DominanceResult.load(root / "raw_heldout")
    s, r, p, pa, po = std.ses, raw.ses, std.peak(), alls.peak(), out.peak()
    lines = [
        f"### {name}: {std.meta['n_texts']} texts, layers 0..{len(s) - 1}",
        f"raw: mean {r['mean'].min():.3f}-{r['mean'].max():.3f}, mismatched {r['mismatched'].min():.3f}-"
        f"{r['mismatched'].max():.3f}, gap {r['gap'].min():.3f}-{r['gap'].max():.3f}, retrieval "
        f"{r['retrieval'].min():.3f}-{r['retrieval'].max():.3f} (chance {std.meta['chance']:.3f})",
        f"standardized (held out): gap first {s['gap'].iloc[0]:.3f} -> peak {p['gap']:.3f} [{p['gap_low']:.3f}, "
        f"{p['gap_high']:.3f}] at layer {p.name} -> last {s['gap'].iloc[-1]:.3f}; mismatched "
        f"{s['mismatched'].min():.4f}..{s['mismatched'].max():.4f}; retrieval first {s['retrieval'].iloc[0]:.3f} -> "
        f"at peak {p['retrieval']:.3f} [{p['retrieval_low']:.3f}, {p['retrieval_high']:.3f}] (max "
        f"{s['retrieval'].max():.3f} at {int(s['retrieval'].idxmax())}) -> last {s['retrieval'].iloc[-1]:.3f}",
        f"standardized (all): peak gap {pa['gap']:.3f} at layer {pa.name}; mean/mismatched/retrieval there "
        f"{pa['mean']:.3f}/{pa['mismatched']:.4f}/{pa['retrieval']:.3f}",
        f"first content token out of the mean: peak gap {po['gap']:.3f} at layer {po.name} (in: {p['gap']:.3f})",
    ]
    e, t = std.energy.iloc[1:-1], std.top_dimensions.iloc[1:-1]
    lines.append(
        f"diagnostics (layers 1..{len(s) - 2}): shared-mean energy {e['shared'].min():.2f}-{e['shared'].max():.2f}, "
        f"language means {e['language'].min():.3f}-{e['language'].max():.3f}; top dimension of the shared mean "
        f"{ {int(k): int(v) for k, v in t['dim_1'].value_counts().items()} }, top-3 share "
        f"{t['top_share'].min():.2f}-{t['top_share'].max():.2f}"
    )
    sm = dom.summary
    lines.append(
        "dominance (standardized, held out): retrieval into target [95% CI]: "
        + ", ".join(
            f"{c} {sm.loc[c, 'retrieval']:.3f} [{sm.loc[c, 'retrieval_low']:.3f}, {sm.loc[c, 'retrieval_high']:.3f}]"
            for c in sm.index
        )
    )
    for stat, row in dom.contrast.iterrows():
        lines.append(
            f"  en - best other ({row['best_other']}), {stat}: {row['value']:+.3f} [{row['low']:+.3f}, "
            f"{row['high']:+.3f}], en on top at {row['layers_on_top']}/{row['n_layers']} layers"
        )
    c = dom_raw.contrast.loc["retrieval"]
    lines.append(
        f"raw: retrieval en - best other ({c['best_other']}) {c['value']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]; "
        "Eq. 6 shifted cosine, mean over layers: "
        + ", ".join(f"{k} {v:.3f}" for k, v in dom_raw.shifted.mean().sort_values(ascending=False).items())
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--n-texts", type=int, default=100)
    parser.add_argument("--embeddings", type=Path, help="read (or save) the embeddings here")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figures", type=Path, help="folder for Fig. 6 and 7 (default: OUT)")
    args = parser.parse_args()
    start = time.time()
    emb = embed(args.model, args.n_texts, args.embeddings)
    print(f"[{args.model}] embeddings: {time.time() - start:.0f} s", flush=True)
    for measure, vectors, first in SETTINGS:
        e = emb.with_first_token(first)
        ses, dom = e.similarity(None, measure, vectors), e.dominance(measure, vectors)
        ses.save(args.out / name_of(measure, vectors, first))
        dom.save(args.out / name_of(measure, vectors, first))
        if (measure, vectors, first) == SETTINGS[0]:
            write_figures({"fig6_ses": ses.figure(), "fig7_dominance": dom.figure()}, args.figures or args.out)
    print(report(args.model, args.out))
    print(f"[{args.model}] total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
