"""Text to token ids: separators, packing into full chunks, padding into batches.

Every document becomes ``[sep] + tokens`` (``sep``: BOS, else EOS, :func:`separator_id`). For
statistics and perplexity the documents are concatenated and cut into full ``seq_len`` chunks
(:func:`iter_chunks`, lazily; :func:`pack_chunks`, all at once); for per-text means each text is
a row of a right-padded batch (:func:`padded_batch`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Int64
from torch import Tensor

from lapelens.errors import LapelensError

#: Documents tokenized per call to the (fast, batched) tokenizer while streaming.
_TOKENIZE_GROUP = 64


def separator_id(tokenizer: Any) -> int:
    """The token put before every document: BOS, or EOS when the tokenizer has no BOS."""
    for name in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise LapelensError(
        "The tokenizer has neither a BOS nor an EOS token, so documents cannot be separated: "
        "set tokenizer.bos_token (or eos_token) before collecting."
    )


def tokenize(tokenizer: Any, texts: Iterable[str]) -> Iterator[list[int]]:
    it = iter(texts)
    while group := list(itertools.islice(it, _TOKENIZE_GROUP)):
        if not all(isinstance(t, str) for t in group):
            raise LapelensError("Texts must be strings, one document each.")
        yield from tokenizer(group, add_special_tokens=False, verbose=False)["input_ids"]


def iter_chunks(
    tokenizer: Any, texts: Iterable[str], seq_len: int, max_tokens: int | None = None, skip_tokens: int = 0
) -> Iterator[Int64[Tensor, " pos"]]:
    """Yield ``seq_len``-token chunks of ``texts``, tokenizing lazily.

    Each document becomes ``[sep] + tokens`` (``sep`` from :func:`separator_id`), documents are
    concatenated, and the stream is cut into full chunks: no padding, the incomplete tail is
    dropped. The first ``skip_tokens // seq_len`` chunks are skipped (the chunks an earlier
    collection of ``skip_tokens`` counted), then at most ``max_tokens // seq_len`` chunks are
    yielded. Empty documents are skipped. Raises :class:`LapelensError` if the texts do not fill
    a single chunk.
    """
    if seq_len < 1:
        raise LapelensError(f"seq_len must be a positive number of tokens, got {seq_len}.")
    max_chunks = None if max_tokens is None else max_tokens // seq_len
    if max_chunks is not None and max_chunks < 1:
        raise LapelensError(
            f"max_tokens={max_tokens} is less than one chunk of seq_len={seq_len}: ask for more tokens."
        )
    if skip_tokens < 0:
        raise LapelensError(f"skip_tokens must be >= 0, got {skip_tokens}.")
    skip = skip_tokens // seq_len
    sep = separator_id(tokenizer)
    buffer: list[int] = []
    n_chunks = n_tokens = 0
    for ids in tokenize(tokenizer, texts):
        if not ids:
            continue
        buffer.append(sep)
        buffer.extend(ids)
        n_tokens += len(ids) + 1
        start = 0
        while len(buffer) - start >= seq_len:
            if skip:
                skip -= 1
            else:
                yield torch.tensor(buffer[start : start + seq_len], dtype=torch.long)
                n_chunks += 1
            start += seq_len
            if n_chunks == max_chunks:
                return
        del buffer[:start]
    if n_chunks == 0 and skip_tokens:
        raise LapelensError(
            f"The texts hold no full chunk of seq_len={seq_len} after the first {skip_tokens} tokens: "
            "give more text or a smaller skip."
        )
    if n_chunks == 0:
        what = "no text (0 tokens)" if n_tokens == 0 else f"only {n_tokens} tokens"
        raise LapelensError(
            f"The texts give {what}, less than one chunk of seq_len={seq_len}: give more text or use a smaller seq_len."
        )


def pack_chunks(
    tokenizer: Any, texts: Iterable[str], seq_len: int, max_tokens: int | None = None
) -> Int64[Tensor, "chunk pos"]:
    """All chunks of :func:`iter_chunks` as one tensor (for evaluation sets that fit in memory)."""
    return torch.stack(list(iter_chunks(tokenizer, texts, seq_len, max_tokens)))


def padded_batch(ids: Sequence[Sequence[int]], rows: Sequence[int], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``ids[r]`` for r in ``rows`` (each starting with a separator token), their
    attention mask, and the weights of the tokens a sentence mean averages (the separator excluded)."""
    width = max(len(ids[r]) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(ids[r])] = torch.tensor(ids[r])
        mask[i, : len(ids[r])] = 1
    weights = mask.float()
    weights[:, 0] = 0  # the separator
    return tokens, mask, weights
