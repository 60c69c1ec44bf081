"""``lapelens sweep``: PPL of every language as more of one language's top neurons are deactivated."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.cli._evaluation import (
    add_corpus_args,
    add_model_args,
    load_model_quietly,
    positive,
    print_frame,
    quiet_transformers,
    split_list,
)
from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.evaluate.perplexity import DEFAULT_EVAL_TOKENS
    from lapelens.evaluate.sweep import DEFAULT_RATIOS, SWEEP_METHODS

    parser = subparsers.add_parser(
        "sweep",
        help="Selection-ratio sweep (Tang et al., Fig. 4).",
        description="At ratio r, select neurons as LAPE does with top_rate=r (the r share of all the model's "
        "neurons with the lowest entropy) and deactivate those assigned to --target; evaluate PPL on every "
        "language. r=0.01 is the paper's default set; the sets are nested as r grows.",
    )
    parser.add_argument("--stats", type=Path, required=True, help="Statistics folder (from `lapelens collect`) to rank neurons by.")
    parser.add_argument("--target", required=True, help="Language whose neurons are deactivated (the paper: fr).")
    parser.add_argument("--ratios", default=",".join(f"{r:g}" for r in DEFAULT_RATIOS),
                        help="Comma-separated shares of all neurons (default: %(default)s).")
    parser.add_argument("--method", choices=SWEEP_METHODS, default="lape", help="Ranking (default: lape).")
    add_corpus_args(parser, DEFAULT_EVAL_TOKENS)
    add_model_args(parser)
    parser.add_argument("--out", type=Path, required=True, help="Folder for the result.")
    parser.add_argument("--figure", type=Path, help="Also write the line plot as HTML to this file.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    from lapelens.cli.identify import load_stats
    from lapelens.evaluate.perplexity import evaluation_chunks
    from lapelens.evaluate.sweep import selection_ratio_sweep

    for flag, value in (("--tokens-per-language", args.tokens_per_language), ("--seq-len", args.seq_len),
                        ("--batch-size", args.batch_size), ("--n-boot", args.n_boot)):
        positive(value, flag)
    try:
        ratios = [float(r) for r in split_list(args.ratios, "--ratios")]
    except ValueError:
        raise LapelensError(f"--ratios must be comma-separated numbers such as 0,0.01,0.05; got {args.ratios!r}.") from None
    bad = [r for r in ratios if not 0 <= r <= 1]
    if bad:
        raise LapelensError(f"--ratios {','.join(map(str, bad))}: each ratio is a share of all neurons, in [0, 1].")
    stats = load_stats(args.stats)
    if args.target not in stats.languages:
        raise LapelensError(f"--target {args.target} is not a language of --stats {args.stats} "
                            f"({','.join(stats.languages)}): pick one of them.")
    languages = split_list(args.languages, "--languages") or list(stats.languages)
    with quiet_transformers(args.quiet):
        model = load_model_quietly(args)
    chunks = evaluation_chunks(model, args.corpus, languages, args.tokens_per_language, args.seq_len, args.split)
    kwargs = {"batch_size": args.batch_size} if args.batch_size else {}
    result = selection_ratio_sweep(model, stats, args.target, chunks, ratios=ratios, method=args.method,
                                   n_boot=args.n_boot, seed=args.seed, progress=not args.quiet, **kwargs)
    result.save(args.out)
    print_frame(f"Relative PPL change (%) with the top {args.target} neurons deactivated (rows: ratio)",
                result.value("relative"), percent=True)
    print_frame("Neurons deactivated per ratio", result.table()[["n_neurons"]])
    if any(result.saturated):
        print(f"(fewer neurons pass LAPE's filter than ratios {[r for r, s in zip(result.ratios, result.saturated) if s]} ask for: "
              "the selection stops growing there)")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().write_html(str(args.figure))
    print(f"\nwrote {args.out}")
