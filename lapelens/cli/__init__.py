"""The ``lapelens`` command: one module per sub-command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Sequence

from lapelens._version import __version__
from lapelens.errors import LapelensError

#: Sub-command name -> module under lapelens.cli (each defines `add_parser(subparsers)`).
COMMANDS = {
    "collect": "collect",
    "corpus": "corpus",
    "train": "train",
    "identify": "identify",
    "neurons": "neurons",
    "perturb": "perturb",
    "sweep": "sweep",
    "steer": "steer",
    "generate": "generate",
    "ses": "ses",
    "reproduce": "reproduce",
    "explore": "explore",
    "figures": "figures",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lapelens", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lapelens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        try:
            mod = import_module(f"lapelens.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"lapelens.cli.{module}":
                continue  # that command is not part of this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` lets tests call the CLI in-process."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LapelensError as exc:
        print(f"lapelens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
