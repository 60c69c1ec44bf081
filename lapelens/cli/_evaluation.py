"""Pieces shared by the evaluation commands (perturb, sweep, steer, generate)."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lapelens.constants import EMBEDDED
from lapelens.defaults import SEQ_LEN
from lapelens.errors import LapelensError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED, help="Hub name, local HF folder, or 'embedded' (default).")
    parser.add_argument("--device", default="cpu", help="Torch device (default: cpu).")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")


def add_corpus_args(parser: argparse.ArgumentParser, tokens_default: int) -> None:
    parser.add_argument("--corpus", default=EMBEDDED,
                        help="Held-out text: 'embedded' (default), 'wikipedia', or a folder of {lang}.valid.txt files.")
    parser.add_argument("--split", default="valid", help="Corpus split to evaluate on (default: valid).")
    parser.add_argument("--languages", help="Comma-separated evaluation languages (default: those of the neuron set).")
    parser.add_argument("--tokens-per-language", type=int, default=tokens_default,
                        help=f"Evaluation tokens per language, rounded down to whole chunks (default: {tokens_default}).")
    parser.add_argument("--seq-len", type=int, default=None,
                        help=f"Tokens per chunk (default: {SEQ_LEN}, as `lapelens collect`, or the model's context if shorter).")
    parser.add_argument("--batch-size", type=int, default=None, help="Chunks per forward pass.")
    parser.add_argument("--n-boot", type=int, default=1000, help="Bootstrap resamples for the 95%% intervals (1000).")
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed (0).")


def add_prompt_args(parser: argparse.ArgumentParser, scope: str = "") -> None:
    """Prompts from a parallel corpus; ``scope`` prefixes the help (e.g. "prompted: ")."""
    parser.add_argument("--parallel", default=EMBEDDED, help=f"{scope}parallel corpus, 'embedded' (default) or 'flores'.")
    parser.add_argument("--parallel-split", default="valid", help=f"{scope}split of the parallel corpus (valid).")
    parser.add_argument("--n-prompts", type=int, default=20, help=f"{scope}prompts per (source) language (20).")
    parser.add_argument("--prompt-tokens", type=int, default=32, help=f"{scope}tokens kept of each prompt (32).")


def add_result_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="Folder for the result (summary.csv, samples.jsonl).")
    parser.add_argument("--figure", type=Path, help="Also write a bar chart as HTML to this file.")


def split_list(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise LapelensError(f"{flag} is empty: give comma-separated values.")
    return items


def positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise LapelensError(f"{flag} must be a positive number, got {value}.")


def load_selection(path: Path, model: Any, languages: list[str] | None = None, flag: str = "--neurons") -> Any:
    """A PV parameter-mask folder, a lapelens neuron folder, or an official ``.pth`` mask file
    (``lapelens.load``, refusing any other kind of result).

    An official file names no languages: ``languages`` (from ``--languages``) names its entries
    when there are as many; a 7-entry file without them is read in the paper's order
    (en,zh,fr,es,vi,id,ja), and a note says so. Any other length needs ``--languages``.
    """
    from lapelens.artifacts import SELECTION_KINDS, load
    from lapelens.models import neuron_spec

    if not path.exists():
        raise LapelensError(f"{flag} {path} does not exist: pass a lapelens neuron folder or an official .pth mask file.")
    names = official_names(path, languages, flag) if path.is_file() else None
    selection = load(path, SELECTION_KINDS, languages=names, d_mlp=neuron_spec(model).d_mlp)
    if path.is_file() and selection.meta.get("languages_assumed"):
        print(f"note: {path} names no languages; its {len(selection.languages)} entries are taken to be "
              f"{','.join(selection.languages)} (the paper's order): if they are others, name them with --languages.")
    return selection


def official_names(path: Path, languages: list[str] | None, flag: str = "--neurons") -> list[str] | None:
    """The names of an official file's entries from ``--languages``, or None for the paper's default."""
    import torch

    from lapelens.neurons import default_official_languages

    try:
        n_entries = len(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception:
        return None  # not an official file: lapelens.load says what it is
    if languages is not None and len(languages) == n_entries:
        return languages
    try:
        default_official_languages(n_entries)
    except LapelensError:
        given = f" (--languages gives {len(languages)})" if languages else ""
        raise LapelensError(f"{flag} {path} has {n_entries} language entries and names none{given}: "
                            f"name all {n_entries} in the file's order with --languages a,b,c.") from None
    return None


def load_perturbation(path: Path, model: Any, languages: list[str] | None = None) -> Any:
    """``load_selection`` for the sets ``perturb`` deactivates."""
    return load_selection(path, model, languages)


def load_model_quietly(args: argparse.Namespace) -> Any:
    """``load_model(args.model, device=args.device)`` with nothing the loading prints reaching the
    terminal: transformers' weight-loading bar and log lines, ``print``s and warnings are captured.
    If loading fails, what was captured goes to stderr before the error propagates, so nothing that
    explains the failure is lost."""
    import io
    import sys
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    from transformers.utils import logging as hf_logging

    from lapelens.models import load_model

    captured = io.StringIO()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its handler holds the real stderr, which redirect_stderr does not replace
    try:
        with quiet_transformers(True), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with redirect_stdout(captured), redirect_stderr(captured):
                    return load_model(args.model, device=args.device)
            except BaseException:
                sys.stderr.write(captured.getvalue())
                for w in caught:
                    sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
                raise
    finally:
        hf_logging.set_verbosity(verbosity)


@contextmanager
def quiet_transformers(quiet: bool) -> Iterator[None]:
    """Silence transformers' weight-loading bar with ``--quiet``."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def print_frame(title: str, frame: Any, percent: bool = False) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50):
        shown = (frame * 100).round(2) if percent else frame.round(4) if hasattr(frame, "round") else frame
        print(f"\n{title}\n{shown.to_string()}")
