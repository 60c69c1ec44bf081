"""One data class per panel of the neuron page (as sae_vis does), each writing its own JSON.

A panel holds its numbers for every neuron it covers and gives the page one layer's part
(``layer_json``): the page loads a layer's data only when a neuron of that layer is opened.
Token ids a panel shows go into the page's vocabulary (``Vocab``), so each text is written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Float64, Int64
from torch import Tensor

from lapelens.explorer.contexts import NeuronSamples
from lapelens.explorer.effects import NeuronLogits
from lapelens.explorer.loss import LossChanges
from lapelens.explorer.text import FIXED_WIDTH, encode_fixed, encode_ints, id_width


def rounded(t: Tensor, digits: int) -> Any:
    """Nested lists of floats rounded to ``digits`` decimals; ``nan``/``inf`` -> None (valid JSON)."""
    values = t.double().tolist()

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if not math.isfinite(x) else round(x, digits)

    return fix(values)


#: Context activations are shaded, not read: one character per token, 0..35 levels of the neuron's
#: largest kept value ("0"-"9", "a"-"z") and -1..-26 below zero ("A"-"Z"); "." outside the chunk.
LEVELS = 35
_POSITIVE = "0123456789abcdefghijklmnopqrstuvwxyz"
_NEGATIVE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


#: A quantile group's share of tokens is written as round(share * SHARE_SCALE).
SHARE_SCALE = 100_000


def encode_levels(acts: Float[Tensor, " window"], scale: float) -> str:
    """A window of activations as one level character per token (see ``LEVELS``)."""
    out = []
    for a in acts.tolist():
        if not math.isfinite(a):
            out.append(".")
            continue
        v = max(-len(_NEGATIVE), min(LEVELS, round(a / scale * LEVELS)))
        out.append(_NEGATIVE[-v - 1] if v < 0 else _POSITIVE[v])
    return "".join(out)


class Vocab:
    """Token id -> text for the ids the page shows (``texts`` holds every id's text)."""

    def __init__(self, texts: dict[int, str]):
        self.texts, self.used = texts, set()

    def add(self, ids: Any) -> None:
        self.used.update(int(i) for i in (ids.flatten().tolist() if isinstance(ids, Tensor) else ids) if int(i) >= 0)

    def json(self) -> dict[str, str]:
        return {str(i): self.texts[i] for i in sorted(self.used)}


def _rows(neurons: Int64[Tensor, "m 2"], layer: int) -> list[tuple[int, int]]:
    """``(row, neuron)`` for the rows of ``neurons`` in ``layer``."""
    return [(r, int(neurons[r, 1])) for r in (neurons[:, 0] == layer).nonzero().flatten().tolist()]


@dataclass
class SelectionPanel:
    """LAPE's entropy and rank of every neuron, and which method selected it for which language."""

    entropy: Float64[Tensor, "layer neuron"]
    #: Place in LAPE's ranking (0 = lowest entropy); -1 where no language passes the filter.
    rank: Int64[Tensor, "layer neuron"]
    threshold: float
    filter_rate: float
    selections: dict[str, Bool[Tensor, "lang layer neuron"]]
    primary: str

    def page_json(self, languages: tuple[str, ...]) -> dict:
        return {
            "threshold": self.threshold,
            "filter_rate": self.filter_rate,
            "primary": self.primary,
            "lape_total": int(self.selections[self.primary].any(dim=0).sum()) if self.primary in self.selections else 0,
            "selections": {
                m: {l: mask[k].flatten().nonzero().flatten().tolist() for k, l in enumerate(languages)}
                for m, mask in self.selections.items()
            },
        }

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        # rank + 1 so that "none" (-1) is 0
        width = id_width(self.rank.numel() + 1)
        return {
            "entropy": encode_fixed(self.entropy[layer].tolist()),
            "rank_width": width,
            "rank": encode_ints((self.rank[layer] + 1).tolist(), width),
        }


@dataclass
class FiringPanel:
    """Firing probability ``count / n`` per language, from the statistics."""

    count: Int64[Tensor, "lang layer neuron"]
    n: Int64[Tensor, " lang"]

    def probability(self) -> Float64[Tensor, "lang layer neuron"]:
        return self.count.double() / self.n.double().view(-1, 1, 1)

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        counts = self.count[:, layer].T.flatten().tolist()  # neuron j's languages at j*K...
        width = id_width(max(counts) + 1)
        return {"width": width, "count": encode_ints(counts, width)}


@dataclass
class MeanPanel:
    """Mean activation ``act_fn(hook_pre)`` per language (LAVE's score), from the statistics."""

    mean: Float64[Tensor, "lang layer neuron"]

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        return {"mean": encode_fixed(self.mean[:, layer].T.flatten().tolist())}


@dataclass
class HistogramPanel:
    """Histograms of each tracked neuron's activation per language (bins shared by its languages)."""

    neurons: Int64[Tensor, "detail 2"]
    edges: Float[Tensor, "detail edge"]
    hist: Int64[Tensor, "detail lang bin"]

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        return {
            str(j): {"range": rounded(self.edges[r, [0, -1]], 5), "counts": self.hist[r].tolist()}
            for r, j in _rows(self.neurons, layer)
        }


@dataclass
class ContextPanel:
    """Per tracked neuron and language: the top contexts, then samples from lower quantiles.

    ``samples.chunk`` indexes ``chunks[lang]`` (only the chunks some context shows); their tokens,
    and the byte pieces merged into characters there (``runs[lang][chunk]``: ``(start, length,
    text)``), are written once in the page, not once per context.
    """

    samples: NeuronSamples
    chunks: dict[str, Int64[Tensor, "chunk pos"]]
    runs: dict[str, dict[int, list[tuple[int, int, str]]]]
    id_width: int
    #: Token id -> the text the page shows for it.
    texts: dict[int, str]

    def scale(self) -> Float[Tensor, " detail"]:
        """Per neuron, the largest activation kept (> 0): the shading's full colour."""
        s = torch.nan_to_num(self.samples.value, nan=0.0, neginf=0.0).clamp_min(0).amax(dim=(1, 2))
        return torch.where(s > 0, s, torch.ones_like(s))

    def page_json(self, vocab: Vocab) -> dict:
        """The chunks (their texts go to ``vocab``) and what every context needs to be drawn."""
        s = self.samples
        for c in self.chunks.values():
            vocab.add(c)
        return {
            "top": s.top,
            "samples": s.samples,
            "groups": [list(g) for g in s.groups],
            "before": s.before,
            "after": s.acts.shape[-1] - s.before - 1,
            "levels": LEVELS,
            "window": s.acts.shape[-1],
            "chunk_width": self.widths()[0],
            "pos_width": self.widths()[1],
            "share_scale": SHARE_SCALE,
            "chunks": {l: [encode_ints(row, self.id_width) for row in c.tolist()] for l, c in self.chunks.items()},
            "runs": {l: {str(c): [list(x) for x in r] for c, r in runs.items()} for l, runs in self.runs.items()},
        }

    def widths(self) -> tuple[int, int]:
        """Characters per chunk index and per position in a context record."""
        n_chunks = max((len(c) for c in self.chunks.values()), default=1)
        seq = max((c.shape[1] for c in self.chunks.values() if c.ndim == 2), default=1)
        return id_width(n_chunks + 1), id_width(seq + 1)

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        """Per neuron: ``scale``, the fixed-point ``step`` of its values, and per language ``c``, its
        contexts as fixed-width records (group + 1, chunk, position, value code, one shading level
        per window token), and ``g``, per quantile group its bounds' codes and its share (x 1e5)."""
        s, out, scales = self.samples, {}, self.scale()
        cw, pw = self.widths()
        for r, j in _rows(s.neurons, layer):
            kept = [[c for c in range(s.value.shape[2]) if int(s.chunk[r, k, c]) >= 0] for k in range(s.value.shape[1])]
            numbers = [float(s.value[r, k, c]) for k, cs in enumerate(kept) for c in cs]
            numbers += s.bounds[r].flatten().tolist()
            codes = encode_fixed(numbers)
            code = [codes["d"][i * FIXED_WIDTH : (i + 1) * FIXED_WIDTH] for i in range(len(numbers))]
            at, bound_at, langs = 0, len(numbers) - s.bounds[r].numel(), []
            for k, cs in enumerate(kept):
                records = []
                for c in cs:
                    group = 0 if c < s.top else 1 + (c - s.top) // s.samples
                    records.append(
                        encode_ints([group], 1)
                        + encode_ints([int(s.chunk[r, k, c])], cw)
                        + encode_ints([int(s.pos[r, k, c])], pw)
                        + code[at]
                        + encode_levels(s.acts[r, k, c], float(scales[r]))
                    )
                    at += 1
                groups = ""
                for g in range(len(s.groups)):
                    lo_hi = bound_at + (k * len(s.groups) + g) * 2
                    share = encode_ints([round(float(s.share[r, k, g]) * SHARE_SCALE)], FIXED_WIDTH)
                    groups += code[lo_hi] + code[lo_hi + 1] + share
                langs.append({"c": "".join(records), "g": groups})
            out[str(j)] = {"scale": round(float(scales[r]), 5), "step": codes["s"], "languages": langs}
        return out


@dataclass
class LogitPanel:
    """Direct logit effects of the listed neurons: promoted and suppressed tokens, effect histogram."""

    effects: NeuronLogits
    id_width: int

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        """This layer's listed neurons (``neurons``) and their tables, row by row in that order."""
        e = self.effects
        rows = (e.neurons[:, 0] == layer).nonzero().flatten()
        vocab.add(e.promoted[rows])
        vocab.add(e.suppressed[rows])
        counts = e.hist[rows]
        width = id_width(int(counts.max()) + 1 if counts.numel() else 1)
        return {
            "top": e.promoted.shape[-1],
            "neurons": e.neurons[rows, 1].tolist(),
            "promoted": encode_ints(e.promoted[rows].flatten().tolist(), self.id_width),
            "promoted_value": encode_fixed(e.promoted_value[rows].flatten().tolist()),
            "suppressed": encode_ints(e.suppressed[rows].flatten().tolist(), self.id_width),
            "suppressed_value": encode_fixed(e.suppressed_value[rows].flatten().tolist()),
            "hist_range": encode_fixed(e.hist_range[rows].flatten().tolist()),
            "hist_width": width,
            "hist": encode_ints(counts.flatten().tolist(), width),
        }


@dataclass
class LossPanel:
    """Loss change per language when each chosen neuron alone is deactivated, with 95% intervals."""

    changes: LossChanges

    def axis(self) -> list[float]:
        """One range for every neuron of the page: all intervals, and 0."""
        c = self.changes
        if not len(c.neurons):
            return [0.0, 0.0]
        return [min(0.0, float(c.low.min())), max(0.0, float(c.high.max()))]

    def page_json(self) -> dict:
        c = self.changes
        return {
            "axis": self.axis(),
            "base": rounded(c.base, 5),
            "tokens": c.tokens.tolist(),
            "chunks": c.chunks.tolist(),
            "n_boot": c.n_boot,
            "count": len(c.neurons),
        }

    def rows(self, d_mlp: int) -> dict[int, Float64[Tensor, " lang"]]:
        """Flat neuron index -> its mean changes (for the page's list)."""
        c = self.changes
        return {int(l) * d_mlp + int(j): c.delta[r] for r, (l, j) in enumerate(c.neurons.tolist())}

    def layer_json(self, layer: int, vocab: Vocab) -> dict:
        c = self.changes
        return {
            str(j): {"delta": rounded(c.delta[r], 6), "low": rounded(c.low[r], 6), "high": rounded(c.high[r], 6)}
            for r, j in _rows(c.neurons, layer)
        }
