"""Everything the explorer page shows, gathered from statistics, neuron sets and the model.

From the saved results (cheap, for every neuron): firing counts, mean activations, LAPE entropy and
rank, which method selected which neuron for which language. From the model: the direct logit
effects of the selected neurons and, for each token of the page's text, the neurons of the whole
model that promote it most (matrix products over the columns needed), a pass over train text for
the tracked neurons (contexts, histograms), and the loss change of single neurons on held-out
text (the expensive part).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int64
from torch import Tensor

from lapelens.constants import RUN_CONFIG
from lapelens.corpus import SPLITS, load_corpus
from lapelens.defaults import SEQ_LEN, defaults_for
from lapelens.errors import LapelensError
from lapelens.evaluate.perplexity import evaluation_chunks
from lapelens.explorer.contexts import NeuronSamples, histogram_edges, sample_neurons
from lapelens.explorer.effects import neuron_logits, strongest_promoters, unembedding
from lapelens.explorer.loss import choose_neurons, loss_changes
from lapelens.explorer.panels import (
    ContextPanel,
    FiringPanel,
    HistogramPanel,
    LogitPanel,
    LossPanel,
    MeanPanel,
    SelectionPanel,
)
from lapelens.explorer.search import SearchIndex, typeable_tokens
from lapelens.explorer.text import REPLACEMENT, id_width, merged_runs, shown_token
from lapelens.methods import identify
from lapelens.methods._common import quantile_value
from lapelens.methods._registry import METHODS, neuron_methods, with_role
from lapelens.models import load_model, neuron_spec
from lapelens.neurons import LanguageNeurons
from lapelens.run import Run
from lapelens.stats import ActivationStats, entropy
from lapelens.tokens import pack_chunks
from lapelens.types import HookedModel


@dataclass
class ExplorerInputs:
    """What a page is built from: statistics, neuron sets, the model's name and the text's corpus."""

    model: str
    corpus: str
    seq_len: int
    stats: ActivationStats
    #: Method -> neuron set, in registry order.
    sets: dict[str, LanguageNeurons]
    #: Where they came from (shown on the page).
    source: str
    run_config: dict = field(default_factory=dict)

    @property
    def primary(self) -> str:
        """The set whose neurons get loss changes and whose languages steer: LAPE's, else the first."""
        return with_role("primary", self.sets) or next(iter(self.sets))


def load_run(run_dir: str | Path) -> ExplorerInputs:
    """``config.json``, the statistics and every neuron set of a finished ``lapelens reproduce`` folder
    (read through :class:`lapelens.run.Run`, the one reader of a run folder)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LapelensError(f"{run} does not exist: pass the --out folder of a `lapelens reproduce` run.")
    run = Run(run)
    if not (run.path / "stats").is_dir():
        raise LapelensError(
            f"{run.path} has no stats/ (the statistics, a run's first stage): pass the --out folder "
            f"of a `lapelens reproduce` run, or run `lapelens reproduce --out {run.path}` (it reuses "
            "what is there)."
        )
    if not run.finished:
        raise LapelensError(
            f"{run.path} has no {RUN_CONFIG}: its `lapelens reproduce` run did not finish; re-run the "
            "same command to complete it (the stages already saved are reused)."
        )
    config, stats = run.config, run.stats
    # The run's neuron sets in registry order (PV's parameter mask is not one).
    sets = {m: run.selections[m] for m in neuron_methods() if isinstance(run.selections.get(m), LanguageNeurons)}
    primary = with_role("primary", METHODS)  # LAPE: the page ranks every neuron as it does
    if primary not in sets:
        raise LapelensError(
            f"{run.path} has no {METHODS[primary].stage}/: run `lapelens reproduce` with the {primary} method."
        )
    for method, s in sets.items():
        if (s.n_layers, s.d_mlp) != (stats.n_layers, stats.d_mlp):
            raise LapelensError(
                f"{run.path}/{METHODS[method].stage} is for a {s.n_layers} x {s.d_mlp} model, the "
                f"statistics for {stats.n_layers} x {stats.d_mlp}."
            )
        sets[method] = _aligned(s, stats)
    keep = ("model", "corpus", "tokens_per_language", "seq_len", "top_rate", "ap_k", "seed")
    return ExplorerInputs(
        model=str(config.get("model", "embedded")),
        corpus=str(config.get("corpus", "embedded")),
        seq_len=int(config.get("seq_len", 256)),
        stats=stats,
        sets=sets,
        source=f"run {run.path}",
        run_config={k: config[k] for k in keep if k in config},
    )


def from_parts(
    stats: ActivationStats,
    neurons: LanguageNeurons | None = None,
    model: str | None = None,
    corpus: str | None = None,
    seq_len: int | None = None,
    source: str = "",
) -> ExplorerInputs:
    """Inputs from statistics and one neuron set (default: LAPE on ``stats`` with the model's default
    ``top_rate``); the model, corpus and chunk length default to what the statistics record."""
    model = model or str(stats.meta.get("model") or "embedded")
    recorded = str(stats.meta.get("corpus") or "embedded")
    base, _, split = recorded.rpartition(":")
    corpus = corpus or (base if split in SPLITS and base else recorded)
    if neurons is None:
        neurons = identify(stats, "lape", top_rate=defaults_for(model).top_rate)
    if (neurons.n_layers, neurons.d_mlp) != (stats.n_layers, stats.d_mlp):
        raise LapelensError(
            f"The {neurons.method} neuron set is for a {neurons.n_layers} x {neurons.d_mlp} model, "
            f"the statistics for {stats.n_layers} x {stats.d_mlp}: use both from the same model."
        )
    return ExplorerInputs(
        model=model,
        corpus=corpus,
        seq_len=int(seq_len or stats.meta.get("seq_len") or SEQ_LEN),
        stats=stats,
        sets={neurons.method: _aligned(neurons, stats)},
        source=source or f"model {model}",
        run_config={"model": model, "corpus": corpus},
    )


def _aligned(neurons: LanguageNeurons, stats: ActivationStats) -> LanguageNeurons:
    """``neurons`` over the statistics' languages, in their order (the page's columns); a language
    the set lacks gets no neurons, one the statistics lack is refused."""
    missing = [l for l in neurons.languages if l not in stats.languages]
    if missing:
        raise LapelensError(
            f"The {neurons.method} neuron set has languages {missing} that the statistics lack "
            f"({list(stats.languages)}): use both for the same languages."
        )
    if tuple(neurons.languages) == tuple(stats.languages):
        return neurons
    mask = torch.zeros(len(stats.languages), stats.n_layers, stats.d_mlp, dtype=torch.bool)
    for k, lang in enumerate(neurons.languages):
        mask[stats.lang_index(lang)] = neurons.mask[k]
    return LanguageNeurons(stats.languages, mask, neurons.method, dict(neurons.meta))


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


@dataclass
class ExplorerData:
    """The page's content: one data class per panel, the search index and every token's text."""

    model: str
    languages: tuple[str, ...]
    n_layers: int
    d_mlp: int
    selection: SelectionPanel
    firing: FiringPanel
    mean: MeanPanel
    histogram: HistogramPanel
    contexts: ContextPanel
    logits: LogitPanel
    loss: LossPanel
    search: SearchIndex
    #: Token id -> the text the page shows for it alone (a byte piece: its raw token in angle quotes).
    vocab: dict[int, str]
    #: Budgets, timings and provenance, shown on the page.
    settings: dict = field(default_factory=dict)


def _vocab(tokenizer: Any, n_vocab: int) -> tuple[list[str], dict[int, str]]:
    """Every id's decoded text (for search) and the text the page shows for it."""
    n = min(n_vocab, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)]) + [""] * (n_vocab - n)
    shown = {i: shown_token(tokenizer, i, t if i < n else None) for i, t in enumerate(texts)}
    return texts, shown


def _min_activation(model: HookedModel) -> float:
    return float(neuron_spec(model).act_fn()(torch.linspace(-20, 20, 4001)).min())


def _train_chunks(model: HookedModel, inputs: ExplorerInputs, context_tokens: int) -> dict[str, Tensor]:
    """Each language's train text packed as ``lapelens collect`` packs it, ``context_tokens`` tokens of it."""
    langs = list(inputs.stats.languages)
    train = load_corpus(inputs.corpus, split="train", languages=langs)
    seq = inputs.seq_len
    return {l: pack_chunks(model.tokenizer, train[l], seq, max(context_tokens, seq)) for l in langs}


def _contexts(
    model: HookedModel,
    inputs: ExplorerInputs,
    chunks: dict[str, Tensor],
    detail: Int64[Tensor, "detail 2"],
    texts: list[str],
    top_k: int,
    samples: int,
    window: tuple[int, int],
    bins: int,
    seed: int,
    progress: bool,
) -> tuple[NeuronSamples, dict[str, Tensor], dict[str, dict[int, list]]]:
    """The pass over train ``chunks`` for the ``detail`` neurons, the chunks its contexts show
    (renumbered), and the byte pieces merged into characters in each of those chunks."""
    stats, tok = inputs.stats, model.tokenizer
    langs = list(stats.languages)
    rows = slice(None), detail[:, 0], detail[:, 1]  # lang x detail; histogram_edges takes one row per neuron
    edges = histogram_edges(
        stats.mean_activation()[rows].T.float(),
        stats.std_activation()[rows].T.float(),
        bins,
        floor=_min_activation(model),
    )
    s = sample_neurons(model, chunks, detail, edges, top_k, samples, window[0], window[1], seed=seed, progress=progress)
    used, runs = {}, {}
    partial = {i for i, t in enumerate(texts) if REPLACEMENT in t}
    for k, lang in enumerate(langs):  # keep only the chunks a context shows, renumbered
        kept = s.chunk[:, k].unique()
        kept = kept[kept >= 0]
        remap = torch.full((len(chunks[lang]),), -1, dtype=torch.long)
        remap[kept] = torch.arange(len(kept))
        s.chunk[:, k] = torch.where(s.chunk[:, k] >= 0, remap[s.chunk[:, k].clamp_min(0)], -1)
        used[lang] = chunks[lang][kept]
        runs[lang] = {c: r for c, ids in enumerate(used[lang].tolist()) if (r := merged_runs(tok, ids, partial))}
    return s, used, runs


def gather(
    source: ExplorerInputs | str | Path,
    model: HookedModel | None = None,
    *,
    context_tokens: int = 8192,
    top_k: int = 10,
    samples: int = 3,
    window: tuple[int, int] = (20, 20),
    bins: int = 24,
    logit_top: int = 10,
    search_top: int = 5,
    loss_max_neurons: int = 160,
    loss_per_language: int = 20,
    loss_tokens: int = 2560,
    loss_seq_len: int = 128,
    n_boot: int = 1000,
    loss_cache: str | Path | None = None,
    detail_methods: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ExplorerData:
    """Collect the explorer's content for a ``lapelens reproduce`` folder (or :func:`from_parts` inputs).

    ``model`` defaults to ``load_model(inputs.model)``. Budgets: ``context_tokens`` train tokens per
    language for the contexts and histograms of the neurons ``detail_methods`` selected (default:
    the primary method's); every neuron of the primary set gets a loss change when there are at
    most ``loss_max_neurons``, else each language's ``loss_per_language`` best, on ``loss_tokens``
    held-out tokens per language in chunks of ``loss_seq_len`` (``loss_max_neurons=0``: none),
    kept in and read back from ``loss_cache`` if given (:func:`lapelens.explorer.loss.loss_changes`).
    The ``logit_top`` promoted and suppressed tokens and a ``bins``-bin effect histogram go to every
    neuron some set selected; the search index to every token of that train and held-out text, with
    its ``search_top`` strongest promoters among all neurons.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(max(0.0, time.perf_counter() - start - sum(timings.values())), 1)

    inputs = source if isinstance(source, ExplorerInputs) else load_run(source)
    stats, sets = inputs.stats, inputs.sets
    if model is None:
        model = load_model(inputs.model)
    neuron_spec(model).check_fits(stats.n_layers, stats.d_mlp, "statistics")
    lap("load")
    langs, primary = list(stats.languages), inputs.primary
    filter_rate = sets[primary].meta.get("settings", {}).get("filter_rate", 0.95)
    rank, thr = lape_ranking(stats, filter_rate)
    entropy = torch.tensor(stats.neuron_table()["entropy"].to_numpy()).view(stats.n_layers, stats.d_mlp).double()
    tok = model.tokenizer
    texts, shown = _vocab(tok, unembedding(model)[1].shape[1])
    width = id_width(len(texts))
    train_chunks = _train_chunks(model, inputs, context_tokens)
    eval_chunks = evaluation_chunks(model, inputs.corpus, langs, max(loss_tokens, loss_seq_len), loss_seq_len)
    lap("text")

    # Logit tables for the neurons some method selected; the search index for the tokens of the
    # page's text, each with its strongest promoters among all neurons.
    listed = torch.stack([s.mask.any(dim=0) for s in sets.values()]).any(dim=0).nonzero()
    logits = neuron_logits(model, listed, logit_top, bins)
    indexed = typeable_tokens(texts, [*train_chunks.values(), *eval_chunks.values()])
    promoters = strongest_promoters(model, indexed, search_top)
    lap("logit effects")

    detail_methods = (primary,) if detail_methods is None else tuple(detail_methods)
    unknown = [m for m in detail_methods if m not in neuron_methods()]
    if unknown:
        raise LapelensError(f"Unknown methods {unknown}: choose from {list(neuron_methods())}.")
    detail_mask = torch.zeros(stats.n_layers, stats.d_mlp, dtype=torch.bool)
    for m in detail_methods:
        if m in sets:
            detail_mask |= sets[m].mask.any(dim=0)
    s, used, runs = _contexts(
        model, inputs, train_chunks, detail_mask.nonzero(), texts, top_k, samples, window, bins, seed, progress
    )
    lap("contexts and histograms")

    lape = sets[primary]
    chosen = (
        choose_neurons(lape, rank, loss_max_neurons, loss_per_language)
        if loss_max_neurons > 0
        else torch.empty(0, 2, dtype=torch.long)
    )
    loss = loss_changes(model, chosen, eval_chunks, n_boot=n_boot, seed=seed, progress=progress, cache=loss_cache)
    lap("loss changes")

    settings = {
        "source": inputs.source,
        "run_config": inputs.run_config,
        "corpus": inputs.corpus,
        "stats_tokens_per_language": dict(zip(langs, stats.n.tolist())),
        "lape_filter_rate": filter_rate,
        "primary": primary,
        "detail_methods": [m for m in detail_methods if m in sets],
        "detail_neurons": len(s.neurons),
        "context_tokens_per_language": dict(zip(langs, s.tokens_seen.tolist())),
        "context_split": "train",
        "context_seq_len": inputs.seq_len,
        "histogram_bins": bins,
        "logit_top": logit_top,
        "search_top": search_top,
        "logit_neurons": len(listed),
        "search_tokens": len(indexed),
        "vocab_size": len(texts),
        "loss_neurons": len(chosen),
        "loss_max_neurons": loss_max_neurons,
        "loss_per_language": loss_per_language,
        "primary_neurons": int(lape.mask.any(dim=0).sum()),
        "loss_tokens_per_language": dict(zip(langs, loss.tokens.tolist())),
        "loss_seq_len": loss_seq_len,
        "loss_split": "valid",
        "steer_scale": defaults_for(inputs.model).steer_scale,
        "timings_seconds": timings,
    }
    return ExplorerData(
        model=inputs.model,
        languages=tuple(langs),
        n_layers=stats.n_layers,
        d_mlp=stats.d_mlp,
        selection=SelectionPanel(entropy, rank, float(thr), filter_rate, {m: n.mask for m, n in sets.items()}, primary),
        firing=FiringPanel(stats.count.clone(), stats.n.clone()),
        mean=MeanPanel(stats.mean_activation()),
        histogram=HistogramPanel(s.neurons, s.edges, s.hist),
        contexts=ContextPanel(s, used, runs, width, shown),
        logits=LogitPanel(logits, width),
        loss=LossPanel(loss),
        search=SearchIndex(texts, promoters),
        vocab=shown,
        settings=settings,
    )
