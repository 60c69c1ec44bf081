"""LAPE (Tang et al., 2024) and its LAVE variant: low-entropy neurons over per-language scores.

``entropy_select`` follows the official ``identify.py`` operation by operation (same dtype, same
reductions), so on the same statistics it picks the same neurons, with these decisions where the
official script leaves the result undefined or unsafe:

- **Ties at the cut.** ``identify.py`` takes the ``round(top_rate * units)`` lowest entropies with
  ``torch.topk(largest=False)``, whose choice among equal values is unspecified (on CPU it is
  neither the first nor the last index: ``torch.zeros(100).topk(5, largest=False)`` returns
  65..69). Here the ranking is a *stable* ascending sort: among equal entropies the unit with the
  lower flat index (layer first, then neuron) wins. Without a tie at the cut both agree.
- **Fewer units pass the filter than the budget.** ``identify.py`` then fills the budget with
  ``H = inf`` units, i.e. neurons that no language activates above the threshold (all-zero
  neurons among them). Here they are never selected: fewer units are returned, with a warning.
- **A language with no units** keeps its (empty) slot; ``identify.py`` drops trailing ones
  (``torch.bincount`` is only as long as the last language that has a neuron).
- **``activation_bar_ratio``** is the quantile, over the same flattened scores as
  ``filter_rate``, of the bar that a *selected* unit's score must exceed (strictly) for the unit
  to be assigned to a language. With the defaults both quantiles are 0.95, so the bar equals
  the filter threshold and every selected unit gets at least one language. With a larger
  ``activation_bar_ratio`` a selected unit may get none (counted in ``meta["unassigned"]``);
  with a smaller one a unit may also go to languages that did not pass the filter. As official.
- **All-zero units** (0 on every language): ``q = 0/0 -> 0``, ``H = 0``; since no score exceeds
  the (non-negative) threshold, their ``H`` becomes ``inf`` and they are never selected.
"""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.methods._common import check_rate, check_stats, quantile_value, settings
from lapelens.methods._registry import OptionHelp, register
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats, entropy_languages_last, languages_last


def entropy_select(
    scores: Float[Tensor, " lang *unit"],
    *,
    top_rate: float,
    filter_rate: float,
    activation_bar_ratio: float,
) -> tuple[Bool[Tensor, " lang *unit"], dict]:
    """LAPE's selection on non-negative per-language scores (firing probabilities for LAPE).

    1. ``H`` = entropy of the scores normalised over languages (0/0 -> 0, 0 log 0 = 0).
    2. ``thr`` = k-th smallest of all unit x language scores, ``k = round(N * filter_rate)``.
    3. Units with no score ``> thr`` get ``H = inf`` and are never selected.
    4. Keep the ``round(units * top_rate)`` lowest-``H`` units over all units (stable ranking:
       ties go to the lower flat index); fewer, with a warning, if fewer have finite ``H``.
    5. Assign each kept unit to every language with score ``> bar``, ``bar`` the k-th smallest
       score with ``k = round(N * activation_bar_ratio)``.

    ``scores[k]`` are language k's scores (language first, like the mask returned). Returns the
    mask and what the selection measured (thresholds, counts).
    """
    if scores.ndim < 2 or scores.numel() == 0:
        raise LapelensError(f"Scores of shape {tuple(scores.shape)}: need at least one unit and one language.")
    if (
        not scores.is_floating_point()
        or bool(torch.isnan(scores).any())
        or bool((scores < 0).any())
        or bool(torch.isinf(scores).any())
    ):
        raise LapelensError("LAPE needs finite, non-negative scores per unit and language (no NaN, inf or negatives).")
    check_rate("top_rate", top_rate)
    # The official identify.py reduces over the last, contiguous axis of over_zero[layer, neuron,
    # lang]; a sum over the strided language-first axis can round differently. So the computation
    # below runs, unchanged, on the official layout: languages last, contiguous.
    scores = languages_last(scores)
    unit_shape, n_lang = scores.shape[:-1], scores.shape[-1]

    h = entropy_languages_last(scores)
    flat_scores = scores.flatten()
    thr = quantile_value(flat_scores, filter_rate, "filter_rate")
    passing = (scores > thr).sum(dim=-1)
    h[passing == 0] = torch.inf

    flat_h = h.flatten()
    budget = round(len(flat_h) * top_rate)
    order = torch.sort(flat_h, stable=True).indices  # ascending; ties keep index order
    n_finite = int(torch.isfinite(flat_h).sum())
    take = min(budget, n_finite)
    if take < budget:
        warnings.warn(
            f"Only {n_finite} units have a score above the filter threshold {thr:.6g} in some language, "
            f"fewer than the budget of {budget} (top_rate={top_rate}); selecting {take}. The official "
            "identify.py would fill the budget with units that no language activates.",
            UserWarning,
            stacklevel=3,
        )
    chosen = order[:take]

    bar = quantile_value(flat_scores, activation_bar_ratio, "activation_bar_ratio")
    assigned = scores.reshape(-1, n_lang)[chosen] > bar  # take x lang
    mask = torch.zeros(n_lang, len(flat_h), dtype=torch.bool)
    mask[:, chosen] = assigned.T
    info = {
        "threshold": thr,
        "activation_bar": bar,
        "budget": budget,
        "selected": take,
        "unassigned": int((~assigned.any(dim=1)).sum()),
    }
    return mask.reshape(n_lang, *unit_shape), info


#: The options LAPE, LAVE and PV share (``entropy_select``'s).
ENTROPY_OPTIONS = {
    "top_rate": OptionHelp(
        "share of units to keep, in (0, 1] (default: 0.1 for statistics of the embedded model, "
        "0.01 (the paper's) for any other)",
        "rate",
        model_default=True,
    ),
    "filter_rate": OptionHelp("quantile of all scores a unit must exceed on some language (0.95)", "quantile"),
    "activation_bar_ratio": OptionHelp(
        "quantile of all scores a kept unit must exceed to be assigned to a language (0.95)", "quantile"
    ),
}


def _neurons(stats: ActivationStats, mask: Tensor, method: str, opts: dict, info: dict) -> LanguageNeurons:
    info = dict(info)
    budget, selected = info.pop("budget"), info.pop("selected")
    meta = {
        "settings": opts,
        **info,
        "model": stats.meta.get("model"),
        "stats": {k: v for k, v in stats.meta.items() if k != "model"},
    }
    return LanguageNeurons(stats.languages, mask, method, meta, budget=budget, selected=selected)


@register(
    "lape",
    source="stats",
    summary="Language activation probability entropy (Tang et al., 2024).",
    options=ENTROPY_OPTIONS,
    sweepable=True,
    min_languages=2,
    primary=True,
    pipeline={"top_rate": "top_rate"},
    order=10,
)
def lape(
    stats: ActivationStats,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> LanguageNeurons:
    """Language activation probability entropy: Tang et al. (2024), official ``identify.py``.

    Firing probabilities ``p = count / n`` are computed in float32, as the official script's
    ``over_zero / n`` does, so that thresholds and entropies match it bit for bit (``entropy_select``
    reduces them in the script's layout, languages last).
    """
    check_stats(stats)
    probs = stats.count / stats.n.view(-1, 1, 1)  # int / int -> float32, exactly as identify.py
    mask, info = entropy_select(
        probs, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio
    )
    opts = settings(top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio)
    return _neurons(stats, mask, "lape", opts, info)


@register(
    "lave",
    source="stats",
    summary="LAPE on mean activation values (Tang et al. §3.1).",
    options=ENTROPY_OPTIONS,
    sweepable=True,
    min_languages=2,
    pipeline={"top_rate": "top_rate"},
    order=30,
)
def lave(
    stats: ActivationStats,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> LanguageNeurons:
    """LAVE: LAPE with the mean activation value ``act_fn(hook_pre)`` in place of ``p``.

    Negative means (GELU and SiLU dip slightly below 0) are clamped to 0, i.e. counted as
    "not activated" like a probability of 0: the entropy needs a non-negative distribution over
    languages, and a neuron whose mean is negative on a language is not active on it in the
    paper's sense (``act_fn(.) > 0``). Computed in float64 (there is no official script to match).
    """
    check_stats(stats)
    if not stats.has_activation_sums:
        raise LapelensError(
            "LAVE needs activation sums, which these statistics lack (official activation files "
            "store only firing counts): collect the statistics with lapelens."
        )
    means = stats.mean_activation().clamp_min(0)
    mask, info = entropy_select(
        means, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio
    )
    opts = settings(
        top_rate=top_rate,
        filter_rate=filter_rate,
        activation_bar_ratio=activation_bar_ratio,
        negative_means="clamped to 0",
    )
    return _neurons(stats, mask, "lave", opts, info)
