"""``lapelens sweep``: PPL of every language as more of one language's top neurons are deactivated."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._evaluation import load_model_quietly, print_frame, quiet_transformers
from lapelens.cli._options import DtypeOptions, EvalTextOptions, ModelOptions
from lapelens.cli.identify import load_stats
from lapelens.defaults import defaults_for
from lapelens.errors import LapelensError
from lapelens.evaluate.sweep import DEFAULT_RATIOS, selection_ratio_sweep
from lapelens.lock import OUTPUT
from lapelens.methods._registry import sweep_methods


@dataclass(kw_only=True)
class SweepConfig(EvalTextOptions, DtypeOptions, ModelOptions):
    stats: Path
    """Statistics folder (from `lapelens collect`) to rank neurons by."""
    target: str
    """Language whose neurons are deactivated (the paper: fr)."""
    languages: tuple[str, ...] | None = None
    """Evaluation languages (default: those of --stats)."""
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    """Shares of all neurons to deactivate, each in [0, 1]."""
    method: str = field(default="lape", metadata={"choices": sweep_methods})
    """Ranking: a method with a top_rate to vary."""
    out: Path = field(metadata=OUTPUT)
    """Folder for the result."""
    figure: Path | None = None
    """Also write the line plot as HTML to this file."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "sweep",
        SweepConfig,
        run,
        help="Selection-ratio sweep (Tang et al., Fig. 4).",
        description="At ratio r, select neurons as LAPE does with top_rate=r (the r share of all the model's "
        "neurons with the lowest entropy) and deactivate those assigned to --target; evaluate PPL on every "
        "language. r=0.01 is the paper's default set; the sets are nested as r grows.",
    )


def run(cfg: SweepConfig) -> None:
    cfg.check_sizes()
    bad = [r for r in cfg.ratios if not 0 <= r <= 1]
    if bad:
        raise LapelensError(f"--ratios {','.join(map(str, bad))}: each ratio is a share of all neurons, in [0, 1].")
    stats = load_stats(cfg.stats)
    if cfg.target not in stats.languages:
        raise LapelensError(
            f"--target {cfg.target} is not a language of --stats {cfg.stats} "
            f"({','.join(stats.languages)}): pick one of them."
        )
    languages = list(cfg.languages) if cfg.languages else list(stats.languages)
    with quiet_transformers(cfg.quiet):
        model = load_model_quietly(cfg)
    chunks = cfg.chunks(model, languages)
    result = selection_ratio_sweep(
        model,
        stats,
        cfg.target,
        chunks,
        ratios=list(cfg.ratios),
        method=cfg.method,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        progress=not cfg.quiet,
        selected_rate=defaults_for(cfg.model).top_rate,
        **cfg.batch,
    )
    result.save(cfg.out)
    print_frame(
        f"Relative PPL change (%) with the top {cfg.target} neurons deactivated (rows: ratio)",
        result.value("relative"),
        percent=True,
    )
    print_frame("Neurons deactivated per ratio", result.table()[["n_neurons"]])
    if any(result.saturated):
        print(
            f"(fewer neurons pass LAPE's filter than ratios {[r for r, s in zip(result.ratios, result.saturated) if s]} ask for: "
            "the selection stops growing there)"
        )
    if cfg.figure:
        cfg.figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().write_html(str(cfg.figure))
    print(f"\nwrote {cfg.out}")
