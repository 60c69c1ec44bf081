"""Pieces shared by the evaluation commands (perturb, sweep, steer, generate); their flags are in
``lapelens.cli._options``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lapelens.artifacts import SELECTION_KINDS
from lapelens.errors import LapelensError
from lapelens.loader import load
from lapelens.models import load_model, neuron_spec
from lapelens.neurons import LanguageNeurons, default_official_languages


def load_selection(path: Path, model: Any, languages: list[str] | None = None, flag: str = "--neurons") -> Any:
    """A PV parameter-mask folder, a lapelens neuron folder, or an official ``.pth`` mask file
    (``lapelens.load``, refusing any other kind of result).

    An official file names no languages: ``languages`` (from ``--languages``) names its entries
    when there are as many; a 7-entry file without them is read in the paper's order
    (en,zh,fr,es,vi,id,ja), and a note says so. Any other length needs ``--languages``.
    """
    if not path.exists():
        raise LapelensError(
            f"{flag} {path} does not exist: pass a lapelens neuron folder or an official .pth mask file."
        )
    names = official_names(path, languages, flag) if path.is_file() else None
    selection = load(path, SELECTION_KINDS, languages=names, d_mlp=neuron_spec(model).d_mlp)
    if path.is_file() and isinstance(selection, LanguageNeurons) and selection.languages_assumed:
        print(
            f"note: {path} names no languages; its {len(selection.languages)} entries are taken to be "
            f"{','.join(selection.languages)} (the paper's order): if they are others, name them with --languages."
        )
    return selection


def official_names(path: Path, languages: list[str] | None, flag: str = "--neurons") -> list[str] | None:
    """The names of an official file's entries from ``--languages``, or None for the paper's default."""
    import torch

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
        raise LapelensError(
            f"{flag} {path} has {n_entries} language entries and names none{given}: "
            f"name all {n_entries} in the file's order with --languages a,b,c."
        ) from None
    return None


def load_perturbation(path: Path, model: Any, languages: list[str] | None = None) -> Any:
    """``load_selection`` for the sets ``perturb`` deactivates."""
    return load_selection(path, model, languages)


def load_model_quietly(args: Any) -> Any:
    """``load_model(args.model, device=args.device, dtype=args.dtype)`` (``args``: a command's
    config) with nothing the loading prints reaching the terminal: transformers' weight-loading bar and log lines, ``print``s and warnings are captured.
    If loading fails, what was captured goes to stderr before the error propagates, so nothing that
    explains the failure is lost."""
    import io
    import sys
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    from transformers.utils import logging as hf_logging

    captured = io.StringIO()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its handler holds the real stderr, which redirect_stderr does not replace
    try:
        with quiet_transformers(True), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with redirect_stdout(captured), redirect_stderr(captured):
                    return load_model(args.model, device=args.device, dtype=args.dtype)
            except Exception:  # not on Ctrl-C: what the load printed explains no failure then
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
