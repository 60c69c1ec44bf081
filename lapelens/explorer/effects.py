"""What a neuron writes to the logits directly: ``W_out[layer][neuron] @ W_U``.

Two questions, each answered exactly and only where the page needs it. Per neuron (those some
method selected, or any one the live server is asked about): its most promoted and suppressed
tokens and a histogram of its effects over the whole vocabulary. Per token (those the page's
search indexes, or any one the live server is asked about): the neurons of the whole model that
promote it most. The effect is per unit of the neuron's output activation (``hook_post``),
through the residual stream only: no final norm scale, no later layers -- the product neuron
viewers rank tokens by.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.models import neuron_spec
from lapelens.types import HookedModel

#: Vocabulary columns per matrix product (bounds the one ``neuron x block`` buffer).
VOCAB_BLOCK = 8192
#: The effect histogram spans the mean +- this many standard deviations (the outer bins hold the rest).
HIST_SPREAD = 6.0


@dataclass
class NeuronLogits:
    """Direct logit effects of the neurons ``neurons`` (rows: layer, neuron) over the whole vocabulary."""

    neurons: Int64[Tensor, "listed 2"]
    promoted: Int64[Tensor, "listed top"]
    promoted_value: Float[Tensor, "listed top"]
    suppressed: Int64[Tensor, "listed top"]
    suppressed_value: Float[Tensor, "listed top"]
    #: Per neuron, the histogram's lower and upper edge; ``hist`` counts vocabulary entries per bin.
    hist_range: Float[Tensor, "listed 2"]
    hist: Int64[Tensor, "listed bin"]


@dataclass
class TokenPromoters:
    """Per token of ``tokens``: the flat indices (``layer * d_mlp + neuron``) of the neurons of the
    whole model whose direct effect promotes it most, strongest first, and those effects."""

    tokens: Int64[Tensor, " indexed"]
    neurons: Int64[Tensor, "indexed m"]
    value: Float[Tensor, "indexed m"]


def unembedding(model: HookedModel) -> tuple[Float[Tensor, "layer neuron d_model"], Float[Tensor, "d_model vocab"]]:
    """``W_out`` and ``W_U``, checked against the model's neurons."""
    spec = neuron_spec(model)
    w_out, w_u = model.W_out, model.W_U
    if w_out.shape[:2] != (spec.n_layers, spec.d_mlp) or w_u.shape[0] != w_out.shape[-1]:
        raise LapelensError(
            f"W_out {tuple(w_out.shape)} and W_U {tuple(w_u.shape)} do not fit the model's "
            f"{spec.n_layers} x {spec.d_mlp} neurons."
        )
    return w_out, w_u


def _moments(w: Tensor, w_u: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over the vocabulary of ``w @ W_U`` for each row of ``w``, without the product:
    mean = w . mean(W_U), second moment = w^T (W_U W_U^T / V) w."""
    mu = w_u.mean(dim=1)
    gram = (w_u @ w_u.T) / w_u.shape[1]
    mean = w @ mu
    second = ((w @ gram) * w).sum(dim=1)
    return mean, (second - mean**2).clamp_min(0).sqrt()


def _merge_top(
    values: Tensor, index: Tensor, new_values: Tensor, new_index: Tensor, k: int, largest: bool
) -> tuple[Tensor, Tensor]:
    v, i = torch.cat([values, new_values], dim=1), torch.cat([index, new_index], dim=1)
    keep = v.topk(min(k, v.shape[1]), dim=1, largest=largest).indices
    return v.gather(1, keep), i.gather(1, keep)


def _check_neurons(model: HookedModel, neurons: Tensor) -> Tensor:
    spec = neuron_spec(model)
    neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1, 2)
    bad = (neurons < 0).any(dim=1) | (neurons[:, 0] >= spec.n_layers) | (neurons[:, 1] >= spec.d_mlp)
    if bad.any():
        layer, neuron = neurons[bad][0].tolist()
        raise LapelensError(
            f"No neuron ({layer}, {neuron}): the model has layers 0-{spec.n_layers - 1} and neurons 0-{spec.d_mlp - 1}."
        )
    return neurons


@torch.no_grad()
def neuron_logits(
    model: HookedModel, neurons: Int64[Tensor, "listed 2"], top: int = 10, bins: int = 24
) -> NeuronLogits:
    """The ``top`` promoted and suppressed tokens of each of ``neurons`` and its ``bins``-bin effect
    histogram over the whole vocabulary.

    For a HF LLaMA, neuron j of layer i has ``down_proj.weight[:, j] @ lm_head.weight.T``.
    """
    neurons = _check_neurons(model, neurons)
    w_out, w_u = unembedding(model)
    w_u = w_u.float()
    n_vocab, n = w_u.shape[1], len(neurons)
    top = min(top, n_vocab)
    w = w_out[neurons[:, 0].to(w_out.device), neurons[:, 1].to(w_out.device)].float()  # listed d_model
    mean, std = _moments(w, w_u)
    lo = mean - HIST_SPREAD * std
    width = (2 * HIST_SPREAD * std).clamp_min(1e-6) / bins
    hi_v = torch.empty(n, 0, device=w.device)
    hi_i = torch.empty(n, 0, dtype=torch.long, device=w.device)
    lo_v, lo_i = hi_v.clone(), hi_i.clone()
    counts = torch.zeros(n * bins, dtype=torch.long, device=w.device)
    offsets = (torch.arange(n, dtype=torch.int32, device=w.device) * bins)[:, None]
    for start in range(0, n_vocab if n else 0, VOCAB_BLOCK):
        effect = w @ w_u[:, start : start + VOCAB_BLOCK]  # listed block
        k = min(top, effect.shape[1])
        t = effect.topk(k, dim=1)
        hi_v, hi_i = _merge_top(hi_v, hi_i, t.values, t.indices + start, top, True)
        t = effect.topk(k, dim=1, largest=False)
        lo_v, lo_i = _merge_top(lo_v, lo_i, t.values, t.indices + start, top, False)
        # bin = floor((effect - lo) / width), clamped; int32 truncation is floor once clamped at 0
        b = (effect - lo[:, None]).div_(width[:, None]).clamp_(0, bins - 1).to(torch.int32)
        counts += torch.bincount((b + offsets).flatten(), minlength=n * bins)
    if not n:
        hi_v, hi_i, lo_v, lo_i = (torch.empty(0, top, dtype=x.dtype) for x in (hi_v, hi_i, lo_v, lo_i))
    return NeuronLogits(
        neurons=neurons,
        promoted=hi_i.cpu(),
        promoted_value=hi_v.cpu(),
        suppressed=lo_i.cpu(),
        suppressed_value=lo_v.cpu(),
        hist_range=torch.stack([lo, lo + width * bins], dim=1).cpu(),
        hist=counts.view(n, bins).cpu(),
    )


@torch.no_grad()
def strongest_promoters(model: HookedModel, tokens: Int64[Tensor, " indexed"], top: int = 5) -> TokenPromoters:
    """For each of ``tokens``, the ``top`` neurons of the whole model whose direct effect
    ``W_out[layer][neuron] . W_U[:, token]`` is largest, strongest first (only those columns of
    ``W_U`` are multiplied)."""
    spec = neuron_spec(model)
    w_out, w_u = unembedding(model)
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    if len(tokens) and not (0 <= int(tokens.min()) and int(tokens.max()) < w_u.shape[1]):
        raise LapelensError(f"A token id lies outside the vocabulary of {w_u.shape[1]} entries.")
    top, n = min(top, spec.n_neurons), spec.d_mlp
    best_v = torch.full((len(tokens), top), -torch.inf)
    best_i = torch.full((len(tokens), top), -1, dtype=torch.long)
    for start in range(0, len(tokens), VOCAB_BLOCK):
        cols = w_u[:, tokens[start : start + VOCAB_BLOCK].to(w_u.device)].float()  # d_model block
        v, i = best_v[start : start + VOCAB_BLOCK], best_i[start : start + VOCAB_BLOCK]
        for layer in range(spec.n_layers):
            t = (w_out[layer].float() @ cols).topk(min(top, n), dim=0)  # m block: this layer's strongest
            v, i = _merge_top(v, i, t.values.T.cpu(), (t.indices.T + layer * n).cpu(), top, True)
        best_v[start : start + VOCAB_BLOCK], best_i[start : start + VOCAB_BLOCK] = v, i
    return TokenPromoters(tokens, best_i, best_v)


def token_promoters(
    model: HookedModel, token_id: int, top: int = 20
) -> tuple[Int64[Tensor, " m"], Float[Tensor, " m"]]:
    """The ``top`` neurons (flat ``layer * d_mlp + neuron``) whose direct effect promotes ``token_id`` most, strongest first."""
    n_vocab = unembedding(model)[1].shape[1]
    if not 0 <= token_id < n_vocab:
        raise LapelensError(f"No token {token_id}: the vocabulary has {n_vocab} entries.")
    found = strongest_promoters(model, torch.tensor([token_id]), top)
    return found.neurons[0], found.value[0]
