"""Figures of a model run stage by stage with the CLI rather than by ``reproduce``.

A folder that holds ``lapelens identify`` outputs (``neurons_<method>/``) and ``lapelens perturb`` outputs
(``perturb_<method>/``) gets Fig. 2 for every perturbation result on one signed-log colour scale shared by all
of them (as ``reproduce`` draws a run's), Fig. 3 (the methods side by side) and Fig. 5 (LAPE's neurons per
layer), drawn by the same functions as a run's figures; nothing is recomputed.

    python scripts/stage_figures.py figures/qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lapelens
from lapelens.figures import write_figures
from lapelens.figures.perturbation import colour_range, compare_figure, heatmap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    results = {p.name.removeprefix("perturb_"): lapelens.load(p) for p in sorted(args.folder.glob("perturb_*"))}
    if not results:
        raise SystemExit(f"{args.folder} holds no perturb_<method>/ folder")
    scale = colour_range(list(results.values()))
    figures = {f"fig2_perturb_{m}": heatmap(r, scale=scale) for m, r in results.items()}
    if len(results) > 1:
        figures["fig3_perturb_methods"] = compare_figure(results)
    if (args.folder / "neurons_lape").is_dir():
        figures["fig5_layers"] = lapelens.load(args.folder / "neurons_lape").figure()
    write_figures(figures, args.folder)
    print(f"wrote {', '.join(figures)} into {args.folder}")


if __name__ == "__main__":
    main()
