"""Search by token: which neurons' direct logit effect promotes a token most.

The offline page cannot hold every token's list at once, so the index is cut into shards by a
hash of the token's text; the page hashes what is typed (and the same with a leading space) and
loads only that shard. The live server answers the same question for any token from the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float, Int64
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.explorer.text import REPLACEMENT, encode_ints, fnv1a, id_width

#: Tokens per shard of the offline index (about; the hash spreads them).
SHARD_TOKENS = 2048


@dataclass
class SearchIndex:
    """Per token id: its text and its strongest promoters (flat ``layer * d_mlp + neuron``)."""

    texts: list[str]
    neurons: Int64[Tensor, "vocab m"]
    value: Float[Tensor, "vocab m"]

    @property
    def n_shards(self) -> int:
        return max(1, math.ceil(len(self.texts) / SHARD_TOKENS))

    @property
    def width(self) -> int:
        """Characters per neuron index in a shard (``encode_ints``)."""
        return id_width(int(self.neurons.max()) + 1 if self.neurons.numel() else 1)

    def shards(self) -> list[dict[str, list]]:
        """Shard s: ``{text: [[token id, neurons, [effects...]], ...]}`` for the texts hashing to s,
        ``neurons`` the flat indices as one ``encode_ints`` string, strongest first.

        Texts that are only part of a character (U+FFFD) cannot be typed and are left out.
        """
        out: list[dict[str, list]] = [{} for _ in range(self.n_shards)]
        neurons, values, width = self.neurons.tolist(), self.value.tolist(), self.width
        for i, text in enumerate(self.texts):
            if not text or REPLACEMENT in text:
                continue
            keep = [(n, round(v, 3)) for n, v in zip(neurons[i], values[i]) if n >= 0]
            out[fnv1a(text) % self.n_shards].setdefault(text, []).append(
                [i, encode_ints([n for n, _ in keep], width), [v for _, v in keep]]
            )
        return out


def token_ids(tokenizer: Any, texts: dict[str, list[int]], token: str) -> list[int]:
    """The ids whose text is exactly ``token``; else the id ``token`` encodes to, if it is one token."""
    if token in texts:
        return texts[token]
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return ids
    raise LapelensError(
        f"No single token is {token!r} (it encodes to {len(ids)} tokens {ids}): search for one of its pieces."
    )


def text_index(texts: list[str]) -> dict[str, list[int]]:
    """Token text -> the ids with that text."""
    out: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        out.setdefault(t, []).append(i)
    return out
