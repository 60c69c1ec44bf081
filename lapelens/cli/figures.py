"""``lapelens figures RUN_DIR``: redraw every figure of a finished ``reproduce`` run from its saved
results, and publish them with the data they are drawn from (``--out``)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.constants import RUN_FIGURES_DIR, RUN_PUBLISHED
from lapelens.errors import LapelensError
from lapelens.evaluate import EXPERIMENTS
from lapelens.figures import write_figures
from lapelens.figures.export import FORMATS
from lapelens.lock import OUTPUT
from lapelens.run import Run


def _own_figures(run_dir: Path) -> Path:
    """Where a folder keeps its own figures: the top of a published folder, else ``figures/``."""
    return run_dir if (run_dir / RUN_PUBLISHED).is_file() else run_dir / RUN_FIGURES_DIR


@dataclass(kw_only=True)
class FiguresConfig:
    run_dir: Path = field(metadata={"positional": True})
    """Folder written by `lapelens reproduce --out`, or a folder published by `lapelens figures --out`."""
    out: Path | None = field(
        default=None,
        metadata={  # no lock for a run folder that is not there: it is refused
            **OUTPUT,
            "output_default": lambda args: _own_figures(args.run_dir) if args.run_dir.is_dir() else None,
        },
    )
    """Folder for the figures (default: RUN_DIR/figures, where reproduce writes them; RUN_DIR itself for a
    published folder)."""
    formats: tuple[str, ...] = FORMATS
    """A subset of the formats (PNG and SVG need Chromium)."""
    data: bool = True
    """With --out elsewhere: also copy the results the figures are drawn from (config.json, summary.json,
    tables/, the result and neuron-set folders; no statistics, tuned models or checkpoints), so that
    `lapelens figures OUT` redraws them from that folder alone."""


def stage_names() -> str:
    """The folders a run's figures are drawn from, from the registries."""
    return ", ".join(
        ["neurons_*"] + [f"{e.name}_*" if e.per_method else e.name for e in EXPERIMENTS.values() if e.cached]
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "figures",
        FiguresConfig,
        run,
        help="Redraw every figure of a finished `lapelens reproduce` run (HTML, PNG, SVG) from its saved results.",
        description=f"Load the saved results of a reproduce run folder ({stage_names()}; no model, nothing "
        "recomputed) and write each figure as NAME.html (offline: it loads plotly.min.js from the same folder), "
        "NAME.png and NAME.svg (rendered by kaleido in a local Chromium). With --out elsewhere the results "
        "are copied beside the figures (a published folder, a few MB): `lapelens figures OUT` draws the same "
        "figures from it alone.",
    )


def run(cfg: FiguresConfig) -> None:
    formats = [f.lower() for f in cfg.formats]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise LapelensError(
            f"--formats takes a comma-separated subset of {','.join(FORMATS)}; got {','.join(cfg.formats)!r}."
        )
    start = time.time()
    source = Run(cfg.run_dir)
    figs = source.figures()
    if not figs:
        raise LapelensError(
            f"{cfg.run_dir} holds no saved result to draw (expected the stage folders "
            f"`lapelens reproduce` writes: {stage_names()})."
        )
    out = cfg.out if cfg.out is not None else source.figures_dir
    copied = []
    if cfg.data and out.resolve() not in (source.path.resolve(), source.figures_dir.resolve()):
        copied = source.publish(out)
    written = write_figures(figs, out, formats)
    data = f" and the data they are drawn from ({len(copied)} files and folders)" if copied else ""
    print(
        f"wrote {len(written)} files ({len(figs)} figures x {', '.join(formats)}){data} to {out} "
        f"in {time.time() - start:.1f} s: {', '.join(figs)}"
    )
