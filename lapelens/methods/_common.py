"""Checks and small pieces shared by the selection methods."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.stats import ActivationStats


def check_stats(stats: ActivationStats) -> None:
    """Refuse statistics that no method can use: no neurons, no tokens, impossible counts."""
    if not isinstance(stats, ActivationStats):
        raise LapelensError(f"Expected ActivationStats, got {type(stats).__name__}.")
    if stats.n_layers == 0 or stats.d_mlp == 0 or not stats.languages:
        raise LapelensError(
            f"The statistics are empty ({stats.n_layers} layers x {stats.d_mlp} neurons x "
            f"{len(stats.languages)} languages): collect them on a model and some text first."
        )
    stats._check_tokens()  # every language needs tokens, else p = count / 0
    if bool((stats.n < 0).any()) or bool((stats.count < 0).any()):
        raise LapelensError("The statistics have negative token counts: the file is corrupt; collect again.")
    if bool((stats.count > stats.n.view(-1, 1, 1)).any()):
        raise LapelensError(
            "Some neuron fired on more tokens than the language has (count > n): the statistics are "
            "corrupt or were merged inconsistently; collect again."
        )


def check_rate(name: str, value: float, *, allow_zero: bool = True) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0) or (value == 0.0 and not allow_zero):
        raise LapelensError(f"{name} must be in {'[0, 1]' if allow_zero else '(0, 1]'}, got {value}.")
    return value


def quantile_value(flat: Float[Tensor, " n"], ratio: float, name: str) -> float:
    """``flat.kthvalue(round(len(flat) * ratio))`` as in the official ``identify.py``.

    Python's ``round`` (half to even) on the float product, exactly as the official script, so
    the same entry is picked. The k-th smallest value, k counted from 1.
    """
    check_rate(name, ratio)
    k = round(len(flat) * ratio)
    if not 1 <= k <= len(flat):
        raise LapelensError(
            f"{name}={ratio} picks the {k}-th smallest of {len(flat)} values, which does not exist: use a larger {name}."
        )
    return flat.kthvalue(k).values.item()


def settings(**kw) -> dict:
    """Plain-JSON copy of a method's options."""
    return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
