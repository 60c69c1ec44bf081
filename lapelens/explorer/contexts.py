"""Second pass over text for a fixed set of neurons: top contexts, quantile samples and histograms.

Per language, the activations ``act_fn(hook_pre)`` of the tracked neurons on every token of that
language's chunks are kept in memory (neurons x tokens floats, in blocks of neurons if that is
large), so everything is exact: the top contexts are the ``top_k`` chunks with the highest maximum
(one per chunk, so they are different texts), the quantile samples are drawn uniformly (seeded)
among the tokens whose activation lies between two quantiles of that language's distribution, and
the histogram counts every token. Each context is a window of ``before`` tokens, the token, and
``after`` tokens, cut at the chunk's edges (outside it the model saw other text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens.errors import LapelensError
from lapelens.hooks import layer_hooks, run_until
from lapelens.models import neuron_spec
from lapelens.types import HookedModel

#: Quantile ranges of a language's token activations that sample contexts, highest first.
QUANTILE_GROUPS = ((0.9, 0.99), (0.5, 0.9), (0.0, 0.5))
#: Activations kept in memory at once (float32): more neurons than fit run in several passes.
MAX_FLOATS = 1 << 27


@dataclass
class NeuronSamples:
    """What the pass keeps, per tracked neuron ``d`` (rows of ``neurons``) and language ``k``.

    Contexts ``c`` are the ``top`` chunk maxima first (highest first; missing ones have value
    ``-inf``), then ``samples`` per quantile group of ``groups`` (missing: ``nan``). For each,
    ``value`` is the activation of the chosen token, found in chunk ``chunk`` (index among
    language k's chunks, -1 if missing) at position ``pos``; ``acts[d, k, c]`` is the window
    around it (the token at index ``before``; ``nan`` outside the chunk). ``bounds[d, k, g]`` are
    the activations at group g's two quantiles (a token belongs to it if ``lo <= a < hi``) and
    ``share[d, k, g]`` the exact fraction of the language's tokens inside. ``hist[d, k, b]``
    counts tokens per bin of ``edges[d]`` (the outer bins also take everything beyond them).
    """

    neurons: Int64[Tensor, "detail 2"]
    value: Float[Tensor, "detail lang context"]
    chunk: Int64[Tensor, "detail lang context"]
    pos: Int64[Tensor, "detail lang context"]
    acts: Float[Tensor, "detail lang context window"]
    bounds: Float[Tensor, "detail lang group 2"]
    share: Float[Tensor, "detail lang group"]
    edges: Float[Tensor, "detail edge"]
    hist: Int64[Tensor, "detail lang bin"]
    top: int
    samples: int
    groups: tuple[tuple[float, float], ...]
    before: int
    tokens_seen: Int64[Tensor, " lang"]


def _activations(
    model: HookedModel, chunks: Tensor, neurons: Tensor, batch_size: int, desc: str, progress: bool
) -> Float[Tensor, "detail chunk pos"]:
    """``act_fn(hook_pre)`` of ``neurons`` on every token of ``chunks``."""
    spec = neuron_spec(model)
    out = torch.empty(len(neurons), *chunks.shape)
    rows_of = {layer: (neurons[:, 0] == layer).nonzero().flatten() for layer in neurons[:, 0].unique().tolist()}
    by_layer = {layer: (rows, neurons[rows, 1]) for layer, rows in rows_of.items()}
    act, state = spec.act_fn(), {}

    def take(layer: int, pre: Tensor) -> None:
        rows, cols = by_layer[layer]
        b = state["batch"]
        out[rows, b : b + pre.shape[0]] = act(pre[..., cols.to(pre.device)].float()).permute(2, 0, 1).cpu()

    device = next(model.parameters()).device
    fwd = layer_hooks({layer: spec.hook_pre(layer) for layer in by_layer}, take)  # stops after the last tracked layer
    with torch.inference_mode(), model.hooks(fwd_hooks=fwd):
        for b in tqdm(range(0, len(chunks), batch_size), desc=desc, disable=not progress):
            state["batch"] = b
            run_until(model, chunks[b : b + batch_size].to(device), use_cache=False)
    return out


def _windows(acts: Tensor, chunk: Tensor, pos: Tensor, before: int, after: int) -> Tensor:
    """``acts[d, chunk, pos - before .. pos + after]`` for each chosen ``(chunk, pos)`` (``nan`` outside)."""
    d, n_chunks, seq = acts.shape
    offsets = torch.arange(-before, after + 1)
    at = pos[..., None] + offsets  # d c w
    inside = (at >= 0) & (at < seq) & (chunk[..., None] >= 0)
    flat = acts.reshape(d, -1)
    idx = (chunk.clamp_min(0)[..., None] * seq + at.clamp(0, seq - 1)).reshape(d, -1)
    out = flat.gather(1, idx).view(*at.shape)
    return torch.where(inside, out, torch.full_like(out, torch.nan))


def _choose(
    acts: Tensor,
    top: int,
    samples: int,
    groups: Sequence[tuple[float, float]],
    generator: torch.Generator,
    edges: Tensor,
) -> tuple[Tensor, ...]:
    """Top chunk maxima and quantile samples of one language for a block of neurons ``acts[d, chunk, pos]``."""
    d, n_chunks, seq = acts.shape
    flat = acts.reshape(d, -1)
    best, where = acts.max(dim=2)  # d chunk
    k = min(top, n_chunks)
    t = best.topk(k, dim=1)
    value = torch.full((d, top), -torch.inf)
    chunk = torch.full((d, top), -1, dtype=torch.long)
    pos = torch.zeros(d, top, dtype=torch.long)
    value[:, :k], chunk[:, :k], pos[:, :k] = t.values, t.indices, where.gather(1, t.indices)
    ordered = flat.sort(dim=1).values
    n = flat.shape[1]
    bounds = torch.empty(d, len(groups), 2)
    share = torch.empty(d, len(groups))
    s_value = torch.full((d, len(groups) * samples), torch.nan)
    s_flat = torch.full((d, len(groups) * samples), -1, dtype=torch.long)
    keys = torch.rand(flat.shape, generator=generator)
    for g, (q_lo, q_hi) in enumerate(groups):
        lo = ordered[:, min(int(q_lo * (n - 1)), n - 1)]
        hi = ordered[:, min(int(q_hi * (n - 1)), n - 1)]
        inside = (flat >= lo[:, None]) & (flat < hi[:, None])
        bounds[:, g] = torch.stack([lo, hi], dim=1)
        share[:, g] = inside.double().mean(dim=1).float()
        m = min(samples, n)
        pick = torch.where(inside, keys, torch.full_like(keys, torch.inf)).topk(m, dim=1, largest=False)
        ok = torch.isfinite(pick.values)
        s_flat[:, g * samples : g * samples + m] = torch.where(ok, pick.indices, -1)
        s_value[:, g * samples : g * samples + m] = torch.where(ok, flat.gather(1, pick.indices), torch.nan)
    s_chunk = torch.where(s_flat >= 0, s_flat // seq, -1)
    s_pos = torch.where(s_flat >= 0, s_flat % seq, 0)
    bins = edges.shape[1] - 1
    lo_e, width = edges[:, :1], (edges[:, -1:] - edges[:, :1]) / bins
    b = ((flat - lo_e) / width).floor().clamp(0, bins - 1).long()
    hist = torch.zeros(d, bins, dtype=torch.long).scatter_add_(1, b, torch.ones_like(b))
    return (
        torch.cat([value, s_value], 1),
        torch.cat([chunk, s_chunk], 1),
        torch.cat([pos, s_pos], 1),
        bounds,
        share,
        hist,
    )


def sample_neurons(
    model: HookedModel,
    chunks_by_language: Mapping[str, Int64[Tensor, "chunk pos"]],
    neurons: Int64[Tensor, "detail 2"],
    edges: Float[Tensor, "detail edge"],
    top: int = 10,
    samples: int = 3,
    before: int = 20,
    after: int = 20,
    groups: Sequence[tuple[float, float]] = QUANTILE_GROUPS,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> NeuronSamples:
    """Run each language's chunks through ``model`` and keep contexts and histograms of ``neurons``."""
    spec = neuron_spec(model)
    neurons = neurons.long()
    if neurons.ndim != 2 or neurons.shape[1] != 2:
        raise LapelensError(f"neurons must be (layer, neuron) rows, got shape {tuple(neurons.shape)}.")
    if len(neurons) and (int(neurons[:, 0].max()) >= spec.n_layers or int(neurons[:, 1].max()) >= spec.d_mlp):
        raise LapelensError(f"A tracked neuron lies outside the model's {spec.n_layers} x {spec.d_mlp} neurons.")
    n_lang, d, n_ctx, w = len(chunks_by_language), len(neurons), top + samples * len(groups), before + 1 + after
    out = dict(
        value=torch.full((d, n_lang, n_ctx), torch.nan),
        chunk=torch.full((d, n_lang, n_ctx), -1, dtype=torch.long),
        pos=torch.zeros(d, n_lang, n_ctx, dtype=torch.long),
        acts=torch.full((d, n_lang, n_ctx, w), torch.nan),
        bounds=torch.full((d, n_lang, len(groups), 2), torch.nan),
        share=torch.zeros(d, n_lang, len(groups)),
        hist=torch.zeros(d, n_lang, edges.shape[1] - 1, dtype=torch.long),
    )
    seen = torch.zeros(n_lang, dtype=torch.long)
    for k, (lang, chunks) in enumerate(chunks_by_language.items()):
        seen[k] = chunks.numel()
        if not d:
            continue
        # Neurons sorted by layer so that a block stops early when its neurons are in low layers.
        order = torch.argsort(neurons[:, 0] * spec.d_mlp + neurons[:, 1])
        step = max(1, MAX_FLOATS // max(1, chunks.numel()))
        generator = torch.Generator().manual_seed(seed * 1_000_003 + k)
        for s in range(0, d, step):
            rows = order[s : s + step]
            acts = _activations(model, chunks, neurons[rows], batch_size, f"contexts {lang}", progress)
            value, chunk, pos, bounds, share, hist = _choose(acts, top, samples, groups, generator, edges[rows])
            out["value"][rows, k], out["chunk"][rows, k], out["pos"][rows, k] = value, chunk, pos
            out["acts"][rows, k] = _windows(acts, chunk, pos, before, after)
            out["bounds"][rows, k], out["share"][rows, k], out["hist"][rows, k] = bounds, share, hist
    return NeuronSamples(
        neurons=neurons,
        edges=edges.float(),
        top=top,
        samples=samples,
        groups=tuple(map(tuple, groups)),
        before=before,
        tokens_seen=seen,
        **out,
    )


def histogram_edges(
    mean: Float[Tensor, "detail lang"], std: Float[Tensor, "detail lang"], bins: int = 24, floor: float = 0.0
) -> Float[Tensor, "detail edge"]:
    """Per-neuron bin edges shared by all languages, from the statistics' mean and std.

    From ``min(floor, min_k mean - 3 std)`` to ``max_k mean + 4 std`` (activations are skewed to
    the right: rare large values are what a language neuron is about). Values outside fall into
    the outer bins, so nothing is dropped.
    """
    lo = torch.minimum((mean - 3 * std).min(dim=1).values, torch.full((len(mean),), floor))
    hi = (mean + 4 * std).max(dim=1).values
    hi = torch.maximum(hi, lo + 1e-3)
    steps = torch.linspace(0, 1, bins + 1)
    return (lo[:, None] + (hi - lo)[:, None] * steps).float()
