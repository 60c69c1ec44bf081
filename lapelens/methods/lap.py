"""LAP (Tang et al., 2024, §3.1): a neuron belongs to every language on which it fires often."""

from __future__ import annotations

from lapelens.errors import LapelensError
from lapelens.methods._common import check_stats, settings
from lapelens.methods._registry import OptionHelp, register
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats


@register(
    "lap",
    source="stats",
    summary="Firing probability above a threshold on a language (Tang et al. §3.1).",
    options={"threshold": OptionHelp("firing probability a neuron must exceed on a language (0.95)", "quantile")},
    order=20,
)
def lap(stats: ActivationStats, *, threshold: float = 0.95) -> LanguageNeurons:
    """Neuron (i, j) is specific to language k when its firing probability ``p_k > threshold``.

    Strict ``>`` (like LAPE's thresholds); ``p = count / n`` in float64. A neuron that fires on
    more than 95% of the tokens of several languages belongs to all of them.
    """
    check_stats(stats)
    if not 0.0 <= float(threshold) <= 1.0:
        raise LapelensError(f"threshold must be a probability in [0, 1], got {threshold}.")
    mask = stats.firing_probability() > float(threshold)
    meta = {"settings": settings(threshold=float(threshold)), "model": stats.meta.get("model")}
    return LanguageNeurons(stats.languages, mask, "lap", meta)
