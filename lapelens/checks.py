"""Checks of user input that every command runs before any long work (one clear line each).

Each check raises ``LapelensError`` naming the setting as the user typed it (``what``: a CLI flag
such as ``--device``), what is wrong with it and how to fix it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from lapelens.constants import EMBEDDED
from lapelens.errors import LapelensError


def check_device(device: str, what: str = "--device") -> None:
    """A device torch can parse and this machine has (cpu, cuda[:N] with CUDA, mps on Apple)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise LapelensError(f"{what} {device!r} is not a torch device: use cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LapelensError(f"{what} {device}: this torch build or machine has no CUDA device; use {what} cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LapelensError(
                f"{what} {device}: only {torch.cuda.device_count()} CUDA device(s) here; "
                f"use cuda:0 ... cuda:{torch.cuda.device_count() - 1}."
            )
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise LapelensError(f"{what} mps: MPS is not available on this machine; use {what} cpu.")
        return
    raise LapelensError(f"{what} {device!r} is not supported: use cpu, cuda, cuda:N or mps.")


def looks_like_path(name: str) -> bool:
    """Whether a ``--model`` value is meant as a local folder rather than a hub name.

    True for ``./x``, ``../x``, ``~/x``, ``/x``, and for ``a/b`` whose first component exists
    here (``models/tiny`` when ``models/`` is a local folder); a hub name ``org/name`` is False
    unless a local folder ``org`` exists.
    """
    if name.startswith(("./", "../", "~", "/", "." + os.sep, ".." + os.sep)) or os.path.isabs(name):
        return True
    parts = Path(name).parts
    return len(parts) > 1 and Path(parts[0]).exists()


def check_model_name(name: str, what: str = "--model") -> None:
    """Refuse a mistyped local path at once, instead of asking the hub for it (and retrying)."""
    name = str(name)
    if name == EMBEDDED or Path(name).expanduser().exists():
        return
    if looks_like_path(name):
        raise LapelensError(
            f"{what} {name}: no such folder (the path does not exist); check the path (or use {what} {EMBEDDED})."
        )


def check_languages(languages: Sequence[str], what: str = "--languages", minimum: int = 1, why: str = "") -> None:
    """Distinct, and at least ``minimum`` of them."""
    seen: set[str] = set()
    twice = sorted({l for l in languages if l in seen or seen.add(l)})  # type: ignore[func-returns-value]
    if twice:
        raise LapelensError(f"{what} names {', '.join(twice)} more than once: give each language once.")
    if len(languages) < minimum:
        raise LapelensError(f"{what} {','.join(languages) or '(none)'}: {why or f'give at least {minimum} languages'}.")


def check_rate(value: float | None, what: str) -> None:
    """A share in (0, 1]: 0 would select nothing, and a result on nothing means nothing."""
    if value is not None and not (0 < value <= 1):
        raise LapelensError(f"{what} must be in (0, 1] (a share of all neurons; the paper uses 0.01), got {value}.")


def check_quantile(value: float | None, what: str) -> None:
    if value is not None and not (0 <= value <= 1):
        raise LapelensError(f"{what} must be in [0, 1], got {value}.")


def check_positive(value: int | float | None, what: str, minimum: int = 1) -> None:
    if value is not None and (not math.isfinite(value) or value < minimum):
        raise LapelensError(f"{what} must be at least {minimum}, got {value}.")


def check_finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise LapelensError(f"{what} must be a finite number, got {value}.")
