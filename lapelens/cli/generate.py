"""``lapelens generate``: generation in a language with its neurons deactivated (Tang et al., Tables 1-2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.cli._evaluation import (
    add_model_args, add_prompt_args, add_result_args, load_model_quietly, positive, print_frame, quiet_transformers,
    split_list,
)
from lapelens.cli.steer import add_sampling_args, sampling_from
from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="Generate with a language's neurons deactivated: share in the prompt's language and PPL (Tables 1-2).",
        description="For each language: the first --n-prompts rows of a parallel corpus, cut to --prompt-tokens, "
        "continued normally, with the language's neurons deactivated, and with random neurons of the same sizes "
        "deactivated (--random-neurons, or drawn with --random-seed from --stats). Reports the share of outputs "
        "detected (langdetect) in the prompt's language and the perplexity of the outputs under the unperturbed model.",
    )
    parser.add_argument("--neurons", type=Path, required=True, help="Neuron folder or official .pth mask.")
    parser.add_argument("--random-neurons", type=Path, help="Random baseline neuron set (e.g. `lapelens identify --method random`).")
    parser.add_argument("--random-seed", type=int, default=None,
                        help="Without --random-neurons: draw random neurons with the same counts, with this seed.")
    parser.add_argument("--languages", help="Comma-separated languages (default: all of the neuron set); for an official "
                        ".pth, as many as it has entries name them in the file's order.")
    add_prompt_args(parser, "Prompts: ")
    add_sampling_args(parser, greedy_default=True)
    add_model_args(parser)
    add_result_args(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    from lapelens.cli._evaluation import load_selection
    from lapelens.corpus import load_parallel
    from lapelens.evaluate.generation import generation_under_deactivation
    from lapelens.models import neuron_spec
    from lapelens.neurons import LanguageNeurons, load_neurons

    sampling = sampling_from(args, greedy_default=True)
    positive(args.n_prompts, "--n-prompts")
    positive(args.prompt_tokens, "--prompt-tokens")
    with quiet_transformers(args.quiet):
        model = load_model_quietly(args)
    d_mlp = neuron_spec(model).d_mlp
    requested = split_list(args.languages, "--languages")
    neurons = load_selection(args.neurons, model, requested)
    if not isinstance(neurons, LanguageNeurons):
        raise LapelensError(f"--neurons {args.neurons} is a PV parameter mask; this command deactivates neurons: pass a neuron set.")
    random = None
    if args.random_neurons is not None:
        random = load_neurons(args.random_neurons, languages=neurons.languages if not args.random_neurons.is_dir() else None,
                              d_mlp=None if args.random_neurons.is_dir() else d_mlp)
    elif args.random_seed is not None:
        from lapelens.methods import identify

        random = identify(neurons, "random", seed=args.random_seed)
    languages = requested or list(neurons.languages)
    missing = [l for l in languages if l not in neurons.languages]
    if missing:
        raise LapelensError(f"--languages {','.join(missing)}: not in the neuron set ({','.join(neurons.languages)}).")
    parallel = load_parallel(args.parallel, split=args.parallel_split, languages=languages)
    if len(parallel) < args.n_prompts:
        raise LapelensError(f"The parallel corpus has {len(parallel)} aligned rows, fewer than --n-prompts {args.n_prompts}.")
    prompts = {lang: list(parallel[lang].iloc[:args.n_prompts]) for lang in languages}
    result = generation_under_deactivation(model, neurons, prompts, random, args.prompt_tokens, sampling)
    result.save(args.out)
    print_frame(f"Generation with a language's {neurons.method} neurons deactivated", result.summary)
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().write_html(str(args.figure))
    print(f"\nwrote {args.out}")
