"""``lapelens neurons``: look at neuron sets (lapelens folders or official .pth mask files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("neurons", help="Show or compare neuron sets.")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="Print the summary tables of a neuron set (or PV parameter mask).")
    show.add_argument("path", type=Path, help="A lapelens folder or an official .pth mask file.")
    compare = sub.add_parser("compare", help="Per-language Jaccard between two neuron sets of one model.")
    compare.add_argument("path", type=Path, help="The first neuron set (a lapelens folder or an official .pth mask file).")
    compare.add_argument("other", type=Path, help="The second neuron set, of the same model.")
    for p in (show, compare):
        p.add_argument("--languages", help="Official files only: comma-separated language names in the file's order "
                                            "(default: en,zh,fr,es,vi,id,ja for 7 entries, without ja for 6).")
        p.add_argument("--d-mlp", type=int, help="Official files only: the MLP width (default: largest index + 1).")
    parser.set_defaults(func=run)
    return parser


def _read(path: Path, args: argparse.Namespace):
    from lapelens.artifacts import SELECTION_KINDS, load

    if not path.exists():
        raise LapelensError(f"{path} does not exist: pass a lapelens neuron folder or an official .pth mask file.")
    languages = [l.strip() for l in args.languages.split(",") if l.strip()] if args.languages else None
    neurons = load(path, SELECTION_KINDS, languages=languages, d_mlp=args.d_mlp)
    if not path.is_file():
        return neurons
    if neurons.meta.get("languages_assumed"):
        print(f"note: {path} names no languages; assumed {', '.join(neurons.languages)} "
              f"from its {len(neurons.languages)} entries (override with --languages).")
    if neurons.meta.get("d_mlp_inferred"):
        print(f"note: MLP width taken as the largest index + 1 = {neurons.d_mlp} (override with --d-mlp).")
    return neurons


def run(args: argparse.Namespace) -> None:
    from lapelens.errors import LapelensError
    from lapelens.neurons import LanguageNeurons

    first = _read(args.path, args)
    if args.action == "show":
        print(first.summary())
        return
    second = _read(args.other, args)
    if not (isinstance(first, LanguageNeurons) and isinstance(second, LanguageNeurons)):
        raise LapelensError("compare works on neuron sets, not PV parameter masks.")
    print(first.compare(second).round(4).to_string())
