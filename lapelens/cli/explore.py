"""``lapelens explore``: a page to look at single neurons (offline), or the same page served live."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._evaluation import quiet_transformers
from lapelens.cli._options import positive
from lapelens.cli.identify import load_stats
from lapelens.errors import LapelensError
from lapelens.explorer import explore
from lapelens.explorer.data import ExplorerInputs, from_parts, load_run
from lapelens.explorer.server import LiveExplorer, load_page, serve
from lapelens.loader import load
from lapelens.lock import OUTPUT_FILE
from lapelens.models import load_model
from lapelens.pretrained import default_cache_dir

#: --loss-max-neurons when not given: a page to save gets this; --serve gets none (it starts at once).
LOSS_MAX_NEURONS = 160


@dataclass(kw_only=True)
class ExploreConfig:
    run_dir: Path | None = field(default=None, metadata={"positional": True})
    """Folder written by `lapelens reproduce` (stats/, neurons_*/, config.json); or give --stats instead."""
    out: Path | None = field(default=None, metadata=OUTPUT_FILE)
    """HTML file to write; its per-layer scripts go to a folder beside it (explorer.html -> explorer_files/)."""
    stats: Path | None = None
    """Statistics folder (`lapelens collect`), instead of RUN_DIR."""
    neurons: Path | None = None
    """With --stats: a neuron folder (`lapelens identify`); default: LAPE on --stats with the model's top_rate."""
    model: str | None = None
    """Model to load (default: the run's, or the one the statistics record)."""
    corpus: str | None = None
    """Text for contexts (train split) and loss changes (valid split); default: the run's or the statistics'."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or mps."""
    serve: bool = False
    """Serve the page live on 127.0.0.1 with the model behind it (text box, steering, search); Ctrl-C stops."""
    port: int = 8765
    """--serve: port (0: any free one)."""
    page: Path | None = None
    """--serve: serve this page (written earlier with --out) instead of building one."""
    context_tokens: int = 8192
    """Train tokens per language for contexts and histograms."""
    top_k: int = 10
    """Top contexts per neuron and language."""
    samples: int = 3
    """Contexts drawn from each lower quantile range (90-99th, 50-90th, below the median) per language."""
    window: int = 20
    """Tokens shown on each side of a context's token."""
    detail_methods: tuple[str, ...] | None = None
    """Methods whose neurons get contexts and histograms (default: the primary one, LAPE)."""
    loss_max_neurons: int | None = None
    """Loss change for every primary neuron if there are at most this many, else for each language's
    --loss-per-language best, taken in turns up to this many (default: {LOSS_MAX_NEURONS}; 0 with --serve,
    which then starts at once)."""
    loss_per_language: int = 20
    """Neurons per language when not all get a loss change."""
    loss_tokens: int = 2560
    """Held-out tokens per language for the loss change (at least 2,048 for a meaningful interval)."""
    loss_seq_len: int = 128
    """Chunk length of that held-out text (the bootstrap resamples chunks)."""
    n_boot: int = 1000
    """Bootstrap resamples for the loss change's 95% interval."""
    loss_cache: Path | None = None
    """Folder keeping each language's loss changes, read back when the weights, neurons and text are the same
    (an interrupted build resumes; a page rebuilt with other settings reuses them); default: explore/ in the
    lapelens cache."""
    search_top: int = 5
    """Neurons per token in the offline page's search index."""
    quiet: bool = False
    """No progress bars."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "explore",
        ExploreConfig,
        run,
        help="Single-neuron explorer: an offline page (--out) or the same page served live (--serve).",
        description="Overview of the neurons each method selected (layers x languages), a sortable list and search "
        "(by token, language, layer or neuron), and per neuron: a one-line summary, firing probability and mean "
        "activation per language, activation histograms, LAPE entropy and rank, the methods that selected it, top "
        "contexts and samples from lower quantiles, the tokens it promotes and suppresses and the histogram of its "
        "logit effects, and the loss change with a 95% interval when it alone is deactivated. --serve adds a text "
        "box, steering and search on any token, through a JSON API (docs/explorer.md).",
    )


def run(cfg: ExploreConfig) -> None:
    for flag in (
        "context_tokens",
        "top_k",
        "samples",
        "window",
        "loss_per_language",
        "loss_tokens",
        "loss_seq_len",
        "n_boot",
        "search_top",
    ):
        positive(getattr(cfg, flag), "--" + flag.replace("_", "-"))
    if cfg.loss_max_neurons is not None and cfg.loss_max_neurons < 0:
        raise LapelensError(f"--loss-max-neurons must be 0 or more, got {cfg.loss_max_neurons}.")
    if cfg.loss_seq_len < 2:
        raise LapelensError(
            f"--loss-seq-len must be at least 2 (a token predicted from another), got {cfg.loss_seq_len}."
        )
    if not 0 <= cfg.port < 65536:
        raise LapelensError(f"--port must be 0-65535, got {cfg.port}.")
    if not cfg.serve and cfg.out is None:
        raise LapelensError("Say where the page goes (--out explorer.html), or serve it live (--serve).")
    if cfg.page is not None and not cfg.serve:
        raise LapelensError("--page names a page to serve: add --serve.")
    if cfg.run_dir is not None and (cfg.stats is not None or cfg.neurons is not None):
        raise LapelensError("Give RUN_DIR, or --stats (with --neurons), not both.")
    if cfg.run_dir is None and cfg.stats is None:
        raise LapelensError(
            "Nothing to explore: give RUN_DIR (from `lapelens reproduce`) or --stats FOLDER (from "
            "`lapelens collect`, with --neurons from `lapelens identify`)."
        )
    if cfg.neurons is not None and cfg.stats is None:
        raise LapelensError("--neurons goes with --stats (a run folder has its own neuron sets).")
    inputs = _inputs(cfg)
    with quiet_transformers(cfg.quiet):
        model = load_model(cfg.model or inputs.model, device=cfg.device)
    if cfg.serve and cfg.page is not None:
        return _serve(cfg, model, inputs, page=load_page(cfg.page))
    default_loss = 0 if cfg.serve and cfg.out is None else LOSS_MAX_NEURONS
    ex = explore(
        inputs,
        model,
        cfg.out,
        context_tokens=cfg.context_tokens,
        top_k=cfg.top_k,
        samples=cfg.samples,
        window=(cfg.window, cfg.window),
        detail_methods=cfg.detail_methods,
        loss_max_neurons=default_loss if cfg.loss_max_neurons is None else cfg.loss_max_neurons,
        loss_per_language=cfg.loss_per_language,
        loss_tokens=cfg.loss_tokens,
        loss_seq_len=cfg.loss_seq_len,
        n_boot=cfg.n_boot,
        loss_cache=cfg.loss_cache if cfg.loss_cache is not None else default_cache_dir() / "explore",
        search_top=cfg.search_top,
        progress=not cfg.quiet,
    )
    s = ex.data.settings
    what = (
        f"{s['detail_neurons']} neurons with contexts, {s['loss_neurons']} of {s['primary_neurons']} {s['primary']} "
        f"neurons with a loss change; timings {s['timings_seconds']}"
    )
    if cfg.out is not None:
        html_bytes, folder_bytes = ex.page(cfg.out).sizes()
        print(
            f"wrote {cfg.out} ({html_bytes / 1e6:.2f} MB) and {cfg.out.parent / (cfg.out.stem + '_files')}/ "
            f"({folder_bytes / 1e6:.2f} MB) in {ex.seconds:.0f} s: {what}"
        )
    else:
        print(f"built the page in {ex.seconds:.0f} s: {what}")
    if cfg.serve:
        _serve(cfg, model, inputs, page=ex.page())


def _inputs(cfg: ExploreConfig) -> ExplorerInputs:
    if cfg.run_dir is not None:
        inputs = load_run(cfg.run_dir)
    else:
        stats = load_stats(cfg.stats)
        neurons = None
        if cfg.neurons is not None:
            if not cfg.neurons.exists():
                raise LapelensError(f"--neurons {cfg.neurons} does not exist: pass a folder from `lapelens identify`.")
            neurons = load(cfg.neurons, "language_neurons")
        inputs = from_parts(
            stats,
            neurons,
            cfg.model,
            cfg.corpus,
            source=f"stats {cfg.stats}" + (f", neurons {cfg.neurons}" if cfg.neurons else ""),
        )
    if cfg.model:
        inputs.model = cfg.model
    if cfg.corpus:
        inputs.corpus = cfg.corpus
    return inputs


def _serve(cfg: ExploreConfig, model, inputs: ExplorerInputs, page) -> None:
    explorer = LiveExplorer(model, page, inputs.stats, inputs.sets[inputs.primary])
    serve(
        explorer,
        cfg.port,
        log=None if cfg.quiet else (lambda line: print(line, flush=True)),
        ready=lambda line: print(line, flush=True),
    )
