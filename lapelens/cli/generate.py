"""``lapelens generate``: generation in a language with its neurons deactivated (Tang et al., Tables 1-2)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._evaluation import load_model_quietly, print_frame, quiet_transformers
from lapelens.cli._options import GenerationCommand, positive
from lapelens.corpus import load_parallel
from lapelens.errors import LapelensError
from lapelens.evaluate.generation import generation_under_deactivation
from lapelens.methods import identify
from lapelens.models import neuron_spec
from lapelens.neurons import load_neurons


@dataclass(kw_only=True)
class GenerateConfig(GenerationCommand):
    random_neurons: Path | None = None
    """Random baseline neuron set (e.g. `lapelens identify --method random`)."""
    random_seed: int | None = None
    """Without --random-neurons: draw random neurons with the same counts, with this seed."""
    sample: bool = False
    """Sample instead of greedy decoding (default: greedy, repetition penalty 1.1, as the official generation
    script)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "generate",
        GenerateConfig,
        run,
        help="Generate with a language's neurons deactivated: share in the prompt's language and PPL (Tables 1-2).",
        description="For each language: the first --n-prompts rows of a parallel corpus, cut to --prompt-tokens, "
        "continued normally, with the language's neurons deactivated, and with random neurons of the same sizes "
        "deactivated (--random-neurons, or drawn with --random-seed from --stats). Reports the share of outputs "
        "detected (langdetect) in the prompt's language and the perplexity of the outputs under the unperturbed model.",
    )


def run(cfg: GenerateConfig) -> None:
    sampling = cfg.sampling(greedy=not cfg.sample)
    positive(cfg.n_prompts, "--n-prompts")
    positive(cfg.prompt_tokens, "--prompt-tokens")
    with quiet_transformers(cfg.quiet):
        model = load_model_quietly(cfg)
    d_mlp = neuron_spec(model).d_mlp
    neurons, languages = cfg.neuron_set(model, "this command deactivates neurons")
    random = None
    if cfg.random_neurons is not None:
        official = not cfg.random_neurons.is_dir()
        random = load_neurons(
            cfg.random_neurons, languages=neurons.languages if official else None, d_mlp=d_mlp if official else None
        )
    elif cfg.random_seed is not None:
        random = identify(neurons, "random", seed=cfg.random_seed)
    parallel = load_parallel(cfg.parallel, split=cfg.parallel_split, languages=languages)
    if len(parallel) < cfg.n_prompts:
        raise LapelensError(
            f"The parallel corpus has {len(parallel)} aligned rows, fewer than --n-prompts {cfg.n_prompts}."
        )
    prompts = {lang: list(parallel[lang].iloc[: cfg.n_prompts]) for lang in languages}
    result = generation_under_deactivation(
        model, neurons, prompts, random, cfg.prompt_tokens, sampling, progress=not cfg.quiet
    )
    cfg.write(result)
    print_frame(f"Generation with a language's {neurons.method} neurons deactivated", result.summary)
    print(f"\nwrote {cfg.out}")
