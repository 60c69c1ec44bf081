"""``lapelens perturb``: the perplexity matrix when each language's neurons are deactivated."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.cli._evaluation import (
    add_corpus_args,
    add_model_args,
    load_model_quietly,
    load_perturbation,
    positive,
    print_frame,
    quiet_transformers,
    split_list,
)
from lapelens.constants import COMPARE_TABLE
from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.evaluate.perplexity import DEFAULT_EVAL_TOKENS

    parser = subparsers.add_parser(
        "perturb",
        help="PPL of every language with each language's neurons deactivated (Tang et al., Fig. 2).",
        description="Rows: the language whose neurons are deactivated (or PV parameters zeroed), plus 'none'; "
        "columns: the language of the held-out text. Prints PPL, relative change with 95% bootstrap intervals, "
        "and the summary numbers (diagonal mean relative increase, diagonal-largest-in-column count, "
        "diagonal/off-diagonal ratio). Several --neurons give one matrix each and a side-by-side summary; "
        "a set whose method is 'random' is the reference for ratio_vs_reference.",
    )
    parser.add_argument("--neurons", nargs="+", type=str,
                        help="Neuron folders, official .pth masks or PV parameter-mask folders; NAME=PATH names one.")
    parser.add_argument("--show", nargs="+", type=Path, help="Print saved results (folders written by --out) instead of computing.")
    add_corpus_args(parser, DEFAULT_EVAL_TOKENS)
    add_model_args(parser)
    parser.add_argument("--out", type=Path,
                        help="Folder for the result (with several --neurons: one sub-folder per name, plus compare.csv).")
    parser.add_argument("--figure", type=Path, help="Also write the heatmap(s) as HTML to this file.")
    parser.set_defaults(func=run)
    return parser


def _named(specs: list[str]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` or ``PATH`` (name "" = the set's method)."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        out.append((name, Path(path)) if sep else ("", Path(spec)))
    return out


def _report(name: str, result) -> None:
    lo, hi = result.interval("relative")
    print(f"\n=== {name}: method {result.meta.get('method')}, model {result.meta.get('model')}, "
          f"{result.meta.get('chunks')} chunks of {result.meta.get('seq_len')} tokens, "
          f"{result.meta.get('seconds', '?')} s ({result.meta.get('tokens_per_second', '?')} tokens/s)")
    if result.meta.get("sizes"):
        print(f"{result.meta.get('unit')} per language: {result.meta['sizes']}")
    print_frame("PPL (rows: deactivated, columns: evaluated)", result.ppl)
    print_frame("Relative PPL change (%)", result.relative, percent=True)
    print_frame("  95% interval, low (%)", lo, percent=True)
    print_frame("  95% interval, high (%)", hi, percent=True)
    print_frame("Summary", result.summary())


def run(args: argparse.Namespace) -> None:
    from lapelens.evaluate.perplexity import PerturbationResult, compare, compare_figure, evaluation_chunks, perturbation_matrix

    if args.show:
        results = {str(p): PerturbationResult.load(p) for p in args.show}
    else:
        if not args.neurons:
            raise LapelensError("Give --neurons PATH [PATH ...] (or --show RESULT ...).")
        if args.out is None:
            raise LapelensError("Give --out FOLDER for the result.")
        for flag, value in (("--tokens-per-language", args.tokens_per_language), ("--seq-len", args.seq_len),
                            ("--batch-size", args.batch_size), ("--n-boot", args.n_boot)):
            positive(value, flag)
        with quiet_transformers(args.quiet):
            model = load_model_quietly(args)
        sets, sources = {}, {}
        for name, path in _named(args.neurons):
            perturbation = load_perturbation(path, model, split_list(args.languages, "--languages"))
            sets[name or perturbation.method] = perturbation
            sources[name or perturbation.method] = str(path)
        if len(sets) < len(args.neurons):
            raise LapelensError("Two --neurons have the same name (their method): name them NAME=PATH.")
        languages = split_list(args.languages, "--languages") or list(next(iter(sets.values())).languages)
        chunks = evaluation_chunks(model, args.corpus, languages, args.tokens_per_language, args.seq_len, args.split)
        kwargs = {"batch_size": args.batch_size} if args.batch_size else {}
        results = {}
        for name, perturbation in sets.items():
            results[name] = perturbation_matrix(
                model, perturbation, chunks, n_boot=args.n_boot, seed=args.seed, progress=not args.quiet,
                meta={"corpus": f"{args.corpus}:{args.split}", "source": sources[name]}, **kwargs)
            folder = args.out if len(sets) == 1 else args.out / name
            results[name].save(folder)
    for name, result in results.items():
        _report(name, result)
    if len(results) > 1:
        table = compare(results, reference=next((n for n, r in results.items() if r.method == "random"), None))
        print_frame("Side by side", table)
        if not args.show:
            table.to_csv(args.out / COMPARE_TABLE)
    if args.figure:
        fig = next(iter(results.values())).figure() if len(results) == 1 else compare_figure(results)
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(str(args.figure))
    if not args.show:
        print(f"\nwrote {args.out}")
