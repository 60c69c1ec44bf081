"""``lapelens explore``: one self-contained HTML page to look at single neurons of a finished run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._options import positive
from lapelens.errors import LapelensError
from lapelens.explorer import explore
from lapelens.models import load_model


@dataclass(kw_only=True)
class ExploreConfig:
    run_dir: Path = field(metadata={"positional": True})
    """Folder written by `lapelens reproduce` (stats/, neurons_*/, config.json)."""
    out: Path
    """HTML file to write."""
    model: str | None = None
    """Model to load instead of the one in the run's config.json."""
    context_tokens: int = 8192
    """Train tokens per language for contexts and histograms."""
    top_k: int = 3
    """Top contexts per neuron and language."""
    loss_neurons: int = 42
    """How many LAPE neurons get a single-neuron loss change."""
    loss_tokens: int = 256
    """Held-out tokens per language for the loss change."""
    loss_seq_len: int = 128
    """Chunk length of that held-out text."""
    quiet: bool = False
    """No progress bars."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers, "explore", ExploreConfig, run,
        help="Single-neuron explorer of a `lapelens reproduce` folder (one offline HTML file).",
        description="Overview of the neurons each method selected (layers x languages), and per neuron: firing "
        "probability and mean activation per language, activation histograms, LAPE entropy and rank, the "
        "methods that selected it, top-activating contexts, the tokens it promotes and suppresses, and the "
        "loss change when it alone is deactivated. Loads the run's model.",
    )


def run(cfg: ExploreConfig) -> None:
    for flag, value in (("--context-tokens", cfg.context_tokens), ("--top-k", cfg.top_k),
                        ("--loss-tokens", cfg.loss_tokens), ("--loss-seq-len", cfg.loss_seq_len)):
        positive(value, flag)
    if cfg.loss_neurons < 0:
        raise LapelensError(f"--loss-neurons must be 0 or more, got {cfg.loss_neurons}.")
    model = load_model(cfg.model) if cfg.model else None
    ex = explore(cfg.run_dir, model, out=cfg.out, context_tokens=cfg.context_tokens, top_k=cfg.top_k,
                 loss_neurons=cfg.loss_neurons, loss_tokens=cfg.loss_tokens,
                 loss_seq_len=cfg.loss_seq_len, progress=not cfg.quiet)
    s = ex.data.settings
    size = cfg.out.stat().st_size
    print(f"wrote {cfg.out} ({size / 1e6:.2f} MB) in {ex.seconds:.0f} s: {s['detail_neurons']} neurons with contexts, "
          f"{s['loss_neurons']} of {s['lape_neurons']} LAPE neurons with a loss change; timings {s['timings_seconds']}")
