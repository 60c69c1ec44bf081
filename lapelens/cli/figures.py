"""``lapelens figures RUN_DIR``: redraw every figure of a finished ``reproduce`` run from its saved results."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.figures.export import FORMATS

    parser = subparsers.add_parser(
        "figures",
        help="Redraw every figure of a finished `lapelens reproduce` run (HTML, PNG, SVG) from its saved results.",
        description="Load the saved results of a reproduce run folder (neurons_lape, perturb_*, sweep, ses, "
        "dominance, steer_*, deactivated_generation, kojima; no model, nothing recomputed) and write each "
        "figure as NAME.html (offline: it loads plotly.min.js from the same folder), NAME.png and NAME.svg "
        "(rendered by kaleido in a local Chromium).",
    )
    parser.add_argument("run_dir", type=Path, help="Folder written by `lapelens reproduce --out`.")
    parser.add_argument("--out", type=Path, default=None, help="Folder for the figures (default: RUN_DIR/figures, "
                        "where reproduce writes them).")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="Comma-separated subset of %(default)s (PNG and SVG need Chromium).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    from lapelens.figures import run_figures, write_figures
    from lapelens.figures.export import FORMATS

    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise LapelensError(f"--formats takes a comma-separated subset of {','.join(FORMATS)}; got {args.formats!r}.")
    start = time.time()
    figs = run_figures(args.run_dir)
    out = args.out if args.out is not None else args.run_dir / "figures"
    written = write_figures(figs, out, formats)
    print(f"wrote {len(written)} files ({len(figs)} figures x {', '.join(formats)}) to {out} "
          f"in {time.time() - start:.1f} s: {', '.join(figs)}")
