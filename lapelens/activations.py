"""Stream per-language neuron statistics out of a hooked model.

Text is tokenized lazily and packed into full ``seq_len`` chunks (``tokens.iter_chunks``), the chunks
run through the model with one hook per layer on ``mlp.hook_pre``, and constant-memory running sums
(:class:`NeuronAccumulator`) become an :class:`~lapelens.stats.ActivationStats`. Nothing that grows
with the corpus is kept: not the activations, not the token ids.

Because the statistics are sums, ``collect_chunks(a) + collect_chunks(b)`` equals
``collect_chunks(a ++ b)`` (counts exactly, float sums up to rounding): that is how to stream,
resume or shard a collection.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens._version import __version__
from lapelens.checkpoint import (
    DEFAULT_CHECKPOINT_EVERY,
    Checkpointer,
    Position,
    StreamHash,
    all_reduce_sum,
    current_shard,
    describe,
)
from lapelens.defaults import SEQ_LEN as DEFAULT_SEQ_LEN  # one default for every command
from lapelens.errors import LapelensError
from lapelens.hooks import layer_hooks, run_until
from lapelens.interrupt import deferred, note
from lapelens.models import NeuronSpec, neuron_spec
from lapelens.stats import ActivationStats, SentenceActivations
from lapelens.tokens import iter_chunks, padded_batch, separator_id, tokenize
from lapelens.types import HookedModel

DEFAULT_BATCH_SIZE = 8
DEFAULT_SENTENCE_TOKENS = 128
#: Most rows of a hook's activation reduced at once. Few large operations beat many small
#: ones (each multi-threaded op waits for all threads, which is costly on a busy machine);
#: the cap only bounds the one reusable buffer.
_BLOCK_BYTES = 1 << 26

_log = logging.getLogger(__name__)


# ---- the accumulator -------------------------------------------------------------------------
class NeuronAccumulator:
    """Running per-language sums over tokens; memory is fixed by (languages, layers, neurons).

    ``update(k, layer, pre)`` adds one batch of ``hook_pre`` values of layer ``layer`` for language
    index ``k``; ``add_tokens(k, n)`` counts the batch's tokens once. Counts are accumulated as
    float64, which is exact for integers below 2**53, and cast to int64 by :meth:`result`.
    """

    def __init__(self, spec: NeuronSpec, languages: Sequence[str]):
        self.spec = spec
        self.languages = tuple(languages)
        shape = (len(self.languages), spec.n_layers, spec.d_mlp)
        self.n = torch.zeros(len(self.languages), dtype=torch.int64)
        # [lang, layer, neuron], ActivationStats' order: the slice one update writes to is contiguous.
        self._count = torch.zeros(shape, dtype=torch.float64)
        self._sum = torch.zeros(shape, dtype=torch.float64)
        self._sq = torch.zeros(shape, dtype=torch.float64)
        self._placed = False
        self._act = spec.act_fn()
        self._max_rows = max(1, _BLOCK_BYTES // (4 * spec.d_mlp))
        # Reused across updates, sized to the largest block seen (at most _BLOCK_BYTES).
        self._ones = self._pos = torch.empty(0)
        # Layers whose activations held inf or NaN since the last check, and their dtype. A flag
        # on the device, read once per batch (check_finite): no host sync per layer.
        self._bad = torch.zeros(spec.n_layers, dtype=torch.bool)
        self._dtype: torch.dtype | None = None

    def _buffers(self, rows: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._pos.shape[0] < rows or self._pos.device != device:
            self._ones = torch.ones(1, rows, device=device)
            self._pos = torch.empty(rows, self.spec.d_mlp, device=device)
        return self._ones[:, :rows], self._pos[:rows]

    def update(self, k: int, layer: int, pre: Float[Tensor, "*tokens neuron"]) -> None:
        x = pre.reshape(-1, pre.shape[-1])
        if x.shape[-1] != self.spec.d_mlp:
            raise LapelensError(f"hook_pre of layer {layer} has {x.shape[-1]} neurons, expected {self.spec.d_mlp}.")
        if not self._placed:  # keep the totals where the model runs (its first layer's device)
            self._count, self._sum, self._sq, self._bad = (
                t.to(x.device) for t in (self._count, self._sum, self._sq, self._bad)
            )
            self._placed = True
        self._dtype = x.dtype
        count, total, sq = self._count[k, layer], self._sum[k, layer], self._sq[k, layer]
        for r in range(0, x.shape[0], self._max_rows):
            block = x[r : r + self._max_rows].float()
            ones, pos = self._buffers(block.shape[0], block.device)
            # Sums over tokens as (1 x rows) @ (rows x neurons) products: one BLAS call each, in
            # float32 (exact for the 0/1 counts below 2**24 rows), then added to float64 totals.
            # A layer on another device (a device_map split) sends d_mlp numbers, not its activations.
            torch.gt(block, 0, out=pos)
            count += (ones @ pos)[0].to(count.device)
            act = self._act(block)
            block_sum = (ones @ act)[0]
            block_sq = (ones @ act.mul_(act))[0]
            # A sum of finite activations cannot overflow float32, so an inf or NaN among them
            # shows in these d_mlp numbers. float16 also sums hook_pre itself: a ReLU turns an
            # overflowed -inf into 0, which the activation sums would not show.
            finite = torch.isfinite(block_sum).all() & torch.isfinite(block_sq).all()
            if x.dtype == torch.float16:
                finite &= torch.isfinite((ones @ block)[0]).all()
            self._bad[layer] |= ~finite.to(self._bad.device)
            total += block_sum.to(count.device)
            sq += block_sq.to(count.device)

    def check_finite(self) -> None:
        """Raise if an activation since the last check was inf or NaN (counts and sums would be wrong),
        naming the first such layer and what to do. One host sync; call it once per batch."""
        bad = self._bad.nonzero()
        if not len(bad):
            return
        layer = int(bad[0])
        self._bad.zero_()
        where = f"blocks.{layer}.mlp.hook_pre"
        if self._dtype == torch.float16:
            raise LapelensError(
                f"float16 activations overflow at layer {layer} (inf or NaN in {where}): collect in "
                "bfloat16 (--dtype bfloat16, float32's range) or float32 (--dtype float32)."
            )
        raise LapelensError(
            f"Activations at layer {layer} are inf or NaN ({where}, {self._dtype}): the model's "
            "weights or inputs hold inf or NaN; check the checkpoint."
        )

    def add_tokens(self, k: int, n_tokens: int) -> None:
        self.n[k] += n_tokens

    # The exact running state, for checkpoints (float64 as it is, so a resumed run is bit-identical).
    def state(self) -> dict[str, Tensor]:
        return {"n": self.n, "count": self._count, "act_sum": self._sum, "act_sq_sum": self._sq}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        for name, mine in self.state().items():
            if state[name].shape != mine.shape or state[name].dtype != mine.dtype:
                raise LapelensError(
                    f"Checkpoint tensor {name!r} is {tuple(state[name].shape)} {state[name].dtype}, "
                    f"expected {tuple(mine.shape)} {mine.dtype}: it is from another model."
                )
        self.n = state["n"].clone()
        self._count, self._sum, self._sq = (
            state[k].to(self._count.device).clone() for k in ("count", "act_sum", "act_sq_sum")
        )

    def all_reduce(self) -> None:
        """Sum the totals over the ranks of the default process group: counts as int64, sums as float64."""
        count = self._count.round().to(torch.int64)
        self.n, count, self._sum, self._sq = all_reduce_sum([self.n, count, self._sum, self._sq])
        self._count = count.to(torch.float64)  # exact: counts stay below 2**53

    def result(self, meta: dict | None = None) -> ActivationStats:
        # The totals are already in ActivationStats' order, lang x layer x neuron: copied, not shared.
        return ActivationStats(
            self.languages,
            self.n.clone(),
            self._count.round().to(torch.int64).to("cpu", copy=True),
            self._sum.to("cpu", copy=True),
            self._sq.to("cpu", copy=True),
            meta=dict(meta or {}),
        )


def _hooks(spec: NeuronSpec, take: Any) -> list[tuple[str, Any]]:
    """``take(layer, hook_pre)`` on every layer; the pass stops after the last one's."""
    return layer_hooks({i: spec.hook_pre(i) for i in range(spec.n_layers)}, take)


def _device(model: HookedModel) -> torch.device:
    """Where the token ids go: the embedding's device (under a device_map the bridge records it in cfg)."""
    original = getattr(model, "original_model", None)
    if getattr(original, "hf_device_map", None) and getattr(model.cfg, "device", None) is not None:
        return torch.device(model.cfg.device)
    return next(model.parameters()).device


def _check_seq_len(model: HookedModel, seq_len: int) -> None:
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx and seq_len > n_ctx:
        raise LapelensError(
            f"seq_len={seq_len} exceeds the model's context of {n_ctx} tokens: use --seq-len {n_ctx} or less."
        )


def _batches(chunks: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(chunks, Tensor):
        yield from chunks.split(batch_size)
        return
    it = iter(chunks)
    while group := list(itertools.islice(it, batch_size)):
        yield torch.stack(group)


# ---- collection ------------------------------------------------------------------------------
def collect_chunks(
    model: HookedModel,
    chunks_by_language: Mapping[str, Int64[Tensor, "chunk pos"] | Iterable[Int64[Tensor, " pos"]]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    meta: dict | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: float | int = DEFAULT_CHECKPOINT_EVERY,
) -> ActivationStats:
    """Statistics of already packed chunks: a ``[chunk, pos]`` tensor or an iterable of chunks per language.

    This is the exact unit of streaming: statistics of two disjoint sets of chunks merge
    (:meth:`ActivationStats.merge`) into the statistics of their union. ``checkpoint`` and
    ``checkpoint_every`` are as in :func:`collect`.
    """
    totals = {lang: c.numel() if isinstance(c, Tensor) else None for lang, c in chunks_by_language.items()}
    return _collect(model, chunks_by_language, batch_size, progress, meta or {}, totals, checkpoint, checkpoint_every)


def _collect(
    model: HookedModel,
    chunks_by_language: Mapping[str, Any],
    batch_size: int,
    progress: bool,
    meta: dict,
    totals: Mapping[str, int | Callable[[], int] | None],
    checkpoint: str | Path | None = None,
    checkpoint_every: float | int = DEFAULT_CHECKPOINT_EVERY,
) -> ActivationStats:
    spec = neuron_spec(model)
    if batch_size < 1:
        raise LapelensError(f"batch_size must be at least 1, got {batch_size}.")
    if not chunks_by_language:
        raise LapelensError("No languages given: pass at least one language with text.")
    shard = current_shard()
    acc = NeuronAccumulator(spec, list(chunks_by_language))
    positions = [Position() for _ in acc.languages]
    saver = None
    if checkpoint is not None:
        settings = {
            "model": str(model.cfg.model_name),
            "dtype": str(next(model.parameters()).dtype),
            "n_layers": spec.n_layers,
            "d_mlp": spec.d_mlp,
            "languages": list(acc.languages),
            "batch_size": batch_size,
            "world_size": shard.world,
            "lapelens_version": __version__,
            **meta,
        }
        saver = Checkpointer(checkpoint, shard, settings, checkpoint_every)
        restored = saver.load()
        if restored is not None:
            acc.load_state(restored[0])
            positions = restored[1]
            _log.info(describe(positions, acc.languages, saver.saves))
    k_now = 0
    device = _device(model)
    seq_lens: set[int] = set()

    def take(layer: int, pre: Tensor) -> None:
        acc.update(k_now, layer, pre)

    # ``clean``: the sums hold whole batches only (false while a batch is being added), so an
    # interrupt may checkpoint them; ``unsaved``: batches were read since the last checkpoint;
    # ``on_disk``: the tokens the checkpoint on disk has read.
    clean, unsaved = True, False
    on_disk = sum(p.tokens for p in positions)
    try:
        with torch.inference_mode(), model.hooks(fwd_hooks=_hooks(spec, take)):
            for k_now, (lang, chunks) in enumerate(chunks_by_language.items()):
                resume = positions[k_now]
                stream = StreamHash()
                show = progress and shard.rank == 0
                total = totals.get(lang)
                if callable(total):  # counted only when a bar shows it
                    total = total() if show else None
                bar = tqdm(
                    total=total,
                    initial=resume.tokens,
                    desc=f"collect {lang}",
                    unit="tok",
                    unit_scale=True,
                    disable=not show,
                )
                b = -1
                for b, batch in enumerate(_batches(chunks, batch_size)):
                    if batch.ndim != 2 or batch.shape[1] == 0:
                        raise LapelensError(
                            f"Chunks for {lang!r} must be token ids of shape [chunk, pos]; got {tuple(batch.shape)}."
                        )
                    _check_seq_len(model, batch.shape[1])
                    seq_lens.add(batch.shape[1])
                    digest = stream.update(batch)
                    if b < resume.batches:  # counted before the checkpoint: only check it is the same text
                        if b == resume.batches - 1 and digest != resume.sha256:
                            raise saver.refuse(
                                f"was made on other text for {lang!r} (its first {resume.tokens:,} tokens differ)"
                            )
                        continue
                    with deferred():  # Ctrl-C under the CLI lands after the batch, not inside it
                        clean = False
                        if shard.owns(b):
                            run_until(model, batch.to(device), use_cache=False)
                            acc.check_finite()  # before the batch's tokens count or a checkpoint is written
                            acc.add_tokens(k_now, batch.numel())
                        positions[k_now] = Position(b + 1, positions[k_now].tokens + batch.numel(), digest)
                        clean = unsaved = True
                        bar.update(batch.numel())
                        if saver is not None and shard.owns(b) and saver.due():
                            saver.save(acc.state(), positions)
                            unsaved, on_disk = False, sum(p.tokens for p in positions)
                bar.close()
                if b + 1 < resume.batches:
                    raise saver.refuse(f"was made on more text for {lang!r} ({resume.tokens:,} tokens read there)")
    except KeyboardInterrupt as exc:
        if saver is not None and clean and unsaved:
            saver.save(acc.state(), positions)
            on_disk = sum(p.tokens for p in positions)
        if saver is not None and on_disk:  # cut inside a batch (no CLI handler): the last checkpoint stands
            note(exc, f"{on_disk:,} tokens saved")
        raise
    if shard.world > 1:
        acc.all_reduce()
    empty = [lang for lang, n in zip(acc.languages, acc.n.tolist()) if n == 0]
    if empty:
        raise LapelensError(f"No chunks for {empty}: give at least one chunk of text per language.")
    if saver is not None:
        saver.remove()
    seq_len = seq_lens.pop() if len(seq_lens) == 1 else sorted(seq_lens)
    if shard.world > 1:  # the float sums are rounded in another order than in one process
        meta = {**meta, "world_size": shard.world}
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if dtype != "float32":  # recorded when not float32, so float32 statistics stay as they always were
        meta = {**meta, "dtype": dtype}
    return acc.result({"model": str(model.cfg.model_name), "seq_len": seq_len, "lapelens_version": __version__, **meta})


def collect(
    model: HookedModel,
    texts_by_language: Mapping[str, Iterable[str]],
    tokens_per_language: int | None = None,
    seq_len: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    corpus: str | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: float | int = DEFAULT_CHECKPOINT_EVERY,
    skip_tokens: int = 0,
) -> ActivationStats:
    """Per-language firing counts and activation sums of every MLP neuron of ``model``.

    Each language's texts are packed into ``seq_len`` chunks (``tokens.iter_chunks``; default
    ``DEFAULT_SEQ_LEN`` or the model's context if shorter), at most ``tokens_per_language`` tokens
    (rounded down to whole chunks; all the text if None), and run in batches of ``batch_size``
    chunks. Memory does not grow with the amount of text. ``corpus`` is recorded in the meta.
    ``skip_tokens`` starts after the chunks an earlier collection of that many tokens counted, so
    that the two, merged (``a.merge(b)``), are the statistics of one longer collection.

    **Several processes.** When a ``torch.distributed`` process group is initialized (e.g. by
    ``torchrun -m lapelens collect``), rank r counts batches r, r + W, r + 2W, ... of each
    language and the totals are summed over ranks (``all_reduce``); every rank returns them.
    Counts equal a one-process run exactly; float sums agree to rounding (they are added in
    another order). Every rank reads and tokenizes all the text. Starting the group yourself,
    ``import torch.distributed.nn.functional`` before ``init_process_group`` (the CLI does):
    imported later (transformers does while loading a model) it holds the group after
    ``destroy_process_group``, and gloo's threads can then abort the process at exit.

    **Resuming.** With ``checkpoint`` (a folder), the running sums are written there at most every
    ``checkpoint_every`` seconds (0: after every batch), atomically. If the folder holds a
    checkpoint of the same settings (model, dtype, languages, seq_len, tokens, corpus, batch size,
    number of processes) the collection continues from it and ends bit-identical to an
    uninterrupted run; a checkpoint of other settings, or of other text, is refused with a
    :class:`LapelensError`. The folder is removed when the collection completes.
    """
    neuron_spec(model)  # refuse a model without MLP hooks before tokenizing anything
    if seq_len is None:
        n_ctx = getattr(model.cfg, "n_ctx", None)
        seq_len = min(DEFAULT_SEQ_LEN, n_ctx) if n_ctx else DEFAULT_SEQ_LEN
    _check_seq_len(model, seq_len)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise LapelensError(
            "The model has no tokenizer: load it with lapelens.load_model, or pack chunks yourself and call collect_chunks."
        )
    if tokens_per_language is not None and tokens_per_language < seq_len:
        raise LapelensError(
            f"tokens_per_language={tokens_per_language} is less than one chunk of seq_len={seq_len}: ask for more tokens."
        )
    streams = {}
    for lang, texts in texts_by_language.items():
        if isinstance(texts, str):
            raise LapelensError(f"Texts for {lang!r} must be a list of documents, not one string.")
        # Check every language up front (tokenizing only its first chunk) rather than fail hours in.
        it = iter_chunks(tokenizer, texts, seq_len, tokens_per_language, skip_tokens)
        try:
            first = next(it)
        except LapelensError as exc:
            raise LapelensError(f"Language {lang!r}: {exc}") from None
        streams[lang] = _warn_if_short(lang, itertools.chain([first], it), seq_len, tokens_per_language)
    meta = {"seq_len": seq_len, "tokens_per_language": tokens_per_language}
    if skip_tokens:
        meta["skip_tokens"] = skip_tokens
    if corpus is not None:
        meta["corpus"] = corpus
    totals: dict[str, Any] = {}
    for lang, texts in texts_by_language.items():
        if tokens_per_language is not None:
            totals[lang] = tokens_per_language // seq_len * seq_len
        elif isinstance(texts, Sequence):  # a list of documents can be read twice: count it for the bar
            totals[lang] = lambda texts=texts: _chunked_tokens(tokenizer, texts, seq_len, skip_tokens)
    return _collect(model, streams, batch_size, progress, meta, totals, checkpoint, checkpoint_every)


def _chunked_tokens(tokenizer: Any, texts: Sequence[str], seq_len: int, skip_tokens: int = 0) -> int:
    """The tokens :func:`iter_chunks` yields from ``texts`` without a budget (the progress bar's
    total): every document with its separator, cut into whole chunks, less the skipped ones."""
    n = sum(len(ids) + 1 for ids in tokenize(tokenizer, texts) if ids)
    return max(0, n // seq_len - skip_tokens // seq_len) * seq_len


def _warn_if_short(lang: str, chunks: Iterator[Tensor], seq_len: int, wanted: int | None) -> Iterator[Tensor]:
    n = 0
    for chunk in chunks:
        n += 1
        yield chunk
    if wanted is not None and n * seq_len < (wanted // seq_len) * seq_len:
        warnings.warn(
            f"Language {lang!r} has only {n * seq_len} tokens in full chunks, fewer than the {wanted} asked for.",
            stacklevel=2,
        )


# ---- per-sentence means (Kojima et al.'s AP) -------------------------------------------------
def collect_sentence_means(
    model: HookedModel,
    sentences_by_language: Mapping[str, Sequence[str]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens_per_sentence: int = DEFAULT_SENTENCE_TOKENS,
    progress: bool = True,
) -> SentenceActivations:
    """For every sentence, the mean over its tokens of ``act_fn(hook_pre)`` of every neuron.

    Each sentence runs as ``[sep] + tokens``, truncated to ``max_tokens_per_sentence`` tokens
    (and to the model's context).
    The separator position is left out of the mean: in a causal model its activations are the
    same for every sentence, so it carries no language and would only add a length-dependent
    offset. Sentences are sorted by length and right-padded within a batch; padded positions
    are masked out of attention and out of the means.
    """
    spec = neuron_spec(model)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise LapelensError("The model has no tokenizer: load it with lapelens.load_model.")
    if max_tokens_per_sentence < 1 or batch_size < 1:
        raise LapelensError("batch_size and max_tokens_per_sentence must be at least 1.")
    n_ctx = getattr(model.cfg, "n_ctx", None)
    keep = min(max_tokens_per_sentence, n_ctx - 1) if n_ctx else max_tokens_per_sentence
    sep = separator_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep
    ids, labels = [], []
    for k, (lang, sentences) in enumerate(sentences_by_language.items()):
        if isinstance(sentences, str) or len(sentences) == 0:
            raise LapelensError(f"Language {lang!r} has no sentences: give a list of sentences for every language.")
        for s, toks in enumerate(tokenize(tokenizer, sentences)):
            if not toks:
                raise LapelensError(f"Sentence {s} of {lang!r} is empty: remove empty sentences.")
            ids.append([sep] + toks[:keep])
            labels.append(k)
    if not ids:
        raise LapelensError("No languages given: pass at least one language with sentences.")
    means = torch.empty(len(ids), spec.n_layers, spec.d_mlp)
    order = sorted(range(len(ids)), key=lambda s: len(ids[s]))
    device = _device(model)
    act_fn = spec.act_fn()
    current: dict[str, Tensor] = {}

    def take(layer: int, pre: Tensor) -> None:
        weights = current["weights"]
        act = act_fn(pre.float()).reshape(*weights.shape, -1)  # [batch, pos, neuron]
        summed = torch.bmm(weights.unsqueeze(1), act).squeeze(1)
        if not bool(torch.isfinite(summed).all()):
            raise LapelensError(
                f"Activations at layer {layer} are inf or NaN (blocks.{layer}.mlp.hook_pre, {pre.dtype}): "
                + (
                    "load the model in bfloat16 or float32."
                    if pre.dtype == torch.float16
                    else "the model's weights or inputs hold inf or NaN."
                )
            )
        means[current["rows"], layer] = (summed / current["lengths"][:, None]).to(means.device)

    with torch.inference_mode(), model.hooks(fwd_hooks=_hooks(spec, take)):
        for b in tqdm(range(0, len(order), batch_size), desc="sentence means", disable=not progress):
            rows = order[b : b + batch_size]
            tokens, mask, weights = padded_batch(ids, rows, pad)
            current.update(rows=torch.tensor(rows), weights=weights.to(device), lengths=weights.sum(1).to(device))
            kwargs = {"attention_mask": mask.to(device)} if bool((mask == 0).any()) else {}
            run_until(model, tokens.to(device), use_cache=False, **kwargs)
    return SentenceActivations(
        tuple(sentences_by_language),
        torch.tensor(labels, dtype=torch.int64),
        means,
        meta={
            "model": str(model.cfg.model_name),
            "max_tokens_per_sentence": keep,
            "separator_in_mean": False,
            "lapelens_version": __version__,
        },
    )
