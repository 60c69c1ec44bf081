"""``lapelens figures RUN_DIR``: redraw every figure of a finished ``reproduce`` run from its saved results."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.errors import LapelensError
from lapelens.lock import OUTPUT
from lapelens.figures.export import FORMATS


@dataclass(kw_only=True)
class FiguresConfig:
    run_dir: Path = field(metadata={"positional": True})
    """Folder written by `lapelens reproduce --out`."""
    out: Path | None = field(default=None, metadata={  # no lock for a run folder that is not there: it is refused
        **OUTPUT, "output_default": lambda args: args.run_dir / "figures" if args.run_dir.is_dir() else None})
    """Folder for the figures (default: RUN_DIR/figures, where reproduce writes them)."""
    formats: tuple[str, ...] = FORMATS
    """A subset of the formats (PNG and SVG need Chromium)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers, "figures", FiguresConfig, run,
        help="Redraw every figure of a finished `lapelens reproduce` run (HTML, PNG, SVG) from its saved results.",
        description="Load the saved results of a reproduce run folder (neurons_lape, perturb_*, sweep, ses, "
        "dominance, steer_*, deactivated_generation, kojima; no model, nothing recomputed) and write each "
        "figure as NAME.html (offline: it loads plotly.min.js from the same folder), NAME.png and NAME.svg "
        "(rendered by kaleido in a local Chromium).",
    )


def run(cfg: FiguresConfig) -> None:
    from lapelens.figures import run_figures, write_figures

    formats = [f.lower() for f in cfg.formats]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise LapelensError(f"--formats takes a comma-separated subset of {','.join(FORMATS)}; got {','.join(cfg.formats)!r}.")
    start = time.time()
    figs = run_figures(cfg.run_dir)
    out = cfg.out if cfg.out is not None else cfg.run_dir / "figures"
    written = write_figures(figs, out, formats)
    print(f"wrote {len(written)} files ({len(figs)} figures x {', '.join(formats)}) to {out} "
          f"in {time.time() - start:.1f} s: {', '.join(figs)}")
