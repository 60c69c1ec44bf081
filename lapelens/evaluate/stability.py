"""Split-half stability of a neuron selection (beyond the paper).

The tokens that the statistics are computed from are packed into chunks exactly as
:func:`lapelens.collect` packs them; the even and the odd chunks of each language are two disjoint
halves. Each half gets its own statistics and its own selection, and the table reports, per
language, how many neurons each half selects and the Jaccard index of the two sets, beside the
Jaccard index two random sets of those sizes would have (``a b / N`` shared on average). Since
statistics are additive, the two halves also merge into the statistics of all the chunks, which
the caller can compare with a one-pass collection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lapelens.activations import collect_chunks
from lapelens.errors import LapelensError
from lapelens.methods import identify
from lapelens.stats import ActivationStats
from lapelens.tokens import pack_chunks
from lapelens.types import HookedModel


@dataclass
class StabilityResult:
    """Per-language agreement of the selections made on two disjoint halves of the chunks."""

    table: pd.DataFrame
    """Rows: languages; columns ``half_a``, ``half_b`` (neurons selected), ``shared``, ``jaccard``,
    ``jaccard_random`` (expected for random sets of the same sizes)."""
    halves: tuple[ActivationStats, ActivationStats]

    def merged(self) -> ActivationStats:
        """Statistics of all the chunks: the two halves summed."""
        return self.halves[0].merge(self.halves[1])


def selection_agreement(a: Any, b: Any, n_neurons: int) -> pd.DataFrame:
    """Jaccard index per language of two :class:`LanguageNeurons` of the same model."""
    rows = {}
    for lang in a.languages:
        ma, mb = a.mask[a.lang_index(lang)], b.mask[b.lang_index(lang)]
        na, nb, shared = int(ma.sum()), int(mb.sum()), int((ma & mb).sum())
        union = na + nb - shared
        expected = na * nb / n_neurons
        rows[lang] = {
            "half_a": na,
            "half_b": nb,
            "shared": shared,
            "jaccard": shared / union if union else float("nan"),
            "jaccard_random": expected / (na + nb - expected) if na + nb else float("nan"),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")


def split_half_stability(
    model: HookedModel,
    texts_by_language: Mapping[str, Iterable[str]],
    tokens_per_language: int,
    seq_len: int,
    method: str = "lape",
    progress: bool = True,
    **options: Any,
) -> StabilityResult:
    """Select neurons with ``method`` (``options`` as for :func:`lapelens.identify`) on the even and
    on the odd chunks of each language's first ``tokens_per_language`` tokens, and compare."""
    chunks = {
        lang: pack_chunks(model.tokenizer, texts, seq_len, tokens_per_language)
        for lang, texts in texts_by_language.items()
    }
    short = [lang for lang, c in chunks.items() if len(c) < 2]
    if short:
        raise LapelensError(
            f"Split-half stability needs at least two chunks per language; {short} have fewer: "
            "ask for more tokens or a smaller seq_len."
        )
    meta = {"seq_len": seq_len, "tokens_per_language": tokens_per_language}
    halves = tuple(
        collect_chunks(
            model, {lang: c[start::2] for lang, c in chunks.items()}, progress=progress, meta={**meta, "half": name}
        )
        for start, name in ((0, "even chunks"), (1, "odd chunks"))
    )
    sel = [identify(h, method, **options) for h in halves]
    n_neurons = int(halves[0].n_layers * halves[0].d_mlp)
    return StabilityResult(selection_agreement(sel[0], sel[1], n_neurons), halves)  # type: ignore[arg-type]
