"""Second pass over text for a fixed set of neurons: top-activating contexts and histograms.

Only the neurons the explorer shows in full (the selected ones) are tracked, so memory is fixed by
(neurons, languages, top-k, window, bins) and does not grow with the text. Each chunk contributes
at most one context per neuron (at its maximum), so the top-k of a neuron are k different chunks
rather than k neighbouring tokens of the same sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens.errors import LapelensError
from lapelens.hooks import layer_hooks, run_until
from lapelens.models import neuron_spec
from lapelens.types import HookedModel


@dataclass
class NeuronSamples:
    """What the second pass keeps, per tracked neuron ``d`` (rows of ``neurons``) and language ``k``.

    ``top[d, k, r]`` is the r-th highest activation of the neuron on a chunk (``-inf``: fewer than
    r + 1 chunks), found in chunk ``chunk[d, k, r]`` (index among language k's chunks) at position
    ``pos[d, k, r]``; ``acts[d, k, r]`` is the window of activations around it (0 outside the
    chunk), the maximum at index ``before``.
    ``hist[d, k, b]`` counts tokens whose activation falls into bin b of ``edges[d]`` (the outer
    bins also take everything beyond them).
    """

    neurons: Int64[Tensor, "detail 2"]
    top: Float[Tensor, "detail lang top"]
    chunk: Int64[Tensor, "detail lang top"]
    pos: Int64[Tensor, "detail lang top"]
    acts: Float[Tensor, "detail lang top window"]
    edges: Float[Tensor, "detail edge"]
    hist: Int64[Tensor, "detail lang bin"]
    before: int
    tokens_seen: Int64[Tensor, " lang"]


class SampleAccumulator:
    """Constant-memory top-k contexts and fixed-bin histograms of ``act_fn(hook_pre)``."""

    def __init__(self, model: HookedModel, neurons: Int64[Tensor, "detail 2"], n_lang: int,
                 edges: Float[Tensor, "detail edge"], top_k: int = 3, before: int = 10, after: int = 4):
        self.spec = neuron_spec(model)
        if neurons.ndim != 2 or neurons.shape[1] != 2:
            raise LapelensError(f"neurons must be (layer, neuron) rows, got shape {tuple(neurons.shape)}.")
        if len(neurons) and (int(neurons[:, 0].max()) >= self.spec.n_layers or int(neurons[:, 1].max()) >= self.spec.d_mlp):
            raise LapelensError(f"A tracked neuron lies outside the model's {self.spec.n_layers} x {self.spec.d_mlp} neurons.")
        self.neurons, self.edges = neurons.long(), edges.float()
        self.k, self.before, self.after = top_k, before, after
        d, w, bins = len(neurons), before + 1 + after, edges.shape[1] - 1
        self.top = torch.full((d, n_lang, top_k), -torch.inf)
        self.chunk = torch.full((d, n_lang, top_k), -1, dtype=torch.long)
        self.pos = torch.zeros(d, n_lang, top_k, dtype=torch.long)
        self.acts = torch.zeros(d, n_lang, top_k, w)
        self.hist = torch.zeros(d, n_lang, bins, dtype=torch.long)
        self.tokens_seen = torch.zeros(n_lang, dtype=torch.long)
        self._act = self.spec.act_fn()
        # Per layer: which rows of `neurons` live there, and their neuron indices.
        self.by_layer = {}
        for layer in range(self.spec.n_layers):
            rows = (self.neurons[:, 0] == layer).nonzero().flatten()
            if len(rows):
                self.by_layer[layer] = (rows, self.neurons[rows, 1])

    def update(self, k: int, layer: int, pre: Float[Tensor, "batch pos neuron"], first_chunk: int) -> None:
        """Add one batch of ``hook_pre`` of ``layer`` for language ``k``; its chunks are numbered from ``first_chunk``."""
        if layer not in self.by_layer:
            return
        rows, cols = self.by_layer[layer]
        act = self._act(pre[..., cols.to(pre.device)].float()).cpu()  # batch pos n
        self._histogram(k, rows, act)
        self._top(k, rows, act, first_chunk)

    def _histogram(self, k: int, rows: Tensor, act: Tensor) -> None:
        edges = self.edges[rows]  # n edge
        bins = edges.shape[1] - 1
        lo, width = edges[:, 0], (edges[:, -1] - edges[:, 0]) / bins
        b = ((act - lo) / width).floor().clamp(0, bins - 1).long()  # batch pos n
        flat = (b + torch.arange(len(rows)) * bins).flatten()
        self.hist[rows, k] += torch.bincount(flat, minlength=len(rows) * bins).view(len(rows), bins)

    def _top(self, k: int, rows: Tensor, act: Tensor, first_chunk: int) -> None:
        batch, pos, n = act.shape
        best, where = act.max(dim=1)  # batch n: each chunk's maximum per neuron
        take = min(self.k, batch)
        value, chunk = best.topk(take, dim=0)  # take n
        at = where.gather(0, chunk)  # take n: position of the maximum
        window = torch.arange(self.before + 1 + self.after)
        # Padded so that every window is in range; position p of a chunk is p + before there.
        pad_act = F.pad(act, (0, 0, self.before, self.after))
        idx = at[..., None] + window  # take n window
        new_act = pad_act[chunk[..., None], idx, torch.arange(n)[None, :, None]]
        # Merge with what is kept: concatenate along the top dimension, keep the k largest.
        all_top = torch.cat([self.top[rows, k], value.T], dim=1)  # n (k + take)
        all_chunk = torch.cat([self.chunk[rows, k], (chunk + first_chunk).T], dim=1)
        all_pos = torch.cat([self.pos[rows, k], at.T], dim=1)
        all_act = torch.cat([self.acts[rows, k], new_act.transpose(0, 1)], dim=1)
        keep = all_top.topk(self.k, dim=1).indices
        self.top[rows, k] = all_top.gather(1, keep)
        self.chunk[rows, k] = all_chunk.gather(1, keep)
        self.pos[rows, k] = all_pos.gather(1, keep)
        self.acts[rows, k] = all_act.gather(1, keep[..., None].expand(-1, -1, all_act.shape[-1]))

    def result(self) -> NeuronSamples:
        return NeuronSamples(self.neurons, self.top, self.chunk, self.pos, self.acts, self.edges, self.hist,
                             self.before, self.tokens_seen)


def sample_neurons(
    model: HookedModel,
    chunks_by_language: Mapping[str, Sequence[Int64[Tensor, " pos"]]],
    neurons: Int64[Tensor, "detail 2"],
    edges: Float[Tensor, "detail edge"],
    top_k: int = 3,
    before: int = 10,
    after: int = 4,
    batch_size: int = 8,
    progress: bool = True,
) -> NeuronSamples:
    """Run the chunks of each language through ``model`` and keep contexts and histograms of ``neurons``."""
    acc = SampleAccumulator(model, neurons, len(chunks_by_language), edges, top_k, before, after)
    spec = acc.spec
    if not acc.by_layer:
        return acc.result()
    state: dict[str, Any] = {}

    def take(layer: int, pre: Tensor) -> None:
        acc.update(state["k"], layer, pre, state["first"])

    device = next(model.parameters()).device
    fwd = layer_hooks({layer: spec.hook_pre(layer) for layer in acc.by_layer}, take)  # stops after the last tracked layer
    with torch.inference_mode(), model.hooks(fwd_hooks=fwd):
        for k, (lang, chunks) in enumerate(chunks_by_language.items()):
            for b in tqdm(range(0, len(chunks), batch_size), desc=f"contexts {lang}", disable=not progress):
                batch = torch.stack(chunks[b:b + batch_size])
                state.update(k=k, first=b)
                run_until(model, batch.to(device), use_cache=False)
                acc.tokens_seen[k] += batch.numel()
    return acc.result()


def histogram_edges(
    mean: Float[Tensor, "detail lang"], std: Float[Tensor, "detail lang"], bins: int = 24, floor: float = 0.0
) -> Float[Tensor, "detail edge"]:
    """Per-neuron bin edges shared by all languages, from the statistics' mean and std.

    From ``min(floor, min_k mean - 3 std)`` to ``max_k mean + 4 std`` (activations are skewed to
    the right: rare large values are what a language neuron is about). Values outside fall into
    the outer bins, so nothing is dropped; edges are known before the pass, which keeps it single.
    """
    lo = torch.minimum((mean - 3 * std).min(dim=1).values, torch.full((len(mean),), floor))
    hi = (mean + 4 * std).max(dim=1).values
    hi = torch.maximum(hi, lo + 1e-3)
    steps = torch.linspace(0, 1, bins + 1)
    return (lo[:, None] + (hi - lo)[:, None] * steps).float()
