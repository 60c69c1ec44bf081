"""The ``lapelens`` command: one module per sub-command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from lapelens import interrupt
from lapelens._version import __version__
from lapelens.checks import check_device, check_languages, check_model_name
from lapelens.cli._config import output_locks
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
    "figures": "figures",
    "explore": "explore",
}

DESCRIPTION = """\
Find the language-specific neurons of a language model with LAPE (Tang et al., ACL 2024) and its
baselines, and test them: perplexity when they are deactivated, steering the output language, and
sentence-embedding similarity. Everything runs on a small model and corpus shipped with the package
unless you pass --model / --corpus.

start here:
  lapelens reproduce --out runs/embedded --quick   the whole paper on the embedded model
  lapelens collect --out stats                     statistics, then: lapelens identify --stats stats --out neurons
  lapelens <command> --help                        the options of one command
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lapelens", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"lapelens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMANDS.values():
        import_module(f"lapelens.cli.{module}").add_parser(sub)
    return parser


def _check_common(args: argparse.Namespace) -> None:
    """Checks every command shares, before it loads anything: device, model path, language list."""
    if isinstance(getattr(args, "device", None), str):
        check_device(args.device)
    if isinstance(getattr(args, "model", None), str):
        check_model_name(args.model)
    languages = getattr(args, "languages", None)
    if isinstance(languages, str):
        check_languages([l.strip() for l in languages.split(",") if l.strip()])
    elif isinstance(languages, (list, tuple)):
        check_languages(list(languages))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` lets tests call the CLI in-process.

    Every command holds the lock of its output folder(s) while it runs (a second writer is refused
    at once), and ends on Ctrl-C or SIGTERM with one line saying what was saved (exit 130 / 143).
    """
    args = build_parser().parse_args(argv)
    try:
        with interrupt.signals_interrupt():
            _check_common(args)
            with output_locks(args, argv):
                args.func(args)
    except LapelensError as exc:
        _close_bars()
        print(f"lapelens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        _close_bars()
        print(f"lapelens {args.command}: {interrupt.summary(exc)}", file=sys.stderr)
        return interrupt.exit_code(exc)
    return 0


def _close_bars() -> None:
    """End the progress bars a stopped stage left open: closed later (at exit) they would print
    themselves again after the command's last line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
