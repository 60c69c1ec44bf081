"""``lapelens identify``: select language-specific neurons (or parameters) with one method."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.constants import OFFICIAL_MASK_SUFFIX
from lapelens.errors import LapelensError

#: CLI flag -> method option (the flag's dest is the option name).
_OPTION_FLAGS = {
    "top_rate": ("--top-rate", float, "LAPE/LAVE/PV: share of units to keep, in (0, 1] (default: 0.1 for statistics of the "
                 "embedded model, 0.01 (the paper's) for any other)."),
    "filter_rate": ("--filter-rate", float, "LAPE/LAVE/PV: quantile of all scores a unit must exceed on some language (0.95)."),
    "activation_bar_ratio": ("--activation-bar-ratio", float,
                             "LAPE/LAVE/PV: quantile of all scores a kept unit must exceed to be assigned to a language (0.95)."),
    "threshold": ("--threshold", float, "LAP: firing probability a neuron must exceed on a language (0.95)."),
    "seed": ("--seed", int, "random: seed of the draw (0)."),
    "k": ("--k", int, "ap: top-k and bottom-k neurons per language (Kojima: 1000; use fewer on a small model)."),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.methods import METHODS

    methods_help = "\n".join(
        f"  {m.name:7} reads {m.source}; options: {', '.join(m.options) or 'none'}\n          {m.summary}"
        for m in METHODS.values()
    )
    parser = subparsers.add_parser(
        "identify",
        help="Select language-specific neurons from statistics.",
        description=f"Select language-specific neurons (or, for pv, parameters).\n\nmethods:\n{methods_help}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", choices=list(METHODS), default="lape", help="Selection method (default: lape).")
    parser.add_argument("--out", required=True, type=Path,
                        help="Output: a path ending in .pth is written as an official mask file, anything else as a lapelens folder.")
    parser.add_argument("--languages", help="Comma-separated languages to use, in this order (default: all in the input).")
    src = parser.add_argument_group("inputs (which one depends on the method)")
    src.add_argument("--stats", type=Path,
                     help="lape/lap/lave/random: a lapelens statistics folder, or a folder of official activation.{lang}.train.{tag} files.")
    src.add_argument("--tag", help="Tag of official activation files (e.g. llama-7b); inferred when the folder has only one.")
    src.add_argument("--sentences", type=Path, help="ap: a lapelens sentence-activation folder.")
    src.add_argument("--reference", type=Path,
                     help="random: neuron set whose per-language counts to match (folder or official .pth; default: LAPE on --stats).")
    src.add_argument("--d-mlp", type=int, help="MLP width of an official .pth --reference (default: its largest index + 1).")
    src.add_argument("--base", type=Path, help="pv: the base model folder.")
    src.add_argument("--tuned", help="pv: tuned copies as lang=DIR,lang=DIR,...")
    src.add_argument("--train-texts",
                     help="pv without --tuned: tune the base on each language first, from lang=FILE,... (one text per line).")
    src.add_argument("--train-steps", type=int, default=200, help="pv with --train-texts: optimiser steps per language (200).")
    src.add_argument("--tuned-out", type=Path, help="pv with --train-texts: where to write the tuned copies (default: OUT.tuned).")
    opts = parser.add_argument_group("method options (default: the paper's)")
    for dest, (flag, typ, text) in _OPTION_FLAGS.items():
        opts.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    parser.set_defaults(func=run)
    return parser


def _pairs(text: str, what: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        lang, sep, value = item.partition("=")
        if not sep or not lang or not value:
            raise LapelensError(f"{what} must be lang=PATH,lang=PATH,...; got {item!r}.")
        out[lang.strip()] = value.strip()
    return out


def load_stats(path: Path, tag: str | None = None, languages: tuple[str, ...] | None = None):
    """A lapelens statistics folder, or a folder of official ``activation.{lang}.train.{tag}`` files."""
    from lapelens.artifacts import load

    if not path.is_dir():
        raise LapelensError(f"--stats {path} is not a folder: pass a lapelens statistics folder or a folder of official activation files.")
    return load(path, "activation_stats", tag=tag, languages=languages)


def _read_texts(spec: str) -> dict[str, list[str]]:
    texts = {}
    for lang, file in _pairs(spec, "--train-texts").items():
        try:
            texts[lang] = [line for line in Path(file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise LapelensError(f"Cannot read the {lang} training texts {file}: {exc.strerror}.") from exc
    return texts


#: Methods that compare a neuron across languages: on one language their score means nothing.
_NEEDS_TWO_LANGUAGES = ("lape", "lave", "ap")


def _check_options(method: str, options: dict, source, languages: tuple[str, ...] | None) -> None:
    """Refuse meaningless selections before computing them; fill the model-dependent top_rate default."""
    from lapelens.checks import check_positive, check_quantile, check_rate
    from lapelens.defaults import defaults_for, is_embedded
    from lapelens.methods import METHODS

    check_rate(options.get("top_rate"), "--top-rate")
    for dest in ("filter_rate", "activation_bar_ratio", "threshold"):
        check_quantile(options.get(dest), _OPTION_FLAGS[dest][0])
    check_positive(options.get("k"), "--k")
    names = languages or getattr(source, "languages", None)
    if method in _NEEDS_TWO_LANGUAGES and names is not None and len(names) < 2:
        raise LapelensError(f"method {method} compares languages, but the input has only {', '.join(names)}: "
                            "use statistics of at least two languages (and at least two in --languages).")
    if "top_rate" in METHODS[method].options and "top_rate" not in options and method != "pv":
        model = getattr(source, "meta", {}).get("model")  # statistics record the model they were collected on
        embedded = model is not None and is_embedded(model)
        options["top_rate"] = defaults_for(model if embedded else "other").top_rate
        print(f"--top-rate {options['top_rate']:g} ({'the embedded model' if embedded else 'the paper'}'s default)")


def run(args: argparse.Namespace) -> None:
    from lapelens.methods import METHODS, identify
    from lapelens.methods.pv import ParameterMask, tune_per_language
    from lapelens.neurons import load_neurons
    from lapelens.stats import SentenceActivations

    spec = METHODS[args.method]
    languages = tuple(l.strip() for l in args.languages.split(",") if l.strip()) if args.languages else None
    options = {}
    for dest, (flag, _, _) in _OPTION_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest not in spec.options:
            raise LapelensError(f"{flag} does not apply to method {args.method} (its options: {list(spec.options) or 'none'}).")
        options[dest] = value

    if spec.source == "stats":
        if args.reference and args.method != "random":
            raise LapelensError(f"--reference only applies to method random, not {args.method}.")
        if args.stats is None and args.reference is None:
            raise LapelensError(f"Method {args.method} needs --stats PATH.")
        source = load_stats(args.stats, args.tag, languages) if args.stats is not None else None
        if args.reference is not None:
            # An official .pth names no languages and no width: take them from --languages / --d-mlp,
            # else from the statistics when there are some.
            d_mlp = args.d_mlp if args.d_mlp is not None else (source.d_mlp if source is not None else None)
            names = languages or (source.languages if source is not None and not args.reference.is_dir() else None)
            reference = load_neurons(args.reference, languages=names, d_mlp=d_mlp)
            if source is None:
                source = reference
            else:
                options["reference"] = reference
    elif spec.source == "sentences":
        if args.sentences is None:
            raise LapelensError("Method ap needs --sentences PATH (per-sentence mean activations).")
        source = SentenceActivations.load(args.sentences)
    else:  # models
        if args.base is None:
            raise LapelensError("Method pv needs --base DIR and --tuned lang=DIR,... (or --train-texts lang=FILE,...).")
        if args.tuned:
            tuned = _pairs(args.tuned, "--tuned")
        elif args.train_texts:
            out = args.tuned_out or args.out.with_name(args.out.name + ".tuned")
            tuned = tune_per_language(args.base, _read_texts(args.train_texts), out, steps=args.train_steps)
        else:
            raise LapelensError("Method pv needs --tuned lang=DIR,... or --train-texts lang=FILE,... to tune copies first.")
        options["tuned"] = tuned
        source = args.base

    _check_options(args.method, options, source, languages)
    result = identify(source, args.method, languages=languages, **options)
    if args.out.suffix == OFFICIAL_MASK_SUFFIX:
        if isinstance(result, ParameterMask):
            raise LapelensError("PV selects parameters, which the official neuron mask format cannot hold: use a folder for --out.")
        path = result.to_official(args.out)
    else:
        path = result.save(args.out)
    print(result.per_language().to_string())
    print(f"wrote {path}")
