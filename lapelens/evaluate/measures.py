"""The arithmetic of sentence-embedding similarity, on tensors, so that it can be checked by hand.

Sentence embeddings of causal LMs are anisotropic: a mean vector shared by all texts, held in a
few outlier dimensions, is most of every embedding's energy, so the raw cosine of any two texts is
high and content moves it little. Three measures (:data:`MEASURES`) of the cosine of two texts:

- ``raw``: the cosine of the embeddings as they are;
- ``centered``: subtract from each text its own language's mean embedding (at that layer);
- ``standardized``: centred, then each dimension divided by its standard deviation over the
  centred texts of all languages (the pooled within-language spread). Any positive constant
  factor cancels in a cosine, so the deviation's ``ddof`` does not matter. A dimension whose
  spread is zero (below 1e-9 of the largest) carries nothing and is set to 0.

Where the means and deviations are fit (:data:`VECTORS`): ``all`` fits them on every text (the
plain computation); ``heldout`` cuts the texts into two halves by position, fits on one half and
transforms the other, then swaps, so that every text is transformed by statistics it did not enter
and every measure is still taken over all n texts. The halves interleave (even and odd positions,
:func:`halves`): aligned texts come in corpus order, and a first and second half would differ in
topic, so each half's mean would carry a topic offset that translations share and mismatched pairs
across halves do not (on the embedded model's 200 validation texts that inflated the standardized
gap by 0.03-0.05 over the fit on all texts; interleaved halves agree with it within 0.001).

Per ordered language pair (k, c) and text t, three *per-text scores* (:func:`text_scores`):

- ``mean``: ``cos(x_k[t], x_c[t])``, the aligned cosine;
- ``mismatched``: the mean over u != t of ``cos(x_k[t], x_c[u])`` (its mean over t is the mean
  over all ordered pairs t != u): what the cosine is for texts that are not translations;
- ``retrieval``: 1 if the translation x_c[t] is strictly the closest of the n texts of c to
  x_k[t], else 0 (a tie with another text counts as a miss: identical texts cannot be told apart).

Every reported number is a mean of per-text scores over texts, so its percentile bootstrap
(:func:`bootstrap_means`) resamples texts, the same resampled indices for every language, pair and
layer; each text's score stays the one computed against all n texts (resampling the candidates too
would shrink the pool and make retrieval look easier). The fit of the means and deviations is not
redone per resample.

Eq. 6 of Tang et al. (``ĥ = h_k - v_k + v_c``) is kept for the raw measure (:func:`dominance_matrix`);
once each language is centred on its own mean the shift is a no-op.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lapelens.errors import LapelensError

Measure = Literal["raw", "centered", "standardized"]
MEASURES: tuple[Measure, ...] = ("raw", "centered", "standardized")
#: Where a measure's means and deviations (and Eq. 6's language vectors) are fit.
Vectors = Literal["heldout", "all"]
VECTORS: tuple[Vectors, ...] = ("heldout", "all")
#: The per-text scores of :func:`text_scores`, in their order along its first axis.
SCORES = ("mean", "mismatched", "retrieval")
DEFAULT_N_BOOT = 1000
#: A dimension whose standard deviation is below this share of the largest one is treated as constant.
_FLAT = 1e-9


def check_measure(measure: str, vectors: str) -> None:
    if measure not in MEASURES:
        raise LapelensError(f"measure must be one of {list(MEASURES)}, got {measure!r}.")
    if vectors not in VECTORS:
        raise LapelensError(f"vectors must be one of {list(VECTORS)}, got {vectors!r}.")


def halves(n_texts: int) -> list[tuple[Tensor, Tensor]]:
    """(fit, apply) folds of text positions: even positions fit and odd ones are transformed, then swapped."""
    even, odd = torch.arange(0, n_texts, 2), torch.arange(1, n_texts, 2)
    return [(even, odd), (odd, even)]


def transform(
    h: Float[Tensor, "lang text d_model"], measure: Measure = "standardized", vectors: Vectors = "heldout"
) -> Float[Tensor, "lang text d_model"]:
    """The embeddings of one layer as ``measure`` compares them (float64; module docstring)."""
    check_measure(measure, vectors)
    h = h.double()
    if measure == "raw":
        return h
    every = torch.arange(h.shape[1])
    folds = halves(h.shape[1]) if vectors == "heldout" else [(every, every)]
    out = torch.empty_like(h)
    for fit, apply in folds:
        mu = h[:, fit].mean(1, keepdim=True)  # each language's own mean
        x = h[:, apply] - mu
        if measure == "standardized":
            sd = (h[:, fit] - mu).flatten(0, 1).std(0, correction=0)  # pooled over languages and texts
            flat = sd <= _FLAT * sd.max()
            x = torch.where(flat, 0.0, x / torch.where(flat, 1.0, sd))
        out[:, apply] = x
    return out


def text_scores(x: Float[Tensor, "lang text d_model"]) -> Float[Tensor, "score source target text"]:
    """Per-text ``mean``, ``mismatched`` and ``retrieval`` (:data:`SCORES`) for every ordered pair.

    ``[s, k, c, t]`` scores text t of language k against language c; the diagonal k == c is
    computed too (a language against itself) and left for the caller to drop. A zero vector has
    cosine 0 with everything.
    """
    n_lang, n = x.shape[:2]
    if n < 2:
        raise LapelensError(f"Mismatched pairs and retrieval need at least 2 aligned texts, got {n}.")
    unit = torch.nn.functional.normalize(x.double(), dim=-1)
    eye = torch.eye(n, dtype=torch.bool)
    out = torch.empty(len(SCORES), n_lang, n_lang, n, dtype=torch.float64)
    for k in range(n_lang):  # one source at a time: n_lang x n x n cosines in memory
        cos = torch.einsum("td,cud->ctu", unit[k], unit)
        aligned = cos.diagonal(dim1=-2, dim2=-1)
        out[0, k] = aligned
        out[1, k] = (cos.sum(-1) - aligned) / (n - 1)
        out[2, k] = (aligned > cos.masked_fill(eye, -torch.inf).amax(-1)).double()
    return out


def off_diagonal(n_lang: int) -> Tensor:
    """``[k, c]`` True for k != c."""
    return ~torch.eye(n_lang, dtype=torch.bool)


def bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``[..., boot]``: the mean over the last axis (texts) of ``values`` for ``n_boot`` resamples
    of the texts (multinomial counts, seeded; the same resamples for every leading index)."""
    n = values.shape[-1]
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    return values @ weights.T / n


def interval(draws: np.ndarray) -> tuple[Any, Any]:
    """(low, high): the 95% percentile interval over the last axis (arrays, or numbers for 1-d ``draws``)."""
    low, high = np.percentile(draws, [2.5, 97.5], axis=-1)
    return low, high


# ---- Eq. 6 (raw measure) ---------------------------------------------------------------------
def pair_similarity(
    a: Float[Tensor, "text layer d_model"], b: Float[Tensor, "text layer d_model"]
) -> Float[Tensor, " layer"]:
    """Mean over texts of the cosine similarity of ``a[t, i]`` and ``b[t, i]`` (float64)."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean(0)


def partner(n_texts: int) -> Tensor:
    """Eq. 6's mismatched control pairs text t with text ``(t + n // 2) % n`` (never itself for n >= 2)."""
    return (torch.arange(n_texts) + n_texts // 2) % n_texts


def shifted_similarity(
    h_k: Float[Tensor, "text layer d_model"],
    h_c: Float[Tensor, "text layer d_model"],
    v_k: Float[Tensor, "layer d_model"],
    v_c: Float[Tensor, "layer d_model"],
) -> Float[Tensor, " layer"]:
    """Eq. 6 for one pair: mean cosine between ``h_k - v_k + v_c`` and ``h_c``."""
    return pair_similarity(h_k.double() - v_k.double() + v_c.double(), h_c)


def dominance_matrix(
    emb: Float[Tensor, "lang text layer d_model"], vectors: Vectors = "heldout", mismatched: bool = False
) -> Float[Tensor, "source target layer"]:
    """Mean shifted cosine (Eq. 6, raw embeddings) from every source language to every target, per layer.

    ``[k, c, i]`` is the mean over texts of ``cos(h_k - v_k + v_c, h_c)`` at layer i, ``v_x`` the
    mean embedding of language x, fit on every text (``all``) or on the other half (``heldout``, :func:`halves`).
    ``mismatched``: ``h_c`` of the partner text (:func:`partner`) within the scored texts, so that it
    never enters ``v``; all NaN if a held-out half has a single text.
    """
    n_lang, n_texts = emb.shape[:2]
    check_measure("raw", vectors)
    if n_texts < 2:
        raise LapelensError(f"Dominance needs at least 2 aligned texts, got {n_texts}.")
    every = torch.arange(n_texts)
    folds = halves(n_texts) if vectors == "heldout" else [(every, every)]
    total = torch.zeros(n_lang, n_lang, emb.shape[2], dtype=torch.float64)
    for fit, score in folds:
        v = emb[:, fit].double().mean(1)  # lang layer d_model
        h = emb[:, score].double()
        m = h.shape[1]
        if mismatched and m < 2:
            return torch.full_like(total, float("nan"))
        target = h[:, partner(m)] if mismatched else h
        for k in range(n_lang):
            for c in range(n_lang):
                # Sums of cosines, so that unequal halves weigh per text.
                total[k, c] += shifted_similarity(h[k], target[c], v[k], v[c]) * m
    return total / n_texts


def mean_over_sources(matrix: Float[Tensor, "source target *rest"]) -> Float[Tensor, " target *rest"]:
    """For each target c, the mean of ``matrix[k, c]`` over the sources k != c."""
    n_lang = matrix.shape[0]
    if n_lang < 2:
        raise LapelensError("Averaging over other source languages needs at least 2 languages.")
    off = off_diagonal(n_lang).reshape(n_lang, n_lang, *[1] * (matrix.ndim - 2))
    return (matrix * off).sum(0) / (n_lang - 1)


# ---- diagnostics -------------------------------------------------------------------------------
def energy_shares(h: Float[Tensor, "lang text d_model"]) -> dict[str, float]:
    """How the mean squared norm of the embeddings of one layer splits (equal texts per language).

    ``h = mu + (mu_k - mu) + (h - mu_k)`` with ``mu`` the mean over all texts and ``mu_k`` the
    language's mean; averaged over texts the three parts are orthogonal, so ``shared`` (``|mu|^2``),
    ``language`` (mean ``|mu_k - mu|^2``) and ``within`` (mean ``|h - mu_k|^2``), each over the
    mean ``|h|^2``, sum to 1. ``cos_shared_median``: the median over texts of ``cos(h, mu)``.
    """
    h = h.double()
    mu_k = h.mean(1, keepdim=True)
    mu = mu_k.mean(0, keepdim=True)
    total = h.pow(2).sum(-1).mean()
    cos = torch.nn.functional.cosine_similarity(h, mu.expand_as(h), dim=-1)
    return {
        "shared": (mu.pow(2).sum() / total).item(),
        "language": ((mu_k - mu).pow(2).sum(-1).mean() / total).item(),
        "within": ((h - mu_k).pow(2).sum(-1).mean() / total).item(),
        "cos_shared_median": cos.flatten().median().item(),
    }


def top_dimensions(h: Float[Tensor, "lang text d_model"], k: int = 3) -> list[tuple[int, float, float]]:
    """The ``k`` dimensions holding most of the shared mean's squared norm: (dimension, value of the
    shared mean there, share of ``|mu|^2``), largest first."""
    mu = h.double().mean((0, 1))
    energy = mu.pow(2)
    top = torch.topk(energy, min(k, mu.numel())).indices
    total = energy.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return [(int(d), mu[d].item(), (energy[d] / total).item()) for d in top]
