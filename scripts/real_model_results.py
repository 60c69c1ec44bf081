"""After ``lapelens reproduce --model NAME --out RUN``: the results the README shows for a real model.

Writes into ``--figures`` (e.g. ``figures/smollm2-135m``):
- ``lape.neuron.pth``: the LAPE neurons in the official ``identify.py`` format (languages en, zh,
  fr, es, vi, id, ja), for the official scripts or ``scripts/check_official_mask.py``;
- every table of the run (``RUN/tables/*.csv``);
- ``split_half_stability.csv``: LAPE on the even vs the odd chunks of the same statistics tokens
  (:mod:`lapelens.evaluate.stability`), and a check that the two halves merge exactly into the
  run's one-pass statistics (counts equal).

    python scripts/real_model_results.py runs/smollm2-135m --figures figures/smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--figures", type=Path, required=True)
    p.add_argument("--no-stability", action="store_true", help="skip the split-half collection")
    args = p.parse_args()
    import lapelens
    from lapelens.evaluate.stability import split_half_stability

    start = time.time()
    cfg = json.loads((args.run / "config.json").read_text())
    args.figures.mkdir(parents=True, exist_ok=True)
    lape = lapelens.LanguageNeurons.load(args.run / "neurons_lape")
    lape.subset(list(lapelens.PAPER_LANGUAGES)).to_official(args.figures / "lape.neuron.pth")
    for csv in sorted((args.run / "tables").glob("*.csv")):
        shutil.copy(csv, args.figures / csv.name)
    for name in ("config.json", "summary.json"):
        if (args.run / name).is_file():
            shutil.copy(args.run / name, args.figures / name)
    for csv in [*(args.run / "ses").glob("*.csv"), *(args.run / "dominance").glob("*.csv")]:
        shutil.copy(csv, args.figures / csv.name)
    from lapelens.evaluate.perplexity import PerturbationResult

    for folder in sorted(args.run.glob("perturb_*")):
        result = PerturbationResult.load(folder)
        result.relative.to_csv(args.figures / f"{folder.name}_relative.csv")
        low, high = result.interval("relative")
        low.to_csv(args.figures / f"{folder.name}_relative_low.csv")
        high.to_csv(args.figures / f"{folder.name}_relative_high.csv")
    if args.no_stability:
        return
    stats = lapelens.ActivationStats.load(args.run / "stats")
    model = lapelens.load_model(cfg["model"])
    texts = lapelens.load_corpus(cfg["corpus"], split="train", languages=list(cfg["languages"]))
    result = split_half_stability(model, texts, cfg["tokens_per_language"], cfg["seq_len"], top_rate=cfg["top_rate"])
    merged = result.merged()
    order = [merged.languages.index(l) for l in stats.languages]
    exact = torch.equal(merged.count[order], stats.count) and torch.equal(merged.n[order], stats.n)
    rel = ((merged.act_sum[order] - stats.act_sum).abs().max() / stats.act_sum.abs().max()).item()
    table = result.table
    table.to_csv(args.figures / "split_half_stability.csv")
    print(table.round(3).to_string())
    print(
        f"halves merge to the run's statistics: counts equal {exact}; activation sums max rel. diff {rel:.1e}; "
        f"{time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
