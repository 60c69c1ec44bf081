"""``lapelens steer``: steer the output language by activating a language's neurons."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.checks import check_finite
from lapelens.cli._config import add_command
from lapelens.cli._evaluation import load_model_quietly, print_frame, quiet_transformers
from lapelens.cli._options import GenerationCommand, positive
from lapelens.cli.identify import load_stats
from lapelens.corpus import load_parallel
from lapelens.defaults import EMBEDDED_DEFAULTS, PAPER, defaults_for
from lapelens.errors import LapelensError
from lapelens.evaluate import generation as gen

MODES = ("unconditional", "prompted", "kojima")
_EMBEDDED_SCALE, _PAPER_SCALE = f"{EMBEDDED_DEFAULTS.steer_scale:g}", f"{PAPER.steer_scale:g}"


@dataclass(kw_only=True)
class SteerConfig(GenerationCommand):
    mode: str = field(default="unconditional", metadata={"choices": MODES})
    """Setting: unconditional (from BOS), prompted (cross-lingual) or kojima (AP neurons pinned to medians)."""
    stats: Path | None = None
    """Statistics folder: the mean activations to set (unconditional, prompted)."""
    scale: float | None = None
    """Multiply the mean activation by this (default: {_EMBEDDED_SCALE} for the embedded model, {_PAPER_SCALE}
    (the paper's) for any other)."""
    deactivate_others: bool = False
    """unconditional: also deactivate the other languages' neurons while steering."""
    samples: int = 100
    """unconditional/kojima: generations per condition."""
    sources: tuple[str, ...] | None = None
    """prompted: source languages (default: --languages)."""
    greedy: bool = False
    """Greedy decoding (default: sampling)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "steer",
        SteerConfig,
        run,
        help="Language of generations with a language's neurons activated (Tang et al., Tables 4-5; Kojima et al.).",
        description="unconditional: --samples generations from BOS alone, before and with each target's neurons set "
        "to their mean activation on that language (from --stats); share detected (langdetect) as the target. "
        "prompted: prompts in each source language from a parallel corpus; share in the target language before, "
        "steered, and with the source's neurons also deactivated. kojima: like unconditional, with AP neurons "
        "pinned to their medians (no --stats needed).",
    )


def run(cfg: SteerConfig) -> None:
    sampling = cfg.sampling(greedy=cfg.greedy)
    scale = defaults_for(cfg.model).steer_scale if cfg.scale is None else cfg.scale
    check_finite(scale, "--scale")
    positive(cfg.samples, "--samples")
    positive(cfg.n_prompts, "--n-prompts")
    positive(cfg.prompt_tokens, "--prompt-tokens")
    stats = None
    if cfg.mode != "kojima":
        if cfg.stats is None:
            raise LapelensError(f"--mode {cfg.mode} sets neurons to their mean activation: give --stats FOLDER.")

        stats = load_stats(cfg.stats)
    with quiet_transformers(cfg.quiet):
        model = load_model_quietly(cfg)
    neurons, languages = cfg.neuron_set(model, "steering sets neurons")
    if cfg.mode == "unconditional":
        result = gen.unconditional_steering(
            model,
            neurons,
            stats,
            languages,
            cfg.samples,
            scale,
            sampling,
            deactivate_others=cfg.deactivate_others,
            progress=not cfg.quiet,
        )
    elif cfg.mode == "kojima":
        result = gen.kojima_pinning(model, neurons, languages, cfg.samples, sampling, progress=not cfg.quiet)
    else:
        sources = list(cfg.sources) if cfg.sources else languages
        parallel = load_parallel(
            cfg.parallel,
            split=cfg.parallel_split,
            languages=sorted(set(sources) | set(languages), key=(sources + languages).index),
        )
        result = gen.prompted_steering(
            model,
            neurons,
            stats,
            parallel,
            sources,
            languages,
            cfg.n_prompts,
            cfg.prompt_tokens,
            scale,
            sampling,
            progress=not cfg.quiet,
        )
    cfg.write(result)
    print_frame(
        f"{result.meta['experiment']} ({neurons.method} neurons): share of outputs in the target language",
        result.summary,
    )
    if cfg.mode != "prompted":
        counts = result.samples.groupby("condition")["detected"].value_counts().unstack(fill_value=0)
        print_frame("Detected languages per condition (counts)", counts)
        reached = int((result.summary["after"] >= 0.8).sum())
        print(f"\ntargets with share >= 0.8 after the intervention: {reached} of {len(result.summary)}")
    print(f"\nwrote {cfg.out}")
