"""``lapelens explore``: one self-contained HTML page to look at single neurons of a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.cli._evaluation import positive
from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explore",
        help="Single-neuron explorer of a `lapelens reproduce` folder (one offline HTML file).",
        description="Overview of the neurons each method selected (layers x languages), and per neuron: firing "
        "probability and mean activation per language, activation histograms, LAPE entropy and rank, the "
        "methods that selected it, top-activating contexts, the tokens it promotes and suppresses, and the "
        "loss change when it alone is deactivated. Loads the run's model.",
    )
    parser.add_argument("run_dir", type=Path, help="Folder written by `lapelens reproduce` (stats/, neurons_*/, config.json).")
    parser.add_argument("--out", type=Path, required=True, help="HTML file to write.")
    parser.add_argument("--model", help="Model to load instead of the one in the run's config.json.")
    parser.add_argument("--context-tokens", type=int, default=8192,
                        help="Train tokens per language for contexts and histograms (default: %(default)s).")
    parser.add_argument("--top-k", type=int, default=3, help="Top contexts per neuron and language (default: %(default)s).")
    parser.add_argument("--loss-neurons", type=int, default=42,
                        help="How many LAPE neurons get a single-neuron loss change (default: %(default)s).")
    parser.add_argument("--loss-tokens", type=int, default=256,
                        help="Held-out tokens per language for the loss change (default: %(default)s).")
    parser.add_argument("--loss-seq-len", type=int, default=128,
                        help="Chunk length of that held-out text (default: %(default)s).")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    from lapelens.explorer import explore
    from lapelens.models import load_model

    for flag, value in (("--context-tokens", args.context_tokens), ("--top-k", args.top_k),
                        ("--loss-tokens", args.loss_tokens), ("--loss-seq-len", args.loss_seq_len)):
        positive(value, flag)
    if args.loss_neurons < 0:
        raise LapelensError(f"--loss-neurons must be 0 or more, got {args.loss_neurons}.")
    model = load_model(args.model) if args.model else None
    ex = explore(args.run_dir, model, out=args.out, context_tokens=args.context_tokens, top_k=args.top_k,
                 loss_neurons=args.loss_neurons, loss_tokens=args.loss_tokens,
                 loss_seq_len=args.loss_seq_len, progress=not args.quiet)
    s = ex.data.settings
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {ex.seconds:.0f} s: {s['detail_neurons']} neurons with contexts, "
          f"{s['loss_neurons']} of {s['lape_neurons']} LAPE neurons with a loss change; timings {s['timings_seconds']}")
