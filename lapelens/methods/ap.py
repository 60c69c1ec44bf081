"""AP neurons (Kojima et al., 2024): neurons whose sentence-mean activation detects a language.

For every neuron and language, the neuron's per-sentence mean activation is a score for "this
sentence is in the target language" (positives: the target's sentences; negatives: the sentences
of every other language). Its average precision (AP) ranks the neurons: the top-k fire on the
language, the bottom-k are silenced by it. Kojima et al. pin both groups to their median
activation on target-language text (``numpy.percentile(q=50)``: the mean of the two middle
values for an even count), stored here in ``values["median"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Float64, Int64
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.methods._common import settings
from lapelens.methods._registry import OptionHelp, register
from lapelens.neurons import LanguageNeurons
from lapelens.stats import SentenceActivations

#: Sentence x unit entries processed at once (bounds memory for big models and corpora).
_CHUNK_ENTRIES = 1 << 24


def average_precision(
    scores: Float[Tensor, "sentence unit"], labels: Int64[Tensor, " sentence"], n_classes: int
) -> Float64[Tensor, "cls unit"]:
    """AP of each unit's scores at finding each class among all sentences, as scikit-learn's
    ``average_precision_score`` (step-wise, no interpolation): ``AP = sum_n (R_n - R_{n-1}) P_n``
    over the distinct score values from high to low, so tied sentences enter together.

    Equivalently ``AP = (1/P) * sum over positives of the precision at the end of the positive's
    tie group``, which is what is computed: one sort per unit serves every class.
    """
    n_sent = scores.shape[0]
    sorted_scores, order = torch.sort(scores, dim=0, descending=True)
    pos = torch.arange(n_sent).unsqueeze(1).expand_as(order)
    is_end = torch.ones_like(sorted_scores, dtype=torch.bool)
    is_end[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    # For each rank: the rank at which its tie group ends (reverse running minimum of group ends).
    ends = torch.where(is_end, pos, n_sent)
    group_end = torch.flip(torch.cummin(torch.flip(ends, [0]), dim=0).values, [0])
    sorted_labels = labels[order]
    out = torch.empty(n_classes, scores.shape[1], dtype=torch.float64)
    for c in range(n_classes):
        hit = (sorted_labels == c).to(torch.float64)
        tp = torch.cumsum(hit, dim=0)
        precision_at_end = tp.gather(0, group_end) / (group_end + 1).to(torch.float64)
        out[c] = (hit * precision_at_end).sum(dim=0) / hit.sum(dim=0)
    return out


def _median(values: Float[Tensor, "sentence unit"]) -> Float64[Tensor, " unit"]:
    """Per-unit median, the mean of the two middle values for an even count (as numpy)."""
    s = torch.sort(values.to(torch.float64), dim=0).values
    n = s.shape[0]
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def select_sentences(sentences: SentenceActivations, languages: Sequence[str]) -> SentenceActivations:
    """Only the sentences of ``languages``, relabelled in that order."""
    missing = [l for l in languages if l not in sentences.languages]
    if missing:
        raise LapelensError(
            f"Languages {missing} are not in these sentence activations (they have {list(sentences.languages)})."
        )
    old = torch.tensor([sentences.languages.index(l) for l in languages], dtype=torch.int64)
    keep = sentences.labels.unsqueeze(1) == old.unsqueeze(0)
    rows = keep.any(dim=1)
    labels = keep[rows].to(torch.int64).argmax(dim=1)
    return SentenceActivations(tuple(languages), labels, sentences.means[rows], dict(sentences.meta))


@register(
    "ap",
    source="sentences",
    summary="Top/bottom-k average precision of sentence-mean activations (Kojima et al., 2024).",
    options={
        "k": OptionHelp(
            "top-k and bottom-k neurons per language (Kojima: 1000; use fewer on a small model)", "positive"
        )
    },
    min_languages=2,
    pinned=True,
    pipeline={"k": "ap_k"},
    order=50,
)
def ap(sentences: SentenceActivations, *, k: int = 1000) -> LanguageNeurons:
    """Top-``k`` and bottom-``k`` neurons by AP for each language (Kojima et al.: k = 1000).

    ``values``: ``"ap"`` (every neuron's AP for each language), ``"median"`` (every neuron's
    median sentence-mean activation on the language's sentences; interventions use it where the
    mask is set) and ``"sign"`` (+1 top-k, -1 bottom-k, 0 not selected). Ties in AP are broken
    by the lower flat index (layer first), for both ends; the bottom-k are drawn from the neurons
    not already in the top-k, so the groups never share a neuron. For a small model, use a
    smaller ``k``.
    """
    if not isinstance(sentences, SentenceActivations):
        raise LapelensError(
            f"AP needs SentenceActivations (per-sentence mean activations), got {type(sentences).__name__}."
        )
    n_sent, n_layers, d_mlp = sentences.means.shape
    n_lang, n_units = len(sentences.languages), n_layers * d_mlp
    k = int(k)
    if n_units == 0 or n_sent == 0:
        raise LapelensError(f"The sentence activations are empty ({n_sent} sentences, {n_layers}x{d_mlp} neurons).")
    if n_lang < 2:
        raise LapelensError("AP separates a language from the others: it needs sentences in at least two languages.")
    if not 1 <= k or 2 * k > n_units:
        raise LapelensError(
            f"k={k} top and k bottom neurons need 1 <= k <= {n_units // 2} (the model has {n_units} neurons)."
        )
    labels = sentences.labels.to(torch.int64)
    if bool(((labels < 0) | (labels >= n_lang)).any()):
        raise LapelensError(f"Sentence labels must index the {n_lang} languages {list(sentences.languages)}.")
    per_lang = torch.bincount(labels, minlength=n_lang)
    if bool((per_lang == 0).any()):
        empty = [l for l, c in zip(sentences.languages, per_lang.tolist()) if c == 0]
        raise LapelensError(f"No sentences for {empty}: AP needs positive examples of every language.")
    if not sentences.means.is_floating_point() or not bool(torch.isfinite(sentences.means).all()):
        raise LapelensError("The sentence activations contain NaN or inf (an empty sentence?): collect them again.")

    scores = sentences.means.reshape(n_sent, n_units)
    aps = torch.empty(n_lang, n_units, dtype=torch.float64)
    medians = torch.empty(n_lang, n_units, dtype=torch.float64)
    step = max(1, _CHUNK_ENTRIES // n_sent)
    for start in range(0, n_units, step):
        chunk = scores[:, start : start + step]
        aps[:, start : start + step] = average_precision(chunk, labels, n_lang)
        for c in range(n_lang):
            medians[c, start : start + step] = _median(chunk[labels == c])

    mask = torch.zeros(n_lang, n_units, dtype=torch.bool)
    sign = torch.zeros(n_lang, n_units, dtype=torch.float32)
    for c in range(n_lang):
        # Stable sorts: ties keep index order at both ends (descending for top, ascending for bottom).
        top = torch.sort(aps[c], descending=True, stable=True).indices[:k]
        rest = aps[c].clone()
        rest[top] = torch.inf  # the two groups are disjoint even when all APs tie
        bottom = torch.sort(rest, stable=True).indices[:k]
        mask[c, top] = True
        mask[c, bottom] = True
        sign[c, top] = 1.0
        sign[c, bottom] = -1.0
    shape = (n_lang, n_layers, d_mlp)
    values = {
        "ap": aps.to(torch.float32).reshape(shape),
        "median": medians.to(torch.float32).reshape(shape),
        "sign": sign.reshape(shape),
    }
    meta = {"settings": settings(k=k), "model": sentences.meta.get("model"), "sentences": per_lang.tolist()}
    return LanguageNeurons(sentences.languages, mask.reshape(shape), "ap", meta, values)
