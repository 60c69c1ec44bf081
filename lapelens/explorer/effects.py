"""What a neuron does downstream: its direct effect on the logits, and the loss when it is off."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from jaxtyping import Float, Float64, Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens.errors import LapelensError
from lapelens.models import neuron_spec
from lapelens.types import HookedModel


@torch.no_grad()
def logit_effects(model: HookedModel, top: int = 10) -> tuple[Int64[Tensor, "layer neuron top"], Float[Tensor, "layer neuron top"],
                                                    Int64[Tensor, "layer neuron top"], Float[Tensor, "layer neuron top"]]:
    """Tokens each neuron promotes and suppresses most through the residual stream.

    The direct logit effect of neuron j of layer i is ``W_out[i][j] @ W_U`` (its row of the down
    projection, a ``d_model`` vector, times the unembedding; for a HF LLaMA that is
    ``down_proj.weight[:, j] @ lm_head.weight.T``), per unit of the neuron's output activation
    (``hook_post``). The final norm's scale is not applied, as in neuron viewers that rank tokens by
    this product. Returns (promoted ids, their values, suppressed ids, their values), highest
    effect first / lowest first.
    """
    spec = neuron_spec(model)
    w_out, w_u = model.W_out, model.W_U  # layer neuron d_model, d_model vocab
    if w_out.shape[:2] != (spec.n_layers, spec.d_mlp) or w_u.shape[0] != w_out.shape[-1]:
        raise LapelensError(f"W_out {tuple(w_out.shape)} and W_U {tuple(w_u.shape)} do not fit the model's "
                            f"{spec.n_layers} x {spec.d_mlp} neurons.")
    top = min(top, w_u.shape[1])
    out = [torch.empty(spec.n_layers, spec.d_mlp, top, dtype=dt) for dt in (torch.long, torch.float32) * 2]
    for layer in range(spec.n_layers):
        effect = w_out[layer].float() @ w_u.float()  # neuron vocab
        hi, lo = effect.topk(top, dim=1), effect.topk(top, dim=1, largest=False)
        out[0][layer], out[1][layer] = hi.indices.cpu(), hi.values.cpu()
        out[2][layer], out[3][layer] = lo.indices.cpu(), lo.values.cpu()
    return out[0], out[1], out[2], out[3]


def _nll(logits: Tensor, tokens: Tensor) -> Float64[Tensor, " row"]:
    """Mean next-token NLL of each row (tokens 1.. predicted from their prefix)."""
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1), reduction="none")
    return nll.view(tokens.shape[0], -1).double().mean(dim=1)


@torch.inference_mode()
def loss_changes(
    model: HookedModel,
    neurons: Int64[Tensor, "m 2"],
    chunks: Mapping[str, Int64[Tensor, "chunk pos"]],
    group: int = 16,
    progress: bool = True,
) -> tuple[Float64[Tensor, " lang"], Float64[Tensor, "m lang"]]:
    """Mean token NLL per language, and its change when each neuron alone is deactivated.

    Deactivation is lapelens' (``hook_post[..., j] = 0``, as ``lapelens.deactivate``). To make the
    many single-neuron runs affordable, ``group`` neurons run in one forward: the chunks are repeated
    once per neuron and each copy has its own neuron zeroed. Returns ``(base, delta)``; the loss of a
    language is the mean over all its predicted tokens.
    """
    spec = neuron_spec(model)
    device = next(model.parameters()).device
    base = torch.empty(len(chunks), dtype=torch.float64)
    delta = torch.empty(len(neurons), len(chunks), dtype=torch.float64)
    current: dict[str, Tensor] = {}

    def make(layer: int):
        def hook(act: Tensor, hook: Any) -> Tensor | None:
            members = current.get("layers")
            if members is None:
                return None
            sel = (members == layer).nonzero().flatten()
            if not len(sel):
                return None
            view = act.view(len(members), -1, *act.shape[1:])  # member chunk pos neuron
            view = view.clone()  # out of place, as lapelens.interventions does
            view[sel.to(act.device), ..., current["neurons"][sel].to(act.device)] = 0
            return view.view(act.shape)
        return hook

    fwd = [(spec.hook_post(layer), make(layer)) for layer in range(spec.n_layers)]
    bar = tqdm(total=len(chunks) * (len(neurons) + group), desc="loss change", unit="neuron", disable=not progress)
    for k, (lang, c) in enumerate(chunks.items()):
        c = c.to(device)
        current.clear()
        base[k] = _nll(model(c, return_type="logits", use_cache=False), c).mean()
        bar.update(group)
        with model.hooks(fwd_hooks=fwd):
            for g in range(0, len(neurons), group):
                members = neurons[g:g + group]
                current.update(layers=members[:, 0], neurons=members[:, 1])
                rows = c.repeat(len(members), 1)
                nll = _nll(model(rows, return_type="logits", use_cache=False), rows).view(len(members), -1).mean(dim=1)
                delta[g:g + len(members), k] = nll.cpu() - base[k]
                bar.update(len(members))
    bar.close()
    return base, delta
