"""``lapelens neurons``: look at neuron sets (lapelens folders or official .pth mask files)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.artifacts import SELECTION_KINDS
from lapelens.cli._config import add_command
from lapelens.errors import LapelensError
from lapelens.loader import load
from lapelens.neurons import LanguageNeurons


@dataclass(kw_only=True)
class ShowConfig:
    path: Path = field(metadata={"positional": True})
    """A neuron set: a lapelens folder or an official .pth mask file (or a PV parameter-mask folder)."""
    languages: tuple[str, ...] | None = None
    """Official files only: language names in the file's order (default: en,zh,fr,es,vi,id,ja for 7 entries,
    without ja for 6)."""
    d_mlp: int | None = None
    """Official files only: the MLP width (default: largest index + 1)."""


@dataclass(kw_only=True)
class CompareConfig(ShowConfig):
    other: Path = field(metadata={"positional": True})
    """The second neuron set, of the same model."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("neurons", help="Show or compare neuron sets.")
    sub = parser.add_subparsers(dest="action", required=True)
    add_command(
        sub, "show", ShowConfig, run_show, help="Print the summary tables of a neuron set (or PV parameter mask)."
    )
    add_command(
        sub, "compare", CompareConfig, run_compare, help="Per-language Jaccard between two neuron sets of one model."
    )
    return parser


def _read(path: Path, cfg: ShowConfig):
    if not path.exists():
        raise LapelensError(f"{path} does not exist: pass a lapelens neuron folder or an official .pth mask file.")
    languages = list(cfg.languages) if cfg.languages else None
    neurons = load(path, SELECTION_KINDS, languages=languages, d_mlp=cfg.d_mlp)
    if not path.is_file():
        return neurons
    if neurons.languages_assumed:
        print(
            f"note: {path} names no languages; assumed {', '.join(neurons.languages)} "
            f"from its {len(neurons.languages)} entries (override with --languages)."
        )
    if neurons.d_mlp_inferred:
        print(f"note: MLP width taken as the largest index + 1 = {neurons.d_mlp} (override with --d-mlp).")
    return neurons


def run_show(cfg: ShowConfig) -> None:
    print(_read(cfg.path, cfg).summary())


def run_compare(cfg: CompareConfig) -> None:
    first, second = _read(cfg.path, cfg), _read(cfg.other, cfg)
    if not (isinstance(first, LanguageNeurons) and isinstance(second, LanguageNeurons)):
        raise LapelensError("compare works on neuron sets, not PV parameter masks.")
    print(first.compare(second).round(4).to_string())
