"""What each neuron writes to the logits directly: ``W_out[layer][neuron] @ W_U``, for every neuron.

One pass over (layer, vocabulary block) gives everything the page shows about it: each neuron's
most promoted and most suppressed tokens, a histogram of its effects over the whole vocabulary,
and, per token, the neurons that promote it most (the search index). The effect is per unit of
the neuron's output activation (``hook_post``), through the residual stream only: no final norm
scale, no later layers -- the product neuron viewers rank tokens by.
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
class LogitEffects:
    """Direct logit effects of every neuron (``layer neuron``) and the strongest neurons per token."""

    promoted: Int64[Tensor, "layer neuron top"]
    promoted_value: Float[Tensor, "layer neuron top"]
    suppressed: Int64[Tensor, "layer neuron top"]
    suppressed_value: Float[Tensor, "layer neuron top"]
    #: Per neuron, the histogram's lower and upper edge; ``hist`` counts vocabulary entries per bin.
    hist_range: Float[Tensor, "layer neuron 2"]
    hist: Int64[Tensor, "layer neuron bin"]
    #: Per token, the flat indices (``layer * d_mlp + neuron``) of the neurons that promote it most, strongest first.
    token_neurons: Int64[Tensor, "vocab m"]
    token_value: Float[Tensor, "vocab m"]


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
    keep = v.topk(k, dim=1, largest=largest).indices
    return v.gather(1, keep), i.gather(1, keep)


@torch.no_grad()
def logit_effects(model: HookedModel, top: int = 10, bins: int = 24, search_top: int = 5) -> LogitEffects:
    """Every neuron's ``top`` promoted and suppressed tokens, its ``bins``-bin effect histogram, and
    the ``search_top`` strongest promoters of every token.

    For a HF LLaMA, neuron j of layer i has ``down_proj.weight[:, j] @ lm_head.weight.T``.
    """
    spec = neuron_spec(model)
    w_out, w_u = unembedding(model)
    w_u = w_u.float()
    n_vocab, n = w_u.shape[1], spec.d_mlp
    top, search_top = min(top, n_vocab), min(search_top, spec.n_neurons)
    shape = (spec.n_layers, n)
    promoted, suppressed = torch.empty(*shape, top, dtype=torch.long), torch.empty(*shape, top, dtype=torch.long)
    promoted_v, suppressed_v = torch.empty(*shape, top), torch.empty(*shape, top)
    hist_range, hist = torch.empty(*shape, 2), torch.zeros(*shape, bins, dtype=torch.long)
    tok_v = torch.full((n_vocab, search_top), -torch.inf)
    tok_i = torch.full((n_vocab, search_top), -1, dtype=torch.long)
    for layer in range(spec.n_layers):
        w = w_out[layer].float()  # neuron d_model
        mean, std = _moments(w, w_u)
        lo = mean - HIST_SPREAD * std
        width = (2 * HIST_SPREAD * std).clamp_min(1e-6) / bins
        hist_range[layer] = torch.stack([lo, lo + width * bins], dim=1).cpu()
        hi_v = torch.empty(n, 0, device=w.device)
        hi_i = torch.empty(n, 0, dtype=torch.long, device=w.device)
        lo_v, lo_i = hi_v.clone(), hi_i.clone()
        counts = torch.zeros(n * bins, dtype=torch.long, device=w.device)
        offsets = (torch.arange(n, dtype=torch.int32, device=w.device) * bins)[:, None]
        for start in range(0, n_vocab, VOCAB_BLOCK):
            effect = w @ w_u[:, start : start + VOCAB_BLOCK]  # neuron block
            cols = torch.arange(start, start + effect.shape[1], device=w.device).expand(n, -1)
            k = min(top, effect.shape[1])
            t = effect.topk(k, dim=1)
            hi_v, hi_i = _merge_top(hi_v, hi_i, t.values, cols.gather(1, t.indices), min(top, hi_v.shape[1] + k), True)
            t = effect.topk(k, dim=1, largest=False)
            lo_v, lo_i = _merge_top(lo_v, lo_i, t.values, cols.gather(1, t.indices), min(top, lo_v.shape[1] + k), False)
            # bin = floor((effect - lo) / width), clamped; int32 truncation is floor once clamped at 0
            b = (effect - lo[:, None]).div_(width[:, None]).clamp_(0, bins - 1).to(torch.int32)
            counts += torch.bincount((b + offsets).flatten(), minlength=n * bins)
            m = min(search_top, n)
            best = effect.topk(m, dim=0)  # m block: this layer's strongest promoters of each token
            rows = slice(start, start + effect.shape[1])
            v = torch.cat([tok_v[rows], best.values.T.cpu()], dim=1)
            i = torch.cat([tok_i[rows], (best.indices.T + layer * n).cpu()], dim=1)
            keep = v.topk(search_top, dim=1).indices
            tok_v[rows], tok_i[rows] = v.gather(1, keep), i.gather(1, keep)
        promoted[layer], promoted_v[layer] = hi_i.cpu(), hi_v.cpu()
        suppressed[layer], suppressed_v[layer] = lo_i.cpu(), lo_v.cpu()
        hist[layer] = counts.view(n, bins).cpu()
    return LogitEffects(promoted, promoted_v, suppressed, suppressed_v, hist_range, hist, tok_i, tok_v)


@torch.no_grad()
def token_promoters(
    model: HookedModel, token_id: int, top: int = 20
) -> tuple[Int64[Tensor, " m"], Float[Tensor, " m"]]:
    """The ``top`` neurons (flat ``layer * d_mlp + neuron``) whose direct effect promotes ``token_id`` most, strongest first."""
    w_out, w_u = unembedding(model)
    if not 0 <= token_id < w_u.shape[1]:
        raise LapelensError(f"No token {token_id}: the vocabulary has {w_u.shape[1]} entries.")
    effect = (w_out.float() @ w_u[:, token_id].float()).flatten()  # layer * neuron
    best = effect.topk(min(top, len(effect)))
    return best.indices.cpu(), best.values.cpu()
