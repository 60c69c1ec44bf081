"""``lapelens perturb``: the perplexity matrix when each language's neurons are deactivated."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._evaluation import load_model_quietly, load_perturbation, print_frame, quiet_transformers
from lapelens.cli._options import DtypeOptions, EvalTextOptions, ModelOptions
from lapelens.constants import COMPARE_TABLE
from lapelens.errors import LapelensError
from lapelens.evaluate.perplexity import PerturbationResult, compare, perturbation_matrix
from lapelens.figures.perturbation import compare_figure
from lapelens.lock import OUTPUT
from lapelens.methods import METHODS


@dataclass(kw_only=True)
class PerturbConfig(EvalTextOptions, DtypeOptions, ModelOptions):
    neurons: tuple[str, ...] | None = None
    """Neuron folders, official .pth masks or PV parameter-mask folders; NAME=PATH names one."""
    show: tuple[Path, ...] | None = None
    """Print saved results (folders written by --out) instead of computing."""
    out: Path | None = field(default=None, metadata=OUTPUT)
    """Folder for the result (with several --neurons: one sub-folder per name, plus compare.csv)."""
    figure: Path | None = None
    """Also write the heatmap(s) as HTML to this file."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "perturb",
        PerturbConfig,
        run,
        help="PPL of every language with each language's neurons deactivated (Tang et al., Fig. 2).",
        description="Rows: the language whose neurons are deactivated (or PV parameters zeroed), plus 'none'; "
        "columns: the language of the held-out text. Prints PPL, relative change with 95% bootstrap intervals, "
        "and the summary numbers (diagonal mean relative increase, diagonal-largest-in-column count, "
        "diagonal/off-diagonal ratio). Several --neurons give one matrix each and a side-by-side summary; "
        "a set whose method is a baseline (random) is the reference for ratio_vs_reference.",
    )


def _named(specs: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` or ``PATH`` (name "" = the set's method)."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        out.append((name, Path(path)) if sep else ("", Path(spec)))
    return out


def _report(name: str, result) -> None:
    lo, hi = result.interval("relative")
    print(
        f"\n=== {name}: method {result.meta.get('method')}, model {result.meta.get('model')}, "
        f"{result.meta.get('chunks')} chunks of {result.meta.get('seq_len')} tokens, "
        f"{result.meta.get('seconds', '?')} s ({result.meta.get('tokens_per_second', '?')} tokens/s)"
    )
    if result.meta.get("sizes"):
        print(f"{result.meta.get('unit')} per language: {result.meta['sizes']}")
    print_frame("PPL (rows: deactivated, columns: evaluated)", result.ppl)
    print_frame("Relative PPL change (%)", result.relative, percent=True)
    print_frame("  95% interval, low (%)", lo, percent=True)
    print_frame("  95% interval, high (%)", hi, percent=True)
    print_frame("Summary", result.summary())


def run(cfg: PerturbConfig) -> None:
    if cfg.show:
        results = {str(p): PerturbationResult.load(p) for p in cfg.show}
    else:
        if not cfg.neurons:
            raise LapelensError("Give --neurons PATH[,PATH ...] (or --show RESULT,...).")
        if cfg.out is None:
            raise LapelensError("Give --out FOLDER for the result.")
        cfg.check_sizes()
        with quiet_transformers(cfg.quiet):
            model = load_model_quietly(cfg)
        requested = list(cfg.languages) if cfg.languages else None
        sets, sources = {}, {}
        for name, path in _named(cfg.neurons):
            perturbation = load_perturbation(path, model, requested)
            sets[name or perturbation.method] = perturbation
            sources[name or perturbation.method] = str(path)
        if len(sets) < len(cfg.neurons):
            raise LapelensError("Two --neurons have the same name (their method): name them NAME=PATH.")
        languages = requested or list(next(iter(sets.values())).languages)
        chunks = cfg.chunks(model, languages)
        results = {}
        for name, perturbation in sets.items():
            results[name] = perturbation_matrix(
                model,
                perturbation,
                chunks,
                n_boot=cfg.n_boot,
                seed=cfg.seed,
                progress=not cfg.quiet,
                meta={"corpus": f"{cfg.corpus}:{cfg.split}", "source": sources[name]},
                **cfg.batch,
            )
            folder = cfg.out if len(sets) == 1 else cfg.out / name
            results[name].save(folder)
    for name, result in results.items():
        _report(name, result)
    if len(results) > 1:
        baseline = lambda r: getattr(METHODS.get(r.method), "baseline", False)  # noqa: E731
        table = compare(results, reference=next((n for n, r in results.items() if baseline(r)), None))
        print_frame("Side by side", table)
        if not cfg.show:
            table.to_csv(cfg.out / COMPARE_TABLE)
    if cfg.figure:
        fig = next(iter(results.values())).figure() if len(results) == 1 else compare_figure(results)
        cfg.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(str(cfg.figure))
    if not cfg.show:
        print(f"\nwrote {cfg.out}")
