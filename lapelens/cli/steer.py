"""``lapelens steer``: steer the output language by activating a language's neurons."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.cli._evaluation import (
    add_model_args, add_prompt_args, add_result_args, load_model_quietly, positive, print_frame, quiet_transformers,
    split_list,
)
from lapelens.defaults import EMBEDDED_DEFAULTS, PAPER
from lapelens.errors import LapelensError

MODES = ("unconditional", "prompted", "kojima")


def add_sampling_args(parser: argparse.ArgumentParser, greedy_default: bool) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Tokens generated per sample (48).")
    if greedy_default:
        parser.add_argument("--sample", action="store_true", help="Sample instead of greedy decoding (default: greedy, "
                            "repetition penalty 1.1, as the official generation script).")
    else:
        parser.add_argument("--greedy", action="store_true", help="Greedy decoding (default: sampling).")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (1.0).")
    parser.add_argument("--top-k", type=int, default=None, help="Sample from the top k tokens only.")
    parser.add_argument("--top-p", type=float, default=None, help="Nucleus sampling mass.")
    parser.add_argument("--repetition-penalty", type=float, default=None,
                        help="HF-style repetition penalty (default: 1.1 greedy, 1.0 sampling).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed, the same for every condition (0).")
    parser.add_argument("--batch-size", type=int, default=50, help="Sequences generated at once (50).")


def sampling_from(args: argparse.Namespace, greedy_default: bool):
    from lapelens.evaluate.generation import Sampling

    from lapelens.checks import check_positive

    greedy = (not args.sample) if greedy_default else args.greedy
    positive(args.max_new_tokens, "--max-new-tokens")
    positive(args.batch_size, "--batch-size")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise LapelensError(f"--top-p must be in (0, 1] (the probability mass sampled from), got {args.top_p}.")
    if not (args.temperature > 0 and args.temperature < float("inf")):
        raise LapelensError(f"--temperature must be a positive number, got {args.temperature}.")
    check_positive(args.top_k, "--top-k")
    if args.repetition_penalty is not None and not 0 < args.repetition_penalty < float("inf"):
        raise LapelensError(f"--repetition-penalty must be a positive number (1: none), got {args.repetition_penalty}.")
    penalty = args.repetition_penalty if args.repetition_penalty is not None else (1.1 if greedy else 1.0)
    return Sampling(max_new_tokens=args.max_new_tokens, do_sample=not greedy, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, repetition_penalty=penalty, seed=args.seed,
                    batch_size=args.batch_size)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "steer",
        help="Language of generations with a language's neurons activated (Tang et al., Tables 4-5; Kojima et al.).",
        description="unconditional: --samples generations from BOS alone, before and with each target's neurons set "
        "to their mean activation on that language (from --stats); share detected (langdetect) as the target. "
        "prompted: prompts in each source language from a parallel corpus; share in the target language before, "
        "steered, and with the source's neurons also deactivated. kojima: like unconditional, with AP neurons "
        "pinned to their medians (no --stats needed).",
    )
    parser.add_argument("--mode", choices=MODES, default="unconditional", help="Setting (default: unconditional).")
    parser.add_argument("--neurons", type=Path, required=True, help="Neuron folder or official .pth mask.")
    parser.add_argument("--stats", type=Path, help="Statistics folder: the mean activations to set (unconditional, prompted).")
    parser.add_argument("--languages", help="Comma-separated target languages (default: all of the neuron set); for an "
                        "official .pth, as many as it has entries name them in the file's order.")
    parser.add_argument("--scale", type=float, default=None,
                        help=f"Multiply the mean activation by this (default: {EMBEDDED_DEFAULTS.steer_scale:g} for the "
                        f"embedded model, {PAPER.steer_scale:g} (the paper's) for any other).")
    parser.add_argument("--deactivate-others", action="store_true",
                        help="unconditional: also deactivate the other languages' neurons while steering.")
    parser.add_argument("--samples", type=int, default=100, help="unconditional/kojima: generations per condition (100).")
    parser.add_argument("--sources", help="prompted: comma-separated source languages (default: --languages).")
    add_prompt_args(parser, "prompted: ")
    add_sampling_args(parser, greedy_default=False)
    add_model_args(parser)
    add_result_args(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    from lapelens.checks import check_finite
    from lapelens.cli._evaluation import load_selection
    from lapelens.defaults import defaults_for
    from lapelens.neurons import LanguageNeurons
    from lapelens.evaluate import generation as gen

    sampling = sampling_from(args, greedy_default=False)
    scale = defaults_for(args.model).steer_scale if args.scale is None else args.scale
    check_finite(scale, "--scale")
    positive(args.samples, "--samples")
    positive(args.n_prompts, "--n-prompts")
    positive(args.prompt_tokens, "--prompt-tokens")
    stats = None
    if args.mode != "kojima":
        if args.stats is None:
            raise LapelensError(f"--mode {args.mode} sets neurons to their mean activation: give --stats FOLDER.")
        from lapelens.cli.identify import load_stats

        stats = load_stats(args.stats)
    with quiet_transformers(args.quiet):
        model = load_model_quietly(args)
    requested = split_list(args.languages, "--languages")
    neurons = load_selection(args.neurons, model, requested)
    if not isinstance(neurons, LanguageNeurons):
        raise LapelensError(f"--neurons {args.neurons} is a PV parameter mask; steering sets neurons: pass a neuron set.")
    languages = requested or list(neurons.languages)
    missing = [l for l in languages if l not in neurons.languages]
    if missing:
        raise LapelensError(f"--languages {','.join(missing)}: not in the neuron set ({','.join(neurons.languages)}).")
    if args.mode == "unconditional":
        result = gen.unconditional_steering(model, neurons, stats, languages, args.samples, scale, sampling,
                                            deactivate_others=args.deactivate_others)
    elif args.mode == "kojima":
        result = gen.kojima_pinning(model, neurons, languages, args.samples, sampling)
    else:
        from lapelens.corpus import load_parallel

        sources = split_list(args.sources, "--sources") or languages
        parallel = load_parallel(args.parallel, split=args.parallel_split, languages=sorted(set(sources) | set(languages),
                                                                                              key=(sources + languages).index))
        result = gen.prompted_steering(model, neurons, stats, parallel, sources, languages, args.n_prompts,
                                       args.prompt_tokens, scale, sampling)
    result.save(args.out)
    print_frame(f"{result.meta['experiment']} ({neurons.method} neurons): share of outputs in the target language",
                result.summary)
    if args.mode != "prompted":
        counts = result.samples.groupby("condition")["detected"].value_counts().unstack(fill_value=0)
        print_frame("Detected languages per condition (counts)", counts)
        reached = int((result.summary["after"] >= 0.8).sum())
        print(f"\ntargets with share >= 0.8 after the intervention: {reached} of {len(result.summary)}")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().write_html(str(args.figure))
    print(f"\nwrote {args.out}")
