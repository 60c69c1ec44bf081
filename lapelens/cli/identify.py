"""``lapelens identify``: select language-specific neurons (or parameters) with one method."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.checks import check_positive, check_quantile, check_rate
from lapelens.cli._config import add_config_arguments, config_from_args
from lapelens.constants import OFFICIAL_MASK_SUFFIX, STATS_META
from lapelens.defaults import defaults_for, is_embedded
from lapelens.errors import LapelensError
from lapelens.loader import load
from lapelens.lock import OUTPUT
from lapelens.methods import METHODS, identify
from lapelens.methods.pv import tune_per_language
from lapelens.neurons import load_neurons
from lapelens.stats import SentenceActivations


def method_options() -> dict[str, list]:
    """Option name -> the registered ``Option`` of every method that takes it (one flag each)."""
    out: dict[str, list] = {}
    for spec in METHODS.values():
        for option in spec.option_specs:
            out.setdefault(option.name, []).append((spec.name, option))
    return out


def _option_help(entries: list) -> str:
    """One help line for a flag several methods share: "lape/lave: text; pv: other text"."""
    by_text: dict[str, list[str]] = {}
    for method, option in entries:
        by_text.setdefault(option.help, []).append(method)
    return "; ".join(f"{'/'.join(methods)}: {text}" for text, methods in by_text.items()) + "."


def _method_names() -> list[str]:
    return list(METHODS)


@dataclass(kw_only=True)
class IdentifyConfig:
    method: str = field(default="lape", metadata={"choices": _method_names})
    """Selection method (the list above)."""
    out: Path = field(metadata={**OUTPUT, "file_suffixes": (OFFICIAL_MASK_SUFFIX,)})
    """Output: a path ending in .pth is written as an official mask file, anything else as a lapelens folder."""
    languages: tuple[str, ...] | None = None
    """Languages to use, in this order (default: all in the input)."""
    stats: Path | None = None
    """Methods that read statistics: a lapelens statistics folder, or a folder of official
    activation.{lang}.train.{tag} files."""
    tag: str | None = None
    """Tag of official activation files (e.g. llama-7b); inferred when the folder has only one."""
    sentences: Path | None = None
    """Methods that read sentences: a lapelens sentence-activation folder."""
    reference: Path | None = None
    """Methods that match a reference selection: the neuron set whose per-language counts to match
    (folder or official .pth; default: the reference method on --stats)."""
    d_mlp: int | None = None
    """MLP width of an official .pth --reference (default: its largest index + 1)."""
    base: Path | None = None
    """Methods that read tuned models: the base model folder."""
    tuned: str | None = None
    """Methods that read tuned models: tuned copies as lang=DIR,lang=DIR,..."""
    train_texts: str | None = None
    """Without --tuned: tune the base on each language first, from lang=FILE,... (one text per line)."""
    train_steps: int = 200
    """With --train-texts: optimiser steps per language."""
    tuned_out: Path | None = field(default=None, metadata=OUTPUT)
    """With --train-texts: where to write the tuned copies (default: OUT.tuned)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    methods_help = "\n".join(
        f"  {m.name:7} reads {m.source}; options: {', '.join(m.options) or 'none'}\n          {m.summary}"
        for m in METHODS.values()
    )
    parser = subparsers.add_parser(
        "identify",
        help="Select language-specific neurons from statistics.",
        description=f"Select language-specific neurons (or, for methods that return a parameter mask, parameters)."
        f"\n\nmethods:\n{methods_help}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, IdentifyConfig)
    opts = parser.add_argument_group("method options (default: the paper's)")
    for name, entries in method_options().items():
        opts.add_argument(
            entries[0][1].flag, dest=name, type=entries[0][1].type, default=None, help=_option_help(entries)
        )
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
    if not path.is_dir():
        raise LapelensError(
            f"--stats {path} is not a folder: pass a lapelens statistics folder or a folder of official activation files."
        )
    inner = path / "stats"  # a `lapelens reproduce` folder keeps its statistics there
    if not (path / STATS_META).is_file() and (inner / STATS_META).is_file():
        raise LapelensError(f"--stats {path} is a run folder, not a statistics folder: pass --stats {inner}.")
    return load(path, "activation_stats", tag=tag, languages=languages)


def _read_texts(spec: str) -> dict[str, list[str]]:
    texts = {}
    for lang, file in _pairs(spec, "--train-texts").items():
        try:
            texts[lang] = [line for line in Path(file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise LapelensError(f"Cannot read the {lang} training texts {file}: {exc.strerror}.") from exc
    return texts


def _check_options(method: str, options: dict, source, languages: tuple[str, ...] | None) -> None:
    """Refuse meaningless selections before computing them; fill the model-dependent defaults."""
    checks = {"rate": check_rate, "quantile": check_quantile, "positive": check_positive}
    spec = METHODS[method]
    for option in spec.option_specs:
        if option.check is not None:
            checks[option.check](options.get(option.name), option.flag)
    names = languages or getattr(source, "languages", None)
    if names is not None and len(names) < spec.min_languages:
        least = {2: "two", 3: "three"}.get(spec.min_languages, str(spec.min_languages))
        raise LapelensError(
            f"method {method} compares languages, but the input has only {', '.join(names)}: "
            f"use statistics of at least {least} languages (and at least {least} in --languages)."
        )
    for option in spec.option_specs:
        if option.model_default and option.name not in options:
            model = getattr(source, "meta", {}).get("model")  # statistics record the model they were collected on
            embedded = model is not None and is_embedded(model)
            options[option.name] = getattr(defaults_for(model if embedded else "other"), option.name)
            print(
                f"{option.flag} {options[option.name]:g} ({'the embedded model' if embedded else 'the paper'}'s default)"
            )


def _check_not_empty(method: str, result, options: dict) -> None:
    """Refuse a selection empty for every language (nothing is written); warn about empty languages."""
    unit = "parameters" if METHODS[method].returns == "parameters" else "neurons"
    rate = options.get("top_rate")
    if result.budget == 0 and rate is not None:  # the rate is a share of every unit of the model
        if unit == "neurons":
            total = result.n_layers * result.d_mlp
            raise LapelensError(
                f"--top-rate {rate:g} keeps round({rate:g} x {total:,}) = 0 of the model's {total:,} "
                f"neurons: give at least {1 / total:.3g}."
            )
        raise LapelensError(f"--top-rate {rate:g} keeps no {unit}: give a larger one.")
    empty = [l for l in result.languages if result.count(l) == 0]
    if len(empty) == len(result.languages):
        budget = f" (its budget: {result.budget:,})" if result.budget is not None else ""
        raise LapelensError(
            f"method {method} selected no {unit} for any language{budget}, so nothing was written: "
            "loosen its options (a larger --top-rate, a lower threshold)."
        )
    if empty:
        print(
            f"warning: method {method} selected no {unit} for {','.join(empty)} (written as empty sets).",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(IdentifyConfig, args)
    spec = METHODS[cfg.method]
    languages = cfg.languages or None
    options = {}
    for name, entries in method_options().items():
        value = getattr(args, name)
        if value is None:
            continue
        if name not in spec.options:
            raise LapelensError(
                f"{entries[0][1].flag} does not apply to method {cfg.method} "
                f"(its options: {list(spec.options) or 'none'})."
            )
        options[name] = value

    if spec.source == "stats":
        if cfg.reference and not spec.reference:
            raise LapelensError(
                f"--reference only applies to methods that match a reference selection "
                f"({', '.join(m for m, s in METHODS.items() if s.reference)}), not {cfg.method}."
            )
        if cfg.stats is None and cfg.reference is None:
            raise LapelensError(f"Method {cfg.method} needs --stats PATH.")
        source = load_stats(cfg.stats, cfg.tag, languages) if cfg.stats is not None else None
        if cfg.reference is not None:
            # An official .pth names no languages and no width: take them from --languages / --d-mlp,
            # else from the statistics when there are some.
            d_mlp = cfg.d_mlp if cfg.d_mlp is not None else (source.d_mlp if source is not None else None)
            names = languages or (source.languages if source is not None and not cfg.reference.is_dir() else None)
            reference = load_neurons(cfg.reference, languages=names, d_mlp=d_mlp)
            if source is None:
                source = reference
            else:
                options["reference"] = reference
    elif spec.source == "sentences":
        if cfg.sentences is None:
            raise LapelensError(f"Method {cfg.method} needs --sentences PATH (per-sentence mean activations).")
        source = SentenceActivations.load(cfg.sentences)
    else:  # models
        if cfg.base is None:
            raise LapelensError(
                f"Method {cfg.method} needs --base DIR and --tuned lang=DIR,... (or --train-texts lang=FILE,...)."
            )
        if cfg.tuned:
            tuned = _pairs(cfg.tuned, "--tuned")
        elif cfg.train_texts:
            out = cfg.tuned_out or cfg.out.with_name(cfg.out.name + ".tuned")
            tuned = tune_per_language(cfg.base, _read_texts(cfg.train_texts), out, steps=cfg.train_steps)
        else:
            raise LapelensError(
                f"Method {cfg.method} needs --tuned lang=DIR,... or --train-texts lang=FILE,... to tune copies first."
            )
        options["tuned"] = tuned
        source = cfg.base

    _check_options(cfg.method, options, source, languages)
    result = identify(source, cfg.method, languages=languages, **options)
    _check_not_empty(cfg.method, result, options)
    if cfg.out.suffix == OFFICIAL_MASK_SUFFIX:
        if spec.returns == "parameters":
            raise LapelensError(
                f"{cfg.method} selects parameters, which the official neuron mask format cannot hold: use a folder for --out."
            )
        path = result.to_official(cfg.out)
    else:
        path = result.save(cfg.out)
    print(result.per_language().to_string())
    print(f"wrote {path}")
