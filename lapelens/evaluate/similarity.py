"""Sentence-embedding similarity (Tang et al. Fig. 6) and language dominance (Fig. 7, Eq. 6), measured
so that they carry signal.

The raw cosine of two sentence embeddings of a causal LM is mostly the mean vector all texts share
(held in a few outlier dimensions): any two texts score 0.8-0.99. :mod:`lapelens.evaluate.measures`
defines the ``raw``, ``centered`` and ``standardized`` (the default) measures, the per-text scores
(aligned cosine ``mean``, ``mismatched`` control over all pairs t != u, top-1 ``retrieval`` of the
translation) and the bootstrap; this module turns them into tables:

- :func:`similarity` -> :class:`SimilarityResult`: per layer, averaged over ordered language pairs
  k != c, ``mean``, ``mismatched``, ``gap`` (= mean - mismatched) and ``retrieval`` with bootstrap
  95% intervals over texts (``ses``), the same per pair (``pairs``), the diagnostics
  (:func:`diagnostics`) and the effect of leaving the first content token out of the mean
  (``first_token``).
- :func:`dominance` -> :class:`DominanceResult`: per target c, retrieval into c and the gap into c
  averaged over sources k != c, per layer and over layers, and the interval of "reference (en) minus
  the best other target". Once each language is centred on its own mean, Eq. 6's shift
  ``h_k - v_k + v_c`` is a no-op; under ``raw`` the result also keeps Eq. 6's numbers (the old Fig. 7).

The embeddings come from :func:`lapelens.evaluate.embeddings.sentence_embeddings`; that module also
declares the ``ses`` and ``dominance`` experiments of ``lapelens reproduce`` (it builds on this one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch

from lapelens.constants import DOMINANCE_META, DOMINANCE_STEM, SES_META, SES_STEM
from lapelens.errors import LapelensError
from lapelens.evaluate.measures import (
    DEFAULT_N_BOOT,
    SCORES,
    Measure,
    Vectors,
    bootstrap_means,
    check_measure,
    dominance_matrix,
    energy_shares,
    interval,
    mean_over_sources,
    off_diagonal,
    text_scores,
    top_dimensions,
    transform,
)
from lapelens.figures.similarity import dominance_figure, ses_figure
from lapelens.results import Result

if TYPE_CHECKING:  # embeddings.py builds on this module (its methods call these functions)
    from lapelens.evaluate.embeddings import SentenceEmbeddings

#: Columns of the per-layer tables, in order: the three per-text scores and the gap.
COLUMNS = ("mean", "mismatched", "gap", "retrieval")
#: Top dimensions of the shared mean reported per layer.
TOP_DIMS = 3
#: A first content token whose norm exceeds this multiple of the median token norm counts as a sink.
SINK_RATIO = 3.0


def check_pairs(languages: Sequence[str], n_texts: int) -> None:
    if len(languages) < 2:
        raise LapelensError(f"Similarity between languages needs at least 2 languages, got {list(languages)}.")
    if n_texts < 2:
        raise LapelensError(f"Need at least 2 aligned texts per language, got {n_texts}.")


def _check(emb: "SentenceEmbeddings", measure: str, vectors: str, n_boot: int) -> None:
    check_pairs(emb.languages, emb.n_texts)
    check_measure(measure, vectors)
    if measure != "raw" and vectors == "heldout" and emb.n_texts < 4:
        raise LapelensError(
            f"measure={measure!r} with held-out vectors fits each language's mean on half of the texts "
            f"and needs at least 4 aligned texts, got {emb.n_texts}: give more texts or vectors='all'."
        )
    if n_boot < 1:
        raise LapelensError(f"n_boot must be at least 1, got {n_boot}.")


def text_scores_per_layer(emb: "SentenceEmbeddings", measure: Measure, vectors: Vectors) -> np.ndarray:
    """``[score, source, target, layer, text]``: the per-text scores (``mean``, ``mismatched``,
    ``retrieval``, ``gap``: :data:`COLUMNS` order) of every layer under ``measure``."""
    s = np.stack(
        [text_scores(transform(emb.embeddings[:, :, i], measure, vectors)).numpy() for i in range(emb.n_layers)], axis=3
    )
    by_name = dict(zip(SCORES, s))
    by_name["gap"] = by_name["mean"] - by_name["mismatched"]
    return np.stack([by_name[c] for c in COLUMNS])


def _with_intervals(point: np.ndarray, draws: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """``point[col, row]`` and ``draws[col, row, boot]`` as a table: COLUMNS, then their _low/_high."""
    low, high = interval(draws)
    cols = {c: point[j] for j, c in enumerate(COLUMNS)}
    for j, c in enumerate(COLUMNS):
        cols[f"{c}_low"], cols[f"{c}_high"] = low[j], high[j]
    return pd.DataFrame(cols, index=index)


def similarity(
    emb: "SentenceEmbeddings",
    neurons: Any = None,
    measure: Measure = "standardized",
    vectors: Vectors = "heldout",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> "SimilarityResult":
    """:meth:`SentenceEmbeddings.similarity` (see there)."""
    _check(emb, measure, vectors, n_boot)
    langs, n_layers = emb.languages, emb.n_layers
    if neurons is not None and neurons.n_layers != n_layers:
        raise LapelensError(
            f"The neuron set is for a model with {neurons.n_layers} layers, the embeddings have "
            f"{n_layers}: use neurons identified on this model."
        )
    off = off_diagonal(len(langs)).numpy()
    per_pair = text_scores_per_layer(emb, measure, vectors)[:, off]  # col pair layer text
    draws = bootstrap_means(per_pair, n_boot, seed)  # col pair layer boot
    layers = pd.RangeIndex(n_layers, name="layer")
    ses = _with_intervals(per_pair.mean((1, 3)), draws.mean(1), layers)
    ses.columns.name = "measure"
    pair_names = [(langs[k], langs[c]) for k, c in zip(*np.nonzero(off))]
    pairs_index = pd.MultiIndex.from_tuples(
        [(i, k, c) for i in range(n_layers) for k, c in pair_names], names=["layer", "source", "target"]
    )
    pairs = _with_intervals(
        per_pair.mean(3).transpose(0, 2, 1).reshape(len(COLUMNS), -1),
        draws.transpose(0, 2, 1, 3).reshape(len(COLUMNS), -1, n_boot),
        pairs_index,
    )
    pairs.columns.name = "measure"
    extra: dict = {}
    per_layer = None
    if neurons is not None:
        per_layer = neurons.per_layer()
        extra = {"neurons_method": neurons.method, "neurons_model": neurons.meta.get("model")}
    first = None
    if emb.first_token is not None:
        cols = {}
        for in_mean, tag in ((True, "first_in"), (False, "first_out")):
            s = text_scores_per_layer(emb.with_first_token(in_mean), measure, vectors)[:, off].mean((1, 3))
            cols.update({f"{c}_{tag}": s[j] for j, c in enumerate(COLUMNS)})
        first = pd.DataFrame(cols, index=layers.copy())
    diag = diagnostics(emb)
    meta = emb._meta(
        measure=measure,
        vectors=vectors,
        n_boot=n_boot,
        seed=seed,
        chance=1 / emb.n_texts,
        first_token_in_mean=emb.first_token_in_mean,
        **extra,
    )
    return SimilarityResult(ses, meta, per_layer, pairs, diag["energy"], diag["top_dimensions"], diag["norms"], first)


def diagnostics(emb: "SentenceEmbeddings") -> dict[str, pd.DataFrame]:
    """Why the raw cosine misleads, per layer (embeddings as they are, fit on all texts).

    The tables:

    - ``energy``: shares of the mean squared norm in the shared mean, the language means and the
      rest (:func:`~lapelens.evaluate.measures.energy_shares`);
    - ``top_dimensions``: the :data:`TOP_DIMS` dimensions holding most of the shared mean, its value
      there and their share of its squared norm, and ``top_share`` (their sum);
    - ``norms`` (per language and layer; needs the pass's norms): the separator's norm, the median
      and largest norm of the first content token, the median content-token norm, the share of texts
      whose first content token is over :data:`SINK_RATIO` times that median, and the dimension
      where the first content tokens are largest (mean square over texts).
    """
    layers = pd.RangeIndex(emb.n_layers, name="layer")
    energy = pd.DataFrame([energy_shares(emb.embeddings[:, :, i]) for i in range(emb.n_layers)], index=layers)
    rows = []
    for i in range(emb.n_layers):
        top = top_dimensions(emb.embeddings[:, :, i], TOP_DIMS)
        row: dict[str, Any] = {}
        for r, (dim, value, share) in enumerate(top, 1):
            row.update({f"dim_{r}": dim, f"value_{r}": value, f"share_{r}": share})
        row["top_share"] = sum(t[2] for t in top)
        rows.append(row)
    norms = None
    if emb.first_token is not None and emb.token_norm_median is not None:
        first = emb.first_token.double().norm(dim=-1)  # lang text layer
        median = emb.token_norm_median.double()
        sinks = (first > SINK_RATIO * median[:, None, :]).double().mean(1)
        top_dim = emb.first_token.double().pow(2).mean(1).argmax(-1)  # lang layer
        sep = emb.separator_norm.double() if emb.separator_norm is not None else torch.full_like(median, float("nan"))
        index = pd.MultiIndex.from_product([emb.languages, range(emb.n_layers)], names=["language", "layer"])
        norms = pd.DataFrame(
            {
                "separator": sep.flatten().numpy(),
                "first_token_median": first.median(1).values.flatten().numpy(),
                "first_token_max": first.amax(1).flatten().numpy(),
                "token_median": median.flatten().numpy(),
                "first_token_sinks": sinks.flatten().numpy(),
                "first_token_top_dim": top_dim.flatten().numpy(),
            },
            index=index,
        )
    return {"energy": energy, "top_dimensions": pd.DataFrame(rows, index=layers.copy()), "norms": norms}


def dominance(
    emb: "SentenceEmbeddings",
    measure: Measure = "standardized",
    vectors: Vectors = "heldout",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    reference: str = "en",
) -> "DominanceResult":
    """:meth:`SentenceEmbeddings.dominance` (see there)."""
    _check(emb, measure, vectors, n_boot)
    langs, n_layers = emb.languages, emb.n_layers
    scores = torch.from_numpy(text_scores_per_layer(emb, measure, vectors))  # col source target layer text
    into = mean_over_sources(scores.movedim(0, 2)).movedim(1, 0).numpy()  # col target layer text
    draws = bootstrap_means(into, n_boot, seed)  # col target layer boot
    point = into.mean(-1)  # col target layer
    layers, targets = pd.RangeIndex(n_layers, name="layer"), pd.Index(langs, name="target")
    table = {c: pd.DataFrame(point[j].T, index=layers.copy(), columns=targets.copy()) for j, c in enumerate(COLUMNS)}
    over = point.mean(-1)  # col target (mean over layers)
    over_draws = draws.mean(-2)  # col target boot
    rid = COLUMNS.index("retrieval")
    on_top = [
        int(sum(point[rid, c, i] > np.delete(point[rid, :, i], c).max() for i in range(n_layers)))
        for c in range(len(langs))
    ]
    summary = _with_intervals(over, over_draws, targets.copy()).drop(
        columns=["mean_low", "mean_high", "mismatched_low", "mismatched_high"]
    )
    summary["layers_on_top"] = on_top
    contrast = contrast_layers = None
    if reference in langs:
        r = langs.index(reference)
        others = [c for c in range(len(langs)) if c != r]
        rows, per_layer = {}, {}
        for c in ("retrieval", "gap"):
            j = COLUMNS.index(c)
            diff = over_draws[j, r] - over_draws[j, others].max(0)
            best = others[int(np.argmax(over[j, others]))]
            low, high = interval(diff)
            rows[c] = {
                "reference": reference,
                "best_other": langs[best],
                "value": over[j, r] - over[j, best],
                "low": float(low),
                "high": float(high),
                "layers_on_top": on_top[r]
                if c == "retrieval"
                else int(sum(point[j, r, i] > point[j, others, i].max() for i in range(n_layers))),
                "n_layers": n_layers,
            }
            layer_diff = draws[j, r] - draws[j, others].max(0)  # layer boot
            lo, hi = interval(layer_diff)
            best_layer = [langs[others[b]] for b in np.argmax(point[j, others], axis=0)]
            per_layer.update(
                {
                    c: point[j, r] - point[j, others].max(0),
                    f"{c}_low": lo,
                    f"{c}_high": hi,
                    f"{c}_best_other": best_layer,
                }
            )
        contrast = pd.DataFrame.from_dict(rows, orient="index")
        contrast.index.name = "statistic"
        contrast_layers = pd.DataFrame(per_layer, index=layers.copy())
    eq6: dict[str, pd.DataFrame | None] = {"shifted": None, "unshifted": None, "shifted_mismatched": None}
    if measure == "raw":
        for name, m in (("shifted", False), ("shifted_mismatched", True)):
            eq6[name] = pd.DataFrame(
                mean_over_sources(dominance_matrix(emb.embeddings, vectors, mismatched=m)).T.numpy(),
                index=layers.copy(),
                columns=targets.copy(),
            )
        eq6["unshifted"] = table["mean"].copy()
    meta = emb._meta(
        measure=measure,
        vectors=vectors,
        n_boot=n_boot,
        seed=seed,
        chance=1 / emb.n_texts,
        reference=reference,
        first_token_in_mean=emb.first_token_in_mean,
    )
    return DominanceResult(
        table["retrieval"], table["mean"], table["mismatched"], summary, contrast, contrast_layers, meta, **eq6
    )


# ---- results -----------------------------------------------------------------------------------
def _schema_version(folder: Path, marker: str) -> int:
    """The schema version the result in ``folder`` was saved with (1: before markers had one)."""
    return json.loads((folder / marker).read_text(encoding="utf-8")).get("schema_version") or 1


def _read_tables(folder: Path, stem: str, suffixes: dict[str, int]) -> dict[str, pd.DataFrame | None]:
    """``{suffix: table}`` of the ``{stem}{suffix}.csv`` files present; ``suffixes``: suffix -> index columns."""
    tables: dict[str, pd.DataFrame | None] = {}
    for suffix, n_index in suffixes.items():
        file = folder / f"{stem}{suffix}.csv"
        tables[suffix] = pd.read_csv(file, index_col=list(range(n_index))) if file.is_file() else None
    return tables


def _named(table: pd.DataFrame | None, columns: str | None, index: str = "layer") -> pd.DataFrame | None:
    if table is None:
        return None
    if index == "layer":
        table.index = pd.RangeIndex(len(table), name="layer")
    else:
        table.index = pd.Index([str(i) for i in table.index], name=index)
    table.columns = pd.Index([str(c) for c in table.columns], name=columns)
    return table


#: The optional tables of each result, by file suffix, and their index columns.
_SES_TABLES = {"": 1, "_pairs": 3, "_neurons": 1, "_energy": 1, "_top_dims": 1, "_norms": 2, "_first_token": 1}
_DOMINANCE_TABLES = dict.fromkeys(
    (
        "",
        "_aligned",
        "_mismatched",
        "_summary",
        "_contrast",
        "_contrast_layers",
        "_eq6",
        "_eq6_unshifted",
        "_eq6_mismatched",
        "_unshifted",
    ),
    1,
)


@dataclass
class SimilarityResult(Result):
    """Fig. 6. ``ses``: per layer (rows), ``mean``/``mismatched``/``gap``/``retrieval`` averaged over
    ordered language pairs, and their ``_low``/``_high`` 95% bootstrap bounds.

    ``pairs`` holds the same per (layer, source, target); ``energy``, ``top_dimensions`` and
    ``norms`` the diagnostics (:func:`diagnostics`); ``first_token`` the four point estimates with
    the first content token in (``_first_in``) and out of (``_first_out``) the mean. ``meta`` records
    the measure, vectors, bootstrap and ``chance`` (1 / texts, retrieval's chance level).
    """

    ses: pd.DataFrame
    meta: dict = field(default_factory=dict)
    #: Optional neurons per layer (rows) and language (columns) from a LanguageNeurons.
    neurons_per_layer: pd.DataFrame | None = None
    pairs: pd.DataFrame | None = None
    energy: pd.DataFrame | None = None
    top_dimensions: pd.DataFrame | None = None
    norms: pd.DataFrame | None = None
    first_token: pd.DataFrame | None = None

    kind: ClassVar[str] = "similarity"
    marker: ClassVar[str] = SES_META
    make: ClassVar[str] = "`lapelens ses`"
    #: Schema 2: measures with intervals, the all-pairs control, retrieval (schema 1: the raw cosine).
    schema: ClassVar[int] = 2
    required: ClassVar[tuple[str, ...]] = (f"{SES_STEM}.csv",)
    files: ClassVar[tuple[str, ...]] = tuple(f"{SES_STEM}{suffix}.csv" for suffix in _SES_TABLES)

    def peak(self) -> pd.Series:
        """The layer with the largest ``gap`` and that row of ``ses``."""
        gap = self.ses["gap"] if "gap" in self.ses else self.ses["mean"] - self.ses["mismatched"]
        return self.ses.loc[gap.idxmax()].rename(int(gap.idxmax()))

    def _tables(self) -> dict:
        """``ses.csv`` and the optional ``ses_pairs.csv``, ``ses_neurons.csv``, ``ses_energy.csv``,
        ``ses_top_dims.csv``, ``ses_norms.csv``, ``ses_first_token.csv`` beside ``ses.json``."""
        tables = {
            "": self.ses,
            "_pairs": self.pairs,
            "_neurons": self.neurons_per_layer,
            "_energy": self.energy,
            "_top_dims": self.top_dimensions,
            "_norms": self.norms,
            "_first_token": self.first_token,
        }
        return {f"{SES_STEM}{suffix}.csv": (table, {}) for suffix, table in tables.items()}

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "SimilarityResult":
        t = _read_tables(folder, SES_STEM, _SES_TABLES)
        ses = _named(t[""], "measure")
        if _schema_version(folder, cls.marker) < 2 and "gap" not in ses:
            # pair columns, "mean" and a one-partner "mismatched" of the raw cosine
            ses = ses[["mean", "mismatched"]].assign(gap=lambda s: s["mean"] - s["mismatched"])
            meta = {**meta, "measure": "raw", "mismatched_control": "one partner per text (schema 1)"}
        for name in ("_pairs", "_norms"):
            if t[name] is not None:
                t[name].columns.name = "measure" if name == "_pairs" else None
        return cls(
            ses,
            meta,
            _named(t["_neurons"], "language"),
            t["_pairs"],
            _named(t["_energy"], "share"),
            _named(t["_top_dims"], "top"),
            t["_norms"],
            _named(t["_first_token"], "measure"),
        )

    def figure(self) -> Any:
        """Fig. 6: aligned - mismatched with its interval, retrieval with chance, neurons per layer;
        each panel with its own legend."""
        return ses_figure(self)


@dataclass
class DominanceResult(Result):
    """Fig. 7: per layer (rows) and target language (columns), averaged over sources k != c:
    ``retrieval`` into c, the aligned cosine into c (``aligned``) and the ``mismatched`` control.

    ``summary`` (per target, averaged over layers): retrieval and gap with 95% intervals and
    ``layers_on_top`` (layers where the target has the strictly highest value); ``contrast``: the
    reference (en) minus the best other target, for retrieval and gap, with its interval;
    ``contrast_layers``: the same per layer. Under the raw measure ``shifted``, ``unshifted`` and
    ``shifted_mismatched`` are Eq. 6's mean cosines (the old Fig. 7); otherwise None.
    """

    retrieval: pd.DataFrame | None
    aligned: pd.DataFrame | None
    mismatched: pd.DataFrame | None
    summary: pd.DataFrame | None
    contrast: pd.DataFrame | None
    contrast_layers: pd.DataFrame | None
    meta: dict = field(default_factory=dict)
    shifted: pd.DataFrame | None = None
    unshifted: pd.DataFrame | None = None
    shifted_mismatched: pd.DataFrame | None = None

    kind: ClassVar[str] = "dominance"
    marker: ClassVar[str] = DOMINANCE_META
    make: ClassVar[str] = "`lapelens ses`"
    #: Schema 2: retrieval into each target with intervals (schema 1: Eq. 6's raw cosine only).
    schema: ClassVar[int] = 2
    required: ClassVar[tuple[str, ...]] = (f"{DOMINANCE_STEM}.csv",)
    files: ClassVar[tuple[str, ...]] = tuple(f"{DOMINANCE_STEM}{suffix}.csv" for suffix in _DOMINANCE_TABLES)

    @property
    def gap(self) -> pd.DataFrame | None:
        return None if self.aligned is None else self.aligned - self.mismatched

    def _tables(self) -> dict:
        """``dominance.csv`` (retrieval) and ``dominance_{aligned,mismatched,summary,contrast,contrast_layers}.csv``,
        and under raw ``dominance_eq6{,_unshifted,_mismatched}.csv``, beside ``dominance.json``."""
        tables = {
            "": self.retrieval,
            "_aligned": self.aligned,
            "_mismatched": self.mismatched,
            "_summary": self.summary,
            "_contrast": self.contrast,
            "_contrast_layers": self.contrast_layers,
            "_eq6": self.shifted,
            "_eq6_unshifted": self.unshifted,
            "_eq6_mismatched": self.shifted_mismatched,
        }
        return {f"{DOMINANCE_STEM}{suffix}.csv": (table, {}) for suffix, table in tables.items()}

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "DominanceResult":
        t = _read_tables(folder, DOMINANCE_STEM, _DOMINANCE_TABLES)
        if _schema_version(folder, cls.marker) < 2 and t["_summary"] is None:
            # Eq. 6 only: dominance.csv shifted, _unshifted, _mismatched its control
            if t["_unshifted"] is None:
                raise LapelensError(f"{folder} lacks {DOMINANCE_STEM}_unshifted.csv; run `lapelens ses` again.")
            return cls(
                None,
                None,
                None,
                None,
                None,
                None,
                {**meta, "measure": "raw"},
                _named(t[""], "target"),
                _named(t["_unshifted"], "target"),
                _named(t["_mismatched"], "target"),
            )
        summary, contrast = t["_summary"], t["_contrast"]
        return cls(
            _named(t[""], "target"),
            _named(t["_aligned"], "target"),
            _named(t["_mismatched"], "target"),
            None if summary is None else _named(summary, None, "target"),
            None if contrast is None else _named(contrast, None, "statistic"),
            _named(t["_contrast_layers"], None),
            meta,
            _named(t["_eq6"], "target"),
            _named(t["_eq6_unshifted"], "target"),
            _named(t["_eq6_mismatched"], "target"),
        )

    def figure(self) -> Any:
        """Fig. 7: retrieval into each target (chance dotted) beside the aligned cosine into it and
        its mismatched control (under raw: Eq. 6's shifted cosine, unshifted and control)."""
        return dominance_figure(self)
