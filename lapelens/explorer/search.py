"""Search by token: which neurons' direct logit effect promotes a token most.

The offline page indexes the tokens of its own text (every token of the train text its contexts
come from and of the held-out text of its loss change), each with its strongest promoters among
all neurons of the model. The index is cut into shards by a hash of the token's text; the page
hashes what is typed (and the same with a leading space) and loads only that shard. The live
server answers the same question for any token of the vocabulary from the weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int64
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.explorer.effects import TokenPromoters
from lapelens.explorer.text import FIXED_WIDTH, REPLACEMENT, encode_fixed, encode_ints, fnv1a, id_width

#: Tokens per shard of the offline index (about; the hash spreads them).
SHARD_TOKENS = 2048


def typeable_tokens(texts: list[str], chunks: Iterable[Tensor]) -> Int64[Tensor, " indexed"]:
    """The distinct ids in ``chunks`` that one can type: a non-empty text that is not part of a character."""
    ids = torch.cat([c.flatten() for c in chunks] or [torch.empty(0, dtype=torch.long)]).unique()
    keep = [i for i in ids.tolist() if 0 <= i < len(texts) and texts[i] and REPLACEMENT not in texts[i]]
    return torch.tensor(keep, dtype=torch.long)


@dataclass
class SearchIndex:
    """Every id's text, and the indexed tokens with their strongest promoters (flat ``layer * d_mlp + neuron``)."""

    texts: list[str]
    promoters: TokenPromoters

    @property
    def n_shards(self) -> int:
        return max(1, math.ceil(len(self.promoters.tokens) / SHARD_TOKENS))

    @property
    def width(self) -> int:
        """Characters per neuron index in a shard (``encode_ints``)."""
        n = self.promoters.neurons
        return id_width(int(n.max()) + 1 if n.numel() else 1)

    def step(self) -> float:
        """The fixed-point step of every effect in the shards (``encode_fixed`` over all of them)."""
        return encode_fixed([self._largest()])["s"]

    def _largest(self) -> float:
        v = self.promoters.value
        finite = v[torch.isfinite(v)]
        return float(finite.abs().max()) if finite.numel() else 0.0

    def shards(self) -> list[dict[str, list]]:
        """Shard s: ``{text: [[token id, neurons, effects], ...]}`` for the indexed texts hashing to s:
        ``neurons`` the flat indices as one ``encode_ints`` string, ``effects`` their values as
        fixed-point codes (``FIXED_WIDTH`` characters each, see :meth:`step`), strongest first."""
        out: list[dict[str, list]] = [{} for _ in range(self.n_shards)]
        p, width = self.promoters, self.width
        m = p.neurons.shape[1]
        codes = encode_fixed(p.value.flatten().tolist() + [self._largest()])["d"]  # the largest fixes the step
        for row, (i, neurons) in enumerate(zip(p.tokens.tolist(), p.neurons.tolist())):
            text = self.texts[i]
            kept = [n for n in neurons if n >= 0]
            effects = codes[row * m * FIXED_WIDTH : (row * m + len(kept)) * FIXED_WIDTH]
            out[fnv1a(text) % self.n_shards].setdefault(text, []).append([i, encode_ints(kept, width), effects])
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
