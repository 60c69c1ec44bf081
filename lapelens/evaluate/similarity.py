"""Sentence-embedding similarity (Tang et al. Fig. 6) and language dominance (Fig. 7, Eq. 6).

The *sentence embedding* of a text at layer i is the mean, over the text's tokens, of the residual
stream after block i (``blocks.{i}.hook_resid_post``; for the last block this is before the final
norm). Each text runs alone as ``[sep] + tokens`` (``sep``: BOS, else EOS) and the separator
position is left out of the mean: in a causal model its state is the same for every text, so it
carries no language, and its residual norm is often far larger than that of real tokens (an
attention sink), which would pull every cosine towards 1.

- **SES** of languages k and c at layer i: the mean over aligned texts t of
  ``cos(h_k[t, i], h_c[t, i])``.
- **Dominance** (Eq. 6): shift the embedding of a text of language k to language c,
  ``ĥ = h_k - v_k + v_c``, where ``v_x`` is the mean embedding of language x at that layer; the
  score of target c at layer i is the mean SES between ``ĥ`` and ``h_c`` of the same texts,
  averaged over the source languages k != c. With ``vectors="heldout"`` (the default) ``v`` is
  not fit on the texts it is scored on: the texts are cut into two halves by position, ``v`` is
  computed on one half and the shifted similarity measured on the other, then the halves swap
  (two-fold cross-fitting; every text is scored once). ``vectors="all"`` computes ``v`` on every
  text, as a plain reading of the paper does.

**Control.** Sentence embeddings of a causal LM are anisotropic: the mean embedding of a language
is most of the length of each embedding, so two *unrelated* texts already have a high cosine, and
after the shift both sides contain ``v_c``. Both results therefore also report the same numbers
with the target text *mismatched* (text t compared with another text of the set,
:func:`partner`); only the gap between aligned and mismatched measures alignment of content.

The arithmetic lives in small functions on tensors (:func:`pair_similarity`,
:func:`ses_matrix`, :func:`dominance_matrix`) so that it can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lapelens._version import __version__
from lapelens.constants import DOMINANCE_META, DOMINANCE_STEM, SES_META, SES_STEM
from lapelens.errors import LapelensError
from lapelens.evaluate._registry import Context, Setting, experiment, positive
from lapelens.figures.style import model_label
from lapelens.hooks import layer_hooks, run_until
from lapelens.results import Result
from lapelens.tokens import padded_batch, separator_id
from lapelens.types import HookedModel

#: How the language vectors ``v`` of Eq. 6 are fit (see the module docstring).
Vectors = Literal["heldout", "all"]
VECTORS: tuple[Vectors, ...] = ("heldout", "all")

DEFAULT_BATCH_SIZE = 8


# ---- arithmetic on embeddings ------------------------------------------------------------------
def pair_similarity(
    a: Float[Tensor, "text layer d_model"], b: Float[Tensor, "text layer d_model"]
) -> Float[Tensor, " layer"]:
    """Mean over texts of the cosine similarity of ``a[t, i]`` and ``b[t, i]`` (float64)."""
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    return cos.mean(0)


def partner(n_texts: int) -> Tensor:
    """The mismatched pairing of the control: text t is compared with text ``(t + n // 2) % n``.

    For n >= 2 no text meets itself, and in corpus order the partner lies half the set away
    (so rarely in the same document).
    """
    return (torch.arange(n_texts) + n_texts // 2) % n_texts


def ses_matrix(
    emb: Float[Tensor, "lang text layer d_model"], mismatched: bool = False
) -> Float[Tensor, "lang other layer"]:
    """SES of every ordered pair of languages per layer (the diagonal is 1).

    ``mismatched``: compare text t of language k with text ``partner(t)`` of language c (the
    control; the matrix is then not symmetric and its diagonal not 1).
    """
    n_lang = emb.shape[0]
    other = emb[:, partner(emb.shape[1])] if mismatched else emb
    out = torch.empty(n_lang, n_lang, emb.shape[2], dtype=torch.float64)
    for k in range(n_lang):
        for c in range(n_lang):
            out[k, c] = pair_similarity(emb[k], other[c])
    return out


def shifted_similarity(
    h_k: Float[Tensor, "text layer d_model"],
    h_c: Float[Tensor, "text layer d_model"],
    v_k: Float[Tensor, "layer d_model"],
    v_c: Float[Tensor, "layer d_model"],
) -> Float[Tensor, " layer"]:
    """Eq. 6 for one pair: mean SES between ``h_k - v_k + v_c`` and ``h_c``."""
    return pair_similarity(h_k.double() - v_k.double() + v_c.double(), h_c)


def _halves(n_texts: int) -> list[tuple[slice, slice]]:
    """(fit, score) folds: first half / second half by position, then swapped."""
    mid = (n_texts + 1) // 2
    first, second = slice(0, mid), slice(mid, n_texts)
    return [(first, second), (second, first)]


def dominance_matrix(
    emb: Float[Tensor, "lang text layer d_model"], vectors: Vectors = "heldout", mismatched: bool = False
) -> Float[Tensor, "source target layer"]:
    """Mean shifted SES (Eq. 6) from every source language to every target, per layer.

    ``[k, c, i]`` is the mean over texts of ``cos(h_k - v_k + v_c, h_c)`` at layer i; the
    diagonal is 1 by construction. ``vectors`` says where ``v`` is fit (module docstring).
    ``mismatched``: the control, with ``h_c`` of the partner text (:func:`partner`) taken within
    the texts being scored, so that it never enters ``v``; all NaN if a held-out half has a
    single text (fewer than 4 texts).
    """
    n_lang, n_texts = emb.shape[:2]
    if vectors not in VECTORS:
        raise LapelensError(f"vectors must be one of {list(VECTORS)}, got {vectors!r}.")
    if n_texts < 2:
        raise LapelensError(f"Dominance needs at least 2 aligned texts, got {n_texts}.")
    folds = _halves(n_texts) if vectors == "heldout" else [(slice(None), slice(None))]
    total = torch.zeros(n_lang, n_lang, emb.shape[2], dtype=torch.float64)
    for fit, score in folds:
        v = emb[:, fit].double().mean(1)  # lang layer d_model
        h = emb[:, score].double()
        m = h.shape[1]
        if mismatched and m < 2:
            return torch.full_like(total, float("nan"))
        target = h[:, partner(m)] if mismatched else h
        for k in range(n_lang):
            for c in range(n_lang):
                # Sum of cosines, so that the folds' halves (possibly unequal) weigh per text.
                total[k, c] += shifted_similarity(h[k], target[c], v[k], v[c]) * m
    return total / n_texts  # every text is scored exactly once over the folds


def mean_over_sources(matrix: Float[Tensor, "source target layer"]) -> Float[Tensor, "target layer"]:
    """For each target c, the mean of ``matrix[k, c]`` over the sources k != c."""
    n_lang = matrix.shape[0]
    if n_lang < 2:
        raise LapelensError("Averaging over other source languages needs at least 2 languages.")
    off = ~torch.eye(n_lang, dtype=torch.bool)
    return (matrix * off[:, :, None]).sum(0) / (n_lang - 1)


# ---- sentence embeddings from a model ----------------------------------------------------------
@dataclass
class SentenceEmbeddings:
    """``embeddings[k, t, i]``: the embedding of aligned text t in ``languages[k]`` at layer i."""

    languages: tuple[str, ...]
    embeddings: Float[Tensor, "lang text layer d_model"]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        if self.embeddings.ndim != 4 or self.embeddings.shape[0] != len(self.languages):
            raise LapelensError(
                f"SentenceEmbeddings.embeddings must have shape (lang={len(self.languages)}, text, layer, "
                f"d_model); got {tuple(self.embeddings.shape)}."
            )

    @property
    def n_texts(self) -> int:
        return self.embeddings.shape[1]

    def _meta(self, **extra: Any) -> dict:
        return {**self.meta, "languages": list(self.languages), "n_texts": self.n_texts,
                "lapelens_version": __version__, **extra}

    def similarity(self, neurons: Any | None = None) -> "SimilarityResult":
        """Fig. 6: SES per layer for every language pair, their ``mean``, and the control.

        Column ``mismatched`` is the mean over pairs of the SES of non-aligned texts
        (:func:`partner`): what the SES would be if translations were no closer than any two texts.

        ``neurons`` (a :class:`~lapelens.neurons.LanguageNeurons` of the same model) adds its
        neurons-per-layer table, which the figure draws beside the SES.
        """
        _check_pairs(self.languages, self.n_texts)
        m = ses_matrix(self.embeddings)
        n_lang = len(self.languages)
        cols = {f"{self.languages[k]}-{self.languages[c]}": m[k, c].numpy()
                for k in range(n_lang) for c in range(k + 1, n_lang)}
        table = pd.DataFrame(cols, index=pd.RangeIndex(m.shape[2], name="layer"))
        table["mean"] = table.mean(axis=1)
        control = ses_matrix(self.embeddings, mismatched=True)
        table["mismatched"] = control[~torch.eye(n_lang, dtype=torch.bool)].mean(0).numpy()  # over k != c
        table.columns.name = "pair"
        per_layer = None
        extra: dict = {}
        if neurons is not None:
            if neurons.n_layers != m.shape[2]:
                raise LapelensError(
                    f"The neuron set is for a model with {neurons.n_layers} layers, the embeddings have "
                    f"{m.shape[2]}: use neurons identified on this model."
                )
            per_layer = neurons.per_layer()
            extra = {"neurons_method": neurons.method, "neurons_model": neurons.meta.get("model")}
        return SimilarityResult(table, self._meta(**extra), per_layer)

    def dominance(self, vectors: Vectors = "heldout") -> "DominanceResult":
        """Fig. 7 / Eq. 6: per layer and target language, the mean shifted SES over sources k != c.

        ``unshifted`` holds the same average of the plain SES (no shift) for comparison, and
        ``mismatched`` the shifted SES to a non-aligned target text (the control).
        """
        _check_pairs(self.languages, self.n_texts)
        index = pd.RangeIndex(self.embeddings.shape[2], name="layer")
        columns = pd.Index(self.languages, name="target")
        shifted = mean_over_sources(dominance_matrix(self.embeddings, vectors)).T.numpy()
        plain = mean_over_sources(ses_matrix(self.embeddings)).T.numpy()
        control = mean_over_sources(dominance_matrix(self.embeddings, vectors, mismatched=True)).T.numpy()
        return DominanceResult(pd.DataFrame(shifted, index=index, columns=columns),
                               pd.DataFrame(plain, index=index, columns=columns.copy()),
                               self._meta(vectors=vectors),
                               pd.DataFrame(control, index=index, columns=columns.copy()))


def _check_pairs(languages: Sequence[str], n_texts: int) -> None:
    if len(languages) < 2:
        raise LapelensError(f"Similarity between languages needs at least 2 languages, got {list(languages)}.")
    if n_texts < 2:
        raise LapelensError(f"Need at least 2 aligned texts per language, got {n_texts}.")


def sentence_embeddings(
    model: HookedModel,
    parallel: pd.DataFrame,
    languages: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int | None = None,
    progress: bool = True,
) -> SentenceEmbeddings:
    """Per-layer sentence embeddings of every text of ``parallel`` (one column per language).

    Rows are aligned texts (as :func:`lapelens.corpus.load_parallel` returns them); ``languages``
    picks columns (default: all). Texts are truncated to ``max_tokens`` tokens (default and cap:
    the model's context minus the separator); ``meta["n_truncated"]`` counts them. Within each
    language, texts are sorted by length and right-padded in batches; padded positions are
    masked out of attention and out of the means. Only the per-text means are kept:
    ``[lang, text, layer, d_model]`` floats, never per-token states beyond one batch.
    """
    langs = list(parallel.columns) if languages is None else list(dict.fromkeys(languages))
    missing = [lang for lang in langs if lang not in parallel.columns]
    if missing:
        raise LapelensError(f"Language(s) {missing} are not in the parallel data; it has {list(parallel.columns)}.")
    _check_pairs(langs, len(parallel))
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise LapelensError("batch_size and max_tokens must be at least 1.")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise LapelensError("The model has no tokenizer: load it with lapelens.load_model.")
    cfg = model.cfg
    n_ctx = getattr(cfg, "n_ctx", None)
    keep = min(max_tokens or n_ctx - 1, n_ctx - 1) if n_ctx else max_tokens
    sep = separator_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(cfg.n_layers)]
    if any(h not in model.hook_dict for h in hooks):
        raise LapelensError(f"Model {cfg.model_name!r} has no blocks.{{i}}.hook_resid_post hooks.")
    device = next(model.parameters()).device
    out = torch.empty(len(langs), len(parallel), cfg.n_layers, cfg.d_model)
    current: dict[str, Any] = {}

    def take(layer: int, resid: Tensor) -> None:
        w = current["weights"]
        summed = torch.bmm(w.unsqueeze(1), resid.float()).squeeze(1)  # batch d_model
        out[current["k"], current["rows"], layer] = (summed / current["lengths"][:, None]).cpu()

    n_truncated = 0
    # The pass stops after the last block's residual: the final norm and unembedding are not needed.
    with torch.inference_mode(), model.hooks(fwd_hooks=layer_hooks(dict(enumerate(hooks)), take)):
        for k, lang in enumerate(langs):
            texts = parallel[lang].tolist()
            bad = [parallel.index[t] for t, s in enumerate(texts) if not isinstance(s, str) or not s.strip()]
            if bad:
                raise LapelensError(f"Language {lang!r} has empty or missing texts in rows {bad[:5]}: drop those rows.")
            ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            n_truncated += sum(keep is not None and len(x) > keep for x in ids)
            ids = [[sep] + x[:keep] for x in ids]
            order = sorted(range(len(ids)), key=lambda t: len(ids[t]))
            for b in tqdm(range(0, len(order), batch_size), desc=f"embed {lang}", disable=not progress):
                rows = order[b:b + batch_size]
                tokens, mask, weights = padded_batch(ids, rows, pad)
                current.update(k=k, rows=torch.tensor(rows), weights=weights.to(device),
                               lengths=weights.sum(1).to(device))
                kwargs = {"attention_mask": mask.to(device)} if bool((mask == 0).any()) else {}
                run_until(model, tokens.to(device), use_cache=False, **kwargs)
    meta = {"model": str(cfg.model_name), "max_tokens": keep, "n_truncated": int(n_truncated),
            "separator_in_mean": False, "hook": "blocks.{i}.hook_resid_post",
            "text_ids": [str(i) for i in parallel.index]}
    return SentenceEmbeddings(tuple(langs), out, meta)


# ---- results -----------------------------------------------------------------------------------
def _read_tables(folder: Path, stem: str, suffixes: Sequence[str]) -> dict[str, pd.DataFrame | None]:
    """``{suffix: table}`` of the ``{stem}{suffix}.csv`` files present in ``folder``."""
    tables: dict[str, pd.DataFrame | None] = {}
    for suffix in suffixes:
        file = folder / f"{stem}{suffix}.csv"
        tables[suffix] = pd.read_csv(file, index_col=0) if file.is_file() else None
    return tables


def _named(table: pd.DataFrame, columns: str) -> pd.DataFrame:
    table.index = pd.RangeIndex(len(table), name="layer")
    table.columns = pd.Index([str(c) for c in table.columns], name=columns)
    return table


@dataclass
class SimilarityResult(Result):
    """Fig. 6: ``ses`` has one row per layer and one column per language pair ("en-zh"), plus "mean"."""

    ses: pd.DataFrame
    meta: dict = field(default_factory=dict)
    #: Optional neurons per layer (rows) and language (columns) from a LanguageNeurons.
    neurons_per_layer: pd.DataFrame | None = None

    kind: ClassVar[str] = "similarity"
    marker: ClassVar[str] = SES_META
    make: ClassVar[str] = "`lapelens ses`"
    required: ClassVar[tuple[str, ...]] = (f"{SES_STEM}.csv",)
    files: ClassVar[tuple[str, ...]] = (f"{SES_STEM}.csv", f"{SES_STEM}_neurons.csv")

    def _tables(self) -> dict:
        """``ses.csv`` (+ ``ses_neurons.csv``) beside ``ses.json``."""
        return {f"{SES_STEM}.csv": (self.ses, {}), f"{SES_STEM}_neurons.csv": (self.neurons_per_layer, {})}

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "SimilarityResult":
        tables = _read_tables(folder, SES_STEM, ("", "_neurons"))
        neurons = tables["_neurons"]
        return cls(_named(tables[""], "pair"), meta, None if neurons is None else _named(neurons, "language"))

    def figure(self) -> Any:
        """SES per layer for every pair (the mean in black); neuron counts per layer beside it."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        with_neurons = self.neurons_per_layer is not None
        fig = make_subplots(rows=1, cols=2 if with_neurons else 1, horizontal_spacing=0.1, subplot_titles=(
            ["Sentence-embedding similarity", "Language-specific neurons"] if with_neurons else None))
        layers = list(self.ses.index)
        styles = {"mean": dict(color="black", width=3), "mismatched": dict(color="grey", width=2, dash="dash")}
        for pair in self.ses.columns:
            name = "mean, mismatched texts (control)" if pair == "mismatched" else pair
            fig.add_trace(go.Scatter(
                x=layers, y=self.ses[pair].tolist(), name=name, mode="lines+markers" if pair == "mean" else "lines",
                line=styles.get(pair, dict(width=1)), legendgroup="ses", legendgrouptitle_text="SES"), row=1, col=1)
        fig.update_xaxes(title_text="layer", row=1, col=1)
        fig.update_yaxes(title_text="mean cosine similarity", row=1, col=1)
        if with_neurons:
            for lang in self.neurons_per_layer.columns:
                fig.add_trace(go.Bar(x=list(self.neurons_per_layer.index), y=self.neurons_per_layer[lang].tolist(),
                                     name=lang, legendgroup="neurons", legendgrouptitle_text="neurons"), row=1, col=2)
            fig.update_layout(barmode="stack")
            fig.update_xaxes(title_text="layer", row=1, col=2)
            fig.update_yaxes(title_text="neurons", row=1, col=2)
        # Every pair has its own legend entry (21 for 7 languages): tall enough that none is cut off in a PNG.
        fig.update_layout(title=f"SES per layer — {model_label(self.meta.get('model'))} ({self.meta.get('n_texts', '?')} texts)",
                          width=1150 if with_neurons else 850, height=max(500, 140 + 17 * len(fig.data)),
                          legend={"font": {"size": 11}, "tracegroupgap": 12})
        return fig


@dataclass
class DominanceResult(Result):
    """Fig. 7: per layer (rows) and target language (columns), the mean SES after the Eq. 6 shift.

    ``unshifted`` is the same average of the plain SES, so the gain of the shift is ``shifted - unshifted``;
    ``mismatched`` the shifted SES to a non-aligned target text (the control: ``shifted - mismatched``
    is what the alignment of content adds).
    """

    shifted: pd.DataFrame
    unshifted: pd.DataFrame
    meta: dict = field(default_factory=dict)
    mismatched: pd.DataFrame | None = None

    kind: ClassVar[str] = "dominance"
    marker: ClassVar[str] = DOMINANCE_META
    make: ClassVar[str] = "`lapelens ses`"
    required: ClassVar[tuple[str, ...]] = (f"{DOMINANCE_STEM}.csv",)
    files: ClassVar[tuple[str, ...]] = tuple(f"{DOMINANCE_STEM}{s}.csv" for s in ("", "_unshifted", "_mismatched"))

    def _tables(self) -> dict:
        """``dominance.csv``, ``dominance_unshifted.csv``, ``dominance_mismatched.csv`` beside ``dominance.json``."""
        tables = {"": self.shifted, "_unshifted": self.unshifted, "_mismatched": self.mismatched}
        return {f"{DOMINANCE_STEM}{suffix}.csv": (table, {}) for suffix, table in tables.items()}

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "DominanceResult":
        tables = _read_tables(folder, DOMINANCE_STEM, ("", "_unshifted", "_mismatched"))
        if tables["_unshifted"] is None:
            raise LapelensError(f"{folder} lacks {DOMINANCE_STEM}_unshifted.csv; run `lapelens ses` again.")
        control = tables["_mismatched"]
        return cls(_named(tables[""], "target"), _named(tables["_unshifted"], "target"), meta,
                   None if control is None else _named(control, "target"))

    def figure(self) -> Any:
        """Shifted SES per target (solid), unshifted (dotted) and the mismatched control (dashed,
        hidden until clicked in the legend), one colour per target."""
        import plotly.colors
        import plotly.graph_objects as go

        fig = go.Figure()
        palette = plotly.colors.qualitative.Plotly
        layers = list(self.shifted.index)
        for n, lang in enumerate(self.shifted.columns):
            color = palette[n % len(palette)]
            fig.add_trace(go.Scatter(x=layers, y=self.shifted[lang].tolist(), name=f"to {lang}", mode="lines+markers",
                                     line=dict(color=color), legendgroup=lang))
            fig.add_trace(go.Scatter(x=layers, y=self.unshifted[lang].tolist(), name=f"{lang} unshifted",
                                     mode="lines", line=dict(color=color, dash="dot"), legendgroup=lang))
            if self.mismatched is not None:
                fig.add_trace(go.Scatter(x=layers, y=self.mismatched[lang].tolist(), name=f"to {lang}, mismatched",
                                         mode="lines", line=dict(color=color, dash="dash"), legendgroup=lang,
                                         visible="legendonly"))
        per_target = 3 if self.mismatched is not None else 2
        fig.update_layout(
            title=f"Dominance (Eq. 6, v: {self.meta.get('vectors', '?')}) — {model_label(self.meta.get('model'))}",
            xaxis_title="layer", yaxis_title="mean SES to the target language",
            width=900, height=max(500, 160 + (21 * per_target + 8) * len(self.shifted.columns)),
            legend={"font": {"size": 11}, "tracegroupgap": 8})
        return fig


# ---- the experiments: both from one set of embeddings per run ---------------------------------------
SES_TEXTS = Setting("ses_texts", 200, "Aligned texts for SES and dominance (at least 2).", quick=40, check=positive(2))


def _embeddings(ctx: Context) -> SentenceEmbeddings:
    return ctx.shared("embeddings", lambda: sentence_embeddings(ctx.model, ctx.parallel.head(ctx.cfg.ses_texts),
                                                                ctx.languages))


@experiment("ses", result=SimilarityResult, reads=("primary?", "parallel"), settings=(SES_TEXTS,), figure="fig6_ses",
            exports={"sentence_embeddings": sentence_embeddings}, paper="Fig. 6", order=40)
def ses_stage(ctx: Context) -> SimilarityResult:
    """SES per layer of the aligned texts, beside the primary method's neurons per layer."""
    return _embeddings(ctx).similarity(ctx.selection("primary"))


@experiment("dominance", result=DominanceResult, reads=("parallel",), settings=(SES_TEXTS,), figure="fig7_dominance",
            paper="Fig. 7, Eq. 6", order=50)
def dominance_stage(ctx: Context) -> DominanceResult:
    """Eq. 6's shifted SES per layer and target language."""
    return _embeddings(ctx).dominance()
