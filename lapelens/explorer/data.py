"""Everything the explorer page shows, gathered from a run folder and its model.

From the saved results (cheap, for every neuron): firing counts, mean activations, LAPE entropy and
rank, which method selected which neuron for which language. From the model: every neuron's direct
logit effect (a matrix product), and, for the selected neurons only, a second pass over train text
(top contexts, histograms) and, for a capped number of LAPE neurons, the loss change when the
neuron alone is deactivated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Float64, Int64
from torch import Tensor

from lapelens.constants import RUN_CONFIG
from lapelens.corpus import load_corpus
from lapelens.errors import LapelensError
from lapelens.evaluate.perplexity import evaluation_chunks
from lapelens.explorer.contexts import NeuronSamples, histogram_edges, sample_neurons
from lapelens.explorer.effects import logit_effects, loss_changes
from lapelens.methods._common import quantile_value
from lapelens.methods._registry import METHODS, neuron_methods, with_role
from lapelens.models import load_model, neuron_spec
from lapelens.neurons import LanguageNeurons
from lapelens.run import Run
from lapelens.stats import ActivationStats, entropy
from lapelens.tokens import iter_chunks
from lapelens.types import HookedModel


@dataclass
class ExplorerData:
    """The explorer's content; ``neurons`` rows are ``(layer, neuron)``."""

    model: str
    languages: tuple[str, ...]
    n: Int64[Tensor, " lang"]
    count: Int64[Tensor, "lang layer neuron"]
    mean: Float64[Tensor, "lang layer neuron"]
    entropy: Float64[Tensor, "layer neuron"]
    #: Position in LAPE's ranking (0 = lowest entropy); -1 where no language passes the filter.
    lape_rank: Int64[Tensor, "layer neuron"]
    lape_threshold: float | None
    selections: dict[str, Bool[Tensor, "lang layer neuron"]]
    promoted: Int64[Tensor, "layer neuron top"]
    promoted_logit: Float[Tensor, "layer neuron top"]
    suppressed: Int64[Tensor, "layer neuron top"]
    suppressed_logit: Float[Tensor, "layer neuron top"]
    samples: NeuronSamples
    #: The second pass's chunks per language (``samples.chunk`` indexes them).
    chunks: dict[str, Int64[Tensor, "chunk pos"]]
    #: lang -> chunk -> position -> text shown instead of the token's own (see ``partial_characters``).
    chunk_text: dict[str, dict[int, dict[int, str]]]
    loss_neurons: Int64[Tensor, "m 2"]
    loss_base: Float64[Tensor, " lang"]
    loss_delta: Float64[Tensor, "m lang"]
    #: Token id -> text, for every id the page shows.
    vocab: dict[int, str]
    #: Budgets, caps, timings and provenance, shown on the page.
    settings: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.count.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.count.shape[2]

    def firing_probability(self) -> Float64[Tensor, "lang layer neuron"]:
        return self.count.double() / self.n.double().view(-1, 1, 1)


def finished_run(run_dir: str | Path) -> Run:
    """The run folder, refused unless ``reproduce`` finished it (the page needs its statistics)."""
    run = Run(run_dir)
    if not run.finished or not run.saved("stats"):
        raise LapelensError(f"{run.path} is not a finished `lapelens reproduce` folder (it needs {RUN_CONFIG} and stats/).")
    return run


def _neuron_sets(run: Run, stats: ActivationStats) -> dict[str, LanguageNeurons]:
    """The run's neuron sets (PV's parameter mask left out), checked against its statistics."""
    sets = {m: s for m, s in run.selections.items() if isinstance(s, LanguageNeurons)}
    primary = with_role("primary", METHODS)  # LAPE: the page ranks every neuron as it does
    if primary not in sets:
        raise LapelensError(f"{run.path} has no {METHODS[primary].stage}/: run `lapelens reproduce` with the {primary} method.")
    for method, s in sets.items():
        if (s.n_layers, s.d_mlp) != (stats.n_layers, stats.d_mlp):
            raise LapelensError(f"{run.path}/neurons_{method} is for a {s.n_layers} x {s.d_mlp} model, the statistics for "
                                f"{stats.n_layers} x {stats.d_mlp}.")
    return sets


def lape_ranking(stats: ActivationStats, filter_rate: float = 0.95) -> tuple[Int64[Tensor, "layer neuron"], float]:
    """Each neuron's place in LAPE's ranking, computed as ``entropy_select`` does (float32 ``p``,
    stable ascending sort of the entropy, ``inf`` where no ``p_k`` exceeds the threshold)."""
    probs = stats.count / stats.n.view(-1, 1, 1)
    h = entropy(probs)
    thr = quantile_value(probs.flatten(), filter_rate, "filter_rate")
    h[(probs > thr).sum(dim=0) == 0] = torch.inf
    flat = h.flatten()
    order = torch.sort(flat, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    rank[~torch.isfinite(flat)] = -1
    return rank.view(h.shape), thr


def loss_neuron_choice(lape: LanguageNeurons, rank: Int64[Tensor, "layer neuron"], cap: int) -> Int64[Tensor, "m 2"]:
    """Up to ``cap`` LAPE neurons, taken round robin over languages, each language's in rank order,
    so that every language's best neurons get a loss change."""
    queues = []
    for k in range(len(lape.languages)):
        idx = lape.mask[k].flatten().nonzero().flatten()
        queues.append(idx[rank.flatten()[idx].argsort()].tolist())
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < cap and any(queues):
        for q in queues:
            while q and q[0] in seen:
                q.pop(0)
            if q and len(chosen) < cap:
                seen.add(q[0])
                chosen.append(q.pop(0))
    flat = torch.tensor(sorted(chosen, key=lambda f: int(rank.flatten()[f])), dtype=torch.long)
    return torch.stack([flat // lape.d_mlp, flat % lape.d_mlp], dim=1) if len(flat) else torch.empty(0, 2, dtype=torch.long)


def _vocab(tokenizer: Any, ids: Sequence[int]) -> dict[int, str]:
    """Readable text of each token: its decoding, or the raw token where it is a partial character."""
    out = {}
    for i in sorted(set(ids)):
        text = tokenizer.decode([i])
        if "\ufffd" in text:
            text = "\u2039" + str(tokenizer.convert_ids_to_tokens(i)) + "\u203a"
        out[i] = text
    return out


def partial_characters(tokenizer: Any, chunk: Sequence[int], partial: set[int]) -> dict[int, str]:
    """Positions of ``chunk`` whose token is only part of a character (byte-level tokens), with
    what to show there: a run of such tokens shows the character(s) they make together on its
    last token and nothing on the others (their activations are still shaded)."""
    out: dict[int, str] = {}
    run: list[int] = []
    for p, i in enumerate(list(chunk) + [None]):
        if i is not None and i in partial:
            run.append(p)
            continue
        if run:
            text = tokenizer.decode([chunk[q] for q in run])
            if "\ufffd" not in text:
                out.update({q: "" for q in run[:-1]})
                out[run[-1]] = text
            run = []
    return out


def _min_activation(model: HookedModel) -> float:
    return float(neuron_spec(model).act_fn()(torch.linspace(-20, 20, 4001)).min())


def gather(
    run_dir: str | Path,
    model: HookedModel | None = None,
    *,
    context_tokens: int = 8192,
    top_k: int = 3,
    window: tuple[int, int] = (10, 4),
    bins: int = 24,
    logit_top: int = 10,
    loss_neurons: int = 42,
    loss_tokens: int = 256,
    loss_seq_len: int = 128,
    detail_methods: Sequence[str] | None = None,
    progress: bool = True,
) -> ExplorerData:
    """Collect the explorer's content for a ``lapelens reproduce`` folder.

    ``model`` defaults to ``load_model(config["model"])``. Budgets: ``context_tokens`` train tokens
    per language for contexts and histograms (neurons selected by ``detail_methods`` only);
    ``loss_neurons`` LAPE neurons get a loss change, on ``loss_tokens`` held-out tokens per language.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - start - sum(timings.values()), 1)

    run = finished_run(run_dir)
    config, stats = run.config, run.stats
    sets = _neuron_sets(run, stats)
    if model is None:
        model = load_model(config["model"])
    neuron_spec(model).check_fits(stats.n_layers, stats.d_mlp, "run's statistics")
    lap("load")
    langs = list(stats.languages)
    lape = sets[with_role("primary", METHODS)]
    filter_rate = lape.meta.get("settings", {}).get("filter_rate", 0.95)
    rank, thr = lape_ranking(stats, filter_rate)
    entropy = torch.tensor(stats.neuron_table()["entropy"].to_numpy()).view(stats.n_layers, stats.d_mlp).double()
    promoted, promoted_logit, suppressed, suppressed_logit = logit_effects(model, logit_top)
    lap("logit effects")

    # Second pass: contexts and histograms of the selected neurons, on train text.
    detail_methods = neuron_methods() if detail_methods is None else tuple(detail_methods)
    unknown = [m for m in detail_methods if m not in neuron_methods()]
    if unknown:
        raise LapelensError(f"Unknown methods {unknown}: choose from {list(neuron_methods())}.")
    detail_mask = torch.zeros(stats.n_layers, stats.d_mlp, dtype=torch.bool)
    for m in detail_methods:
        if m in sets:
            detail_mask |= sets[m].mask.any(dim=0)
    detail = detail_mask.nonzero()
    seq_len = int(config.get("seq_len", 256))
    texts = load_corpus(config.get("corpus", "embedded"), split="train", languages=langs)
    chunks = {l: list(iter_chunks(model.tokenizer, texts[l], seq_len, max(context_tokens, seq_len))) for l in langs}
    d_rows = slice(None), detail[:, 0], detail[:, 1]  # lang x detail; histogram_edges takes one row per neuron
    edges = histogram_edges(stats.mean_activation()[d_rows].T.float(), stats.std_activation()[d_rows].T.float(), bins,
                            floor=_min_activation(model))
    samples = sample_neurons(model, chunks, detail, edges, top_k, window[0], window[1], progress=progress)
    chunks = {l: torch.stack(c) for l, c in chunks.items()}
    lap("contexts and histograms")

    # Loss change of single LAPE neurons, on held-out text.
    chosen = loss_neuron_choice(lape, rank, loss_neurons)
    eval_chunks = evaluation_chunks(model, config.get("corpus", "embedded"), langs, max(loss_tokens, loss_seq_len), loss_seq_len)
    base, delta = loss_changes(model, chosen, eval_chunks, progress=progress)
    lap("loss changes")

    ids = set(promoted.flatten().tolist()) | set(suppressed.flatten().tolist())
    for k, lang in enumerate(langs):
        used = samples.chunk[:, k].unique()
        ids |= set(chunks[lang][used[used >= 0]].flatten().tolist())
    vocab = _vocab(model.tokenizer, sorted(ids))
    partial = {i for i in vocab if "\ufffd" in model.tokenizer.decode([i])}
    shown = {}  # lang -> chunk index -> position -> text, for byte tokens that form a character together
    for k, lang in enumerate(langs):
        used = samples.chunk[:, k].unique().tolist()
        fixes = {c: partial_characters(model.tokenizer, chunks[lang][c].tolist(), partial) for c in used if c >= 0}
        shown[lang] = {c: f for c, f in fixes.items() if f}
    lape_total = int(lape.mask.any(dim=0).sum())
    settings = {
        "run_dir": str(run_dir),
        "run_config": {k: config[k] for k in ("model", "corpus", "tokens_per_language", "seq_len", "top_rate", "ap_k", "seed")
                       if k in config},
        "stats_tokens_per_language": dict(zip(langs, stats.n.tolist())),
        "lape_filter_rate": filter_rate,
        "detail_methods": [m for m in detail_methods if m in sets],
        "detail_neurons": len(detail),
        "context_tokens_per_language": dict(zip(langs, samples.tokens_seen.tolist())),
        "context_split": "train",
        "top_k": top_k,
        "window": list(window),
        "histogram_bins": bins,
        "logit_top": logit_top,
        "loss_neurons": len(chosen),
        "loss_neurons_cap": loss_neurons,
        "lape_neurons": lape_total,
        "loss_tokens_per_language": {l: int(c.numel()) for l, c in eval_chunks.items()},
        "loss_split": "valid",
        "timings_seconds": timings,
    }
    lap("vocabulary")
    return ExplorerData(
        model=str(config.get("model")), languages=tuple(langs), n=stats.n.clone(), count=stats.count.clone(),
        mean=stats.mean_activation(), entropy=entropy, lape_rank=rank, lape_threshold=float(thr),
        selections={m: s.mask for m, s in sets.items()}, promoted=promoted, promoted_logit=promoted_logit,
        suppressed=suppressed, suppressed_logit=suppressed_logit, samples=samples, chunks=chunks, chunk_text=shown, loss_neurons=chosen,
        loss_base=base, loss_delta=delta, vocab=vocab, settings=settings,
    )
