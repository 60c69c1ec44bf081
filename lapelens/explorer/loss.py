"""The loss change when one neuron alone is deactivated, per language, with a bootstrap interval.

Deactivation is lapelens' (``hook_post[..., j] = 0``, as :func:`lapelens.deactivate`). The change
of a language is the mean change of next-token NLL per predicted token over its held-out chunks;
its 95% interval comes from resampling chunks (paired: the same resampled chunks with and without
the neuron), so a change whose interval spans 0 is no detectable effect at that budget.

The cost is one forward per (neuron, chunk) from the neuron's layer up: the blocks below it are
unperturbed, so the residual stream entering that layer is computed once per batch of chunks
(:func:`lapelens.resume.capture`) and every perturbed copy starts there
(:func:`lapelens.resume.forward_from`), with the same losses as a full forward.

A real model's changes take tens of minutes, so each language's per-chunk losses are kept in a
cache folder (by default the user's lapelens cache, ``explore/``), named by a digest of the
model's weights, the neurons and that language's tokens: an interrupted build resumes at the
language it was on, and a page rebuilt with other settings (contexts, layout) reuses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Float64, Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens._io import atomic_file
from lapelens.errors import LapelensError
from lapelens.models import neuron_spec
from lapelens.neurons import LanguageNeurons
from lapelens.resume import capture, forward_from
from lapelens.types import HookedModel

#: Most rows (chunks x neurons) in one forward, and most logits (rows x positions x vocabulary)
#: it may produce: few large forwards beat many small ones on a CPU, within memory.
MAX_ROWS = 32
MAX_LOGITS = 1 << 26


@dataclass
class LossChanges:
    """Per neuron (rows of ``neurons``: layer, neuron) and language: mean NLL change per token
    (nats) and its bootstrap 95% interval; ``base`` is the unperturbed mean NLL per token."""

    languages: tuple[str, ...]
    neurons: Int64[Tensor, "m 2"]
    base: Float64[Tensor, " lang"]
    delta: Float64[Tensor, "m lang"]
    low: Float64[Tensor, "m lang"]
    high: Float64[Tensor, "m lang"]
    tokens: Int64[Tensor, " lang"]
    chunks: Int64[Tensor, " lang"]
    n_boot: int
    seed: int

    def detectable(self) -> torch.Tensor:
        """True where the interval excludes 0."""
        return (self.low > 0) | (self.high < 0)


def choose_neurons(
    lape: LanguageNeurons, rank: Int64[Tensor, "layer neuron"], max_neurons: int, per_language: int
) -> Int64[Tensor, "m 2"]:
    """Every neuron of ``lape`` when there are at most ``max_neurons``; else each language's
    ``per_language`` best by LAPE rank, taken in turns over the languages (each language's best
    first) up to ``max_neurons`` in all. Sorted by rank."""
    key = torch.where(rank.flatten() < 0, rank.numel(), rank.flatten())  # unranked neurons last
    selected = lape.mask.any(dim=0).flatten()
    if int(selected.sum()) > max_neurons:
        queues = []
        for k in range(len(lape.languages)):
            idx = lape.mask[k].flatten().nonzero().flatten()
            queues.append(idx[key[idx].argsort(stable=True)[:per_language]].tolist())
        chosen: list[int] = []
        for turn in range(per_language):
            for q in queues:
                if turn < len(q) and q[turn] not in chosen and len(chosen) < max_neurons:
                    chosen.append(q[turn])
        selected = torch.zeros_like(selected)
        selected[chosen] = True
    flat = selected.nonzero().flatten()
    flat = flat[key[flat].argsort(stable=True)]
    return torch.stack([flat // lape.d_mlp, flat % lape.d_mlp], dim=1)


def _chunk_nll(logits: Tensor, tokens: Tensor) -> Float64[Tensor, " row"]:
    """Summed next-token NLL of each row (tokens 1.. predicted from their prefix)."""
    targets = tokens.roll(-1, dims=1)
    targets[:, -1] = -100  # the last position predicts nothing; no copy of logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return nll.view(tokens.shape).double().sum(dim=1)


def rows_per_forward(model: HookedModel, seq_len: int) -> int:
    """How many chunk rows one forward takes (``MAX_ROWS``, fewer for a large vocabulary)."""
    vocab = int(getattr(model.cfg, "d_vocab", -1))
    vocab = vocab if vocab > 0 else int(model.W_U.shape[1])
    return max(1, min(MAX_ROWS, MAX_LOGITS // (seq_len * vocab)))


@torch.inference_mode()
def base_nll(model: HookedModel, tokens: Int64[Tensor, "chunk pos"]) -> Float64[Tensor, " chunk"]:
    """Summed next-token NLL of each chunk, unperturbed."""
    device = next(model.parameters()).device
    return _chunk_nll(model(tokens.to(device), return_type="logits", use_cache=False), tokens.to(device)).cpu()


@torch.inference_mode()
def deactivated_nll(
    model: HookedModel,
    layer: int,
    neurons: Int64[Tensor, " n"],
    tokens: Int64[Tensor, "chunk pos"],
    residual: Float[Tensor, "chunk pos d_model"] | None = None,
) -> Float64[Tensor, "n chunk"]:
    """Summed next-token NLL of each chunk with each of ``neurons`` (all of ``layer``) deactivated alone.

    The chunks are repeated once per neuron and each copy has its own neuron zeroed at
    ``hook_post`` of ``layer``. Layers below it are unperturbed, so an implementation that starts
    from the residual stream entering ``layer`` gives the same numbers: with ``residual`` (that
    stream for ``tokens``, from :func:`lapelens.resume.capture`) the forward starts at ``layer``.
    """
    spec = neuron_spec(model)
    device = next(model.parameters()).device
    n, c = len(neurons), len(tokens)
    idx = neurons.to(device)

    def zero_each(act: Tensor, hook: Any) -> Tensor:
        view = act.view(n, c, *act.shape[1:]).clone()  # out of place, as lapelens.interventions does
        view[torch.arange(n, device=act.device), ..., idx] = 0
        return view.view(act.shape)

    rows = tokens.to(device).repeat(n, 1)
    with model.hooks(fwd_hooks=[(spec.hook_post(layer), zero_each)]):
        if residual is None or layer == 0:
            logits = model(rows, return_type="logits", use_cache=False)
        else:
            start = residual.to(device).repeat(n, *([1] * (residual.ndim - 1)))
            logits = forward_from(model, rows, layer, start, return_type="logits", use_cache=False)
    return _chunk_nll(logits, rows).view(n, c).cpu()


def bootstrap(
    diff: Float64[Tensor, "m chunk"], tokens_per_chunk: Int64[Tensor, " chunk"], n_boot: int = 1000, seed: int = 0
) -> tuple[Float64[Tensor, " m"], Float64[Tensor, " m"], Float64[Tensor, " m"]]:
    """Mean change per token (``sum diff / sum tokens``) and its percentile 95% interval from
    ``n_boot`` resamples of the chunks (the same resamples for every row)."""
    c = diff.shape[1]
    tokens = tokens_per_chunk.double()
    mean = diff.sum(dim=1) / tokens.sum()
    idx = torch.randint(0, c, (n_boot, c), generator=torch.Generator().manual_seed(seed))
    boot = diff[:, idx].sum(dim=2) / tokens[idx].sum(dim=1)  # m boot
    q = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=1)
    return mean, q[0], q[1]


#: Bumped when what a cached language holds changes.
CACHE_FORMAT = 1


def weights_digest(model: HookedModel) -> str:
    """A digest of every parameter of ``model`` (names, shapes, dtypes and values), computed once per model object."""
    known = getattr(model, "_lapelens_weights_digest", None)
    if known is None:
        h = hashlib.blake2b(digest_size=16)
        for name, p in model.named_parameters():
            t = p.detach().cpu().contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        known = h.hexdigest()
        object.__setattr__(model, "_lapelens_weights_digest", known)
    return known


def _cache_file(cache: Path, model: HookedModel, neurons: Tensor, tokens: Tensor) -> Path:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_FORMAT}:{weights_digest(model)}:{tuple(tokens.shape)}".encode())
    h.update(neurons.contiguous().numpy().tobytes())
    h.update(tokens.contiguous().numpy().tobytes())
    return cache / f"loss-{h.hexdigest()}.pt"


def loss_changes(
    model: HookedModel,
    neurons: Int64[Tensor, "m 2"],
    chunks: Mapping[str, Int64[Tensor, "chunk pos"]],
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    cache: str | Path | None = None,
) -> LossChanges:
    """Deactivate each of ``neurons`` alone on every language's ``chunks``; see :class:`LossChanges`.

    Neurons are grouped by layer; for each layer, each batch of chunks runs through
    :func:`deactivated_nll` once per group of that layer's neurons (:func:`rows_per_forward` rows
    per forward in all). With ``cache`` (a folder), each language's per-chunk losses are read
    from it when they were computed before for the same weights, neurons and tokens, else
    computed and saved there.
    """
    spec = neuron_spec(model)
    neurons = neurons.long().reshape(-1, 2)
    if len(neurons) and (
        int(neurons[:, 0].max()) >= spec.n_layers or int(neurons[:, 1].max()) >= spec.d_mlp or int(neurons.min()) < 0
    ):
        raise LapelensError(f"A neuron lies outside the model's {spec.n_layers} x {spec.d_mlp} neurons.")
    langs = tuple(chunks)
    m, K = len(neurons), len(langs)
    out = {k: torch.zeros(m, K, dtype=torch.float64) for k in ("delta", "low", "high")}
    base = torch.zeros(K, dtype=torch.float64)
    n_tokens = torch.tensor([c.shape[0] * (c.shape[1] - 1) for c in chunks.values()])
    bar = tqdm(
        total=m * sum(c.numel() for c in chunks.values()),
        unit="tok",
        unit_scale=True,
        desc="loss change",
        disable=not progress,
    )
    for k, (lang, c) in enumerate(chunks.items()):
        if c.ndim != 2 or c.shape[1] < 2:
            raise LapelensError(
                f"{lang}: chunks must be token ids of shape [chunk, pos] with pos >= 2; got {tuple(c.shape)}."
            )
        if not m:  # nothing to compare with: no forward at all
            base[k] = torch.nan
            continue
        saved = _cache_file(Path(cache), model, neurons, c) if cache is not None else None
        if saved is not None and saved.is_file():
            kept = torch.load(saved, weights_only=True)
            ref, perturbed = kept["ref"], kept["perturbed"]
            bar.update(m * c.numel())
        else:
            ref, perturbed = _language(model, neurons, c, bar)
            if saved is not None:
                with atomic_file(saved) as tmp:  # makes the folder
                    torch.save({"ref": ref, "perturbed": perturbed}, tmp)
        base[k] = ref.sum() / n_tokens[k]
        mean, low, high = bootstrap(perturbed - ref, torch.full((len(c),), c.shape[1] - 1), n_boot, seed)
        out["delta"][:, k], out["low"][:, k], out["high"][:, k] = mean, low, high
    bar.close()
    return LossChanges(
        langs,
        neurons,
        base,
        tokens=n_tokens,
        chunks=torch.tensor([len(c) for c in chunks.values()]),
        n_boot=n_boot,
        seed=seed,
        **out,
    )


def _language(
    model: HookedModel, neurons: Int64[Tensor, "m 2"], c: Int64[Tensor, "chunk pos"], bar: Any
) -> tuple[Float64[Tensor, " chunk"], Float64[Tensor, "m chunk"]]:
    """Summed NLL of each chunk of one language unperturbed, and with each neuron deactivated alone."""
    m = len(neurons)
    rows_max = rows_per_forward(model, c.shape[1])
    ref = torch.cat([base_nll(model, c[b : b + rows_max]) for b in range(0, len(c), rows_max)])
    perturbed = torch.zeros(m, len(c), dtype=torch.float64)
    for layer in neurons[:, 0].unique().tolist():
        rows = (neurons[:, 0] == layer).nonzero().flatten()
        per = max(1, rows_max // min(len(rows), rows_max))  # chunks per batch; neurons per forward below
        for b in range(0, len(c), per):
            tokens = c[b : b + per]  # the same batch for every neuron group of this layer
            residual = None
            if layer > 0:
                with torch.inference_mode():
                    _, kept = capture(
                        model,
                        tokens.to(next(model.parameters()).device),
                        [layer],
                        return_type=None,
                        use_cache=False,
                    )
                residual = kept[layer]
            for group in rows.split(max(1, rows_max // len(tokens))):
                perturbed[group, b : b + per] = deactivated_nll(model, layer, neurons[group, 1], tokens, residual)
                bar.update(len(group) * tokens.numel())
    return ref, perturbed
