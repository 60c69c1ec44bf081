"""Sentence embeddings per layer, and the token norms of the same pass (Tang et al. Fig. 6, 7's input).

The *sentence embedding* of a text at layer i is the mean, over the text's content tokens, of
what Hugging Face returns as ``hidden_states[i + 1]`` with ``output_hidden_states=True`` for the
text run alone as ``[sep] + tokens`` (``sep``: BOS, else EOS). For every block but the last that
is the block's output (``blocks.{i}.hook_resid_post``); for the last one transformers returns the
output of the final norm (``ln_final.hook_out``), not the last block's raw output, and so does this
module: layer ``n_layers - 1`` is after the final norm. The separator is left out of the mean: in a
causal model its state is the same for every text and its norm is often far larger than that of
real tokens (an attention sink). The first content token can be one too (``drop_first_token``).

The same pass keeps what the diagnostics need: the state of each text's first content token, its
number of content tokens, the mean norm of the separator and the median norm of the content tokens
per language and layer. :class:`SentenceEmbeddings` saves all of it (safetensors + JSON), so that
every measure and figure can be recomputed without the model.

The experiments ``ses`` (Fig. 6) and ``dominance`` (Fig. 7) of a run are declared here: both are
measured on one set of embeddings per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens.artifacts import Kind, load_folder, register_kind, save_folder
from lapelens.constants import EMBEDDINGS_META, EMBEDDINGS_TENSORS
from lapelens.errors import LapelensError
from lapelens.evaluate import similarity as _similarity
from lapelens.evaluate._registry import Context, Setting, experiment, positive
from lapelens.evaluate.measures import DEFAULT_N_BOOT, MEASURES, VECTORS, Measure, Vectors
from lapelens.hooks import layer_hooks, run_until
from lapelens.tokens import padded_batch, separator_id
from lapelens.types import HookedModel

DEFAULT_BATCH_SIZE = 8
EMBEDDINGS_KIND = "sentence_embeddings"
_OPTIONAL = ("first_token", "n_tokens", "separator_norm", "token_norm_median")


@dataclass
class SentenceEmbeddings:
    """``embeddings[k, t, i]``: the embedding of aligned text t in ``languages[k]`` at layer i.

    ``first_token[k, t, i]`` is the state of the text's first content token, ``n_tokens[k, t]``
    its number of content tokens, ``separator_norm[k, i]`` the mean norm of the separator's state
    and ``token_norm_median[k, i]`` the median norm of the content tokens' states (all optional:
    embeddings made otherwise may lack them). ``meta["first_token_in_mean"]`` says whether the
    first content token is part of ``embeddings``.
    """

    languages: tuple[str, ...]
    embeddings: Float[Tensor, "lang text layer d_model"]
    meta: dict = field(default_factory=dict)
    first_token: Float[Tensor, "lang text layer d_model"] | None = None
    n_tokens: Int64[Tensor, "lang text"] | None = None
    separator_norm: Float[Tensor, "lang layer"] | None = None
    token_norm_median: Float[Tensor, "lang layer"] | None = None

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        if self.embeddings.ndim != 4 or self.embeddings.shape[0] != len(self.languages):
            raise LapelensError(
                f"SentenceEmbeddings.embeddings must have shape (lang={len(self.languages)}, text, layer, "
                f"d_model); got {tuple(self.embeddings.shape)}."
            )
        if (self.first_token is None) != (self.n_tokens is None):
            raise LapelensError("SentenceEmbeddings needs first_token and n_tokens together (or neither).")

    @property
    def n_texts(self) -> int:
        return self.embeddings.shape[1]

    @property
    def n_layers(self) -> int:
        return self.embeddings.shape[2]

    @property
    def first_token_in_mean(self) -> bool:
        return bool(self.meta.get("first_token_in_mean", True))

    def _meta(self, **extra: Any) -> dict:
        return {**self.meta, "languages": list(self.languages), "n_texts": self.n_texts, **extra}

    def subset(self, languages: Sequence[str]) -> "SentenceEmbeddings":
        """The same texts in ``languages`` only, in that order."""
        missing = [l for l in languages if l not in self.languages]
        if missing:
            raise LapelensError(f"Language(s) {missing} are not in these embeddings; they have {list(self.languages)}.")
        idx = torch.tensor([self.languages.index(l) for l in languages])
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return replace(
            self,
            languages=tuple(languages),
            embeddings=self.embeddings[idx],
            **{name: pick(getattr(self, name)) for name in _OPTIONAL},
        )

    # ---- the first content token ---------------------------------------------------------------
    def with_first_token(self, in_mean: bool) -> "SentenceEmbeddings":
        """The same texts with the first content token in (``True``) or out of the mean. A text of a
        single content token keeps it (``meta["n_single_token"]`` counts them)."""
        if in_mean == self.first_token_in_mean:
            return self
        if self.first_token is None:
            raise LapelensError(
                "These embeddings do not keep the first content token's state: make them again "
                "with lapelens.sentence_embeddings."
            )
        n = self.n_tokens.double()[:, :, None, None]
        e, f = self.embeddings.double(), self.first_token.double()
        moved = (n * e - f) / (n - 1).clamp_min(1) if not in_mean else ((n - 1) * e + f) / n
        out = torch.where(n >= 2, moved, e).to(self.embeddings.dtype)
        meta = {**self.meta, "first_token_in_mean": in_mean, "n_single_token": int((self.n_tokens < 2).sum())}
        return replace(self, embeddings=out, meta=meta)

    def drop_first_token(self) -> "SentenceEmbeddings":
        """The embeddings with the first content token left out of the mean too."""
        return self.with_first_token(False)

    # ---- measures ------------------------------------------------------------------------------
    def similarity(
        self,
        neurons: Any | None = None,
        measure: Measure = "standardized",
        vectors: Vectors = "heldout",
        n_boot: int = DEFAULT_N_BOOT,
        seed: int = 0,
    ) -> "_similarity.SimilarityResult":
        """Fig. 6: per layer the aligned cosine (``mean``), the mismatched control over all pairs
        t != u (``mismatched``), ``gap`` = mean - mismatched and top-1 ``retrieval``, averaged over
        ordered language pairs, with bootstrap 95% intervals over texts; per pair in ``pairs``;
        diagnostics; and the same numbers with the first content token in/out of the mean.

        ``measure``: "raw", "centered" or "standardized" (the default; see
        :mod:`lapelens.evaluate.measures`); ``vectors``: "heldout" (the default: means and
        deviations fit on one half of the texts, applied to the other, then swapped) or "all".
        ``neurons`` (a LanguageNeurons of the same model) adds its neurons per layer.
        """
        return _similarity.similarity(self, neurons, measure, vectors, n_boot, seed)

    def dominance(
        self,
        measure: Measure = "standardized",
        vectors: Vectors = "heldout",
        n_boot: int = DEFAULT_N_BOOT,
        seed: int = 0,
        reference: str = "en",
    ) -> "_similarity.DominanceResult":
        """Fig. 7: per target language c, retrieval into c and the aligned-minus-mismatched gap into c,
        averaged over sources k != c, per layer and over layers, with the bootstrap interval of
        ``reference`` minus the best other target. Under "centered"/"standardized" Eq. 6's shift
        ``h_k - v_k + v_c`` is a no-op (each language is centred on its own mean); under "raw" the
        result also holds Eq. 6's shifted cosine, unshifted and its mismatched control (the old Fig. 7).
        """
        return _similarity.dominance(self, measure, vectors, n_boot, seed, reference)

    def diagnostics(self) -> dict[str, pd.DataFrame]:
        """Tables ``energy``, ``top_dimensions`` and ``norms`` (:func:`lapelens.evaluate.similarity.diagnostics`)."""
        return _similarity.diagnostics(self)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``embeddings.safetensors`` and ``embeddings.json`` into the folder ``path``."""
        tensors = {"embeddings": self.embeddings}
        tensors.update({name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None})
        return save_folder(path, EMBEDDINGS_KIND, tensors, self._meta())

    @classmethod
    def load(cls, path: str | Path) -> "SentenceEmbeddings":
        meta, t = load_folder(
            path,
            EMBEDDINGS_KIND,
            f"{path} holds no sentence embeddings (expected "
            "embeddings.safetensors and embeddings.json); make them with `lapelens ses --embeddings-out`.",
        )
        languages = meta.pop("languages")
        meta.pop("n_texts", None)
        return cls(tuple(languages), t["embeddings"], meta, **{name: t.get(name) for name in _OPTIONAL})


def sentence_embeddings(
    model: HookedModel,
    parallel: pd.DataFrame,
    languages: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int | None = None,
    progress: bool = True,
    first_token: bool = True,
) -> SentenceEmbeddings:
    """Per-layer sentence embeddings of every text of ``parallel`` (one column per language).

    At every layer i: the mean over the text's content tokens (separator excluded) of HF's
    ``hidden_states[i + 1]`` for ``[sep] + tokens`` (module docstring: the last layer is after the
    final norm). ``first_token=False`` leaves the first content token out of the mean too (a text of
    one token keeps it). Rows are aligned texts (as :func:`lapelens.corpus.load_parallel` returns
    them); ``languages`` picks columns (default: all). Texts are truncated to ``max_tokens`` tokens
    (default and cap: the model's context minus the separator); ``meta["n_truncated"]`` counts them.
    Within each language, texts are sorted by length and right-padded in batches; padded positions
    are masked out of attention and out of the means.
    """
    langs = list(parallel.columns) if languages is None else list(dict.fromkeys(languages))
    missing = [lang for lang in langs if lang not in parallel.columns]
    if missing:
        raise LapelensError(f"Language(s) {missing} are not in the parallel data; it has {list(parallel.columns)}.")
    _similarity.check_pairs(langs, len(parallel))
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise LapelensError("batch_size and max_tokens must be at least 1.")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise LapelensError("The model has no tokenizer: load it with lapelens.load_model.")
    cfg = model.cfg
    n_layers, n_ctx = cfg.n_layers, getattr(cfg, "n_ctx", None)
    keep = min(max_tokens or n_ctx - 1, n_ctx - 1) if n_ctx else max_tokens
    sep = separator_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep
    # HF's hidden_states[i + 1]: each block's output, and for the last block the final norm's.
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(n_layers - 1)] + ["ln_final.hook_out"]
    absent = [h for h in hooks if h not in model.hook_dict]
    if absent:
        raise LapelensError(f"Model {cfg.model_name!r} has no {absent[0]} hook: load it with lapelens.load_model.")
    device = next(model.parameters()).device
    n_lang, n_texts = len(langs), len(parallel)
    out = torch.empty(n_lang, n_texts, n_layers, cfg.d_model)
    first = torch.empty_like(out)
    n_tokens = torch.zeros(n_lang, n_texts, dtype=torch.long)
    sep_norm = torch.zeros(n_lang, n_layers, dtype=torch.float64)
    token_norms: list[list[list[Tensor]]] = [[[] for _ in range(n_layers)] for _ in range(n_lang)]
    current: dict[str, Any] = {}

    def take(layer: int, resid: Tensor) -> None:
        k, rows, w = current["k"], current["rows"], current["weights"]
        states = resid.float()
        summed = torch.bmm(w.unsqueeze(1), states).squeeze(1)  # batch d_model
        out[k, rows, layer] = (summed / current["lengths"][:, None]).cpu()
        first[k, rows, layer] = states[:, 1].cpu()
        norms = states.norm(dim=-1)
        sep_norm[k, layer] += norms[:, 0].double().sum().cpu()
        token_norms[k][layer].append(norms[w > 0].cpu())

    n_truncated = 0
    # The pass stops after the final norm: the unembedding is not needed.
    with torch.inference_mode(), model.hooks(fwd_hooks=layer_hooks(dict(enumerate(hooks)), take)):
        for k, lang in enumerate(langs):
            texts = parallel[lang].tolist()
            bad = [parallel.index[t] for t, s in enumerate(texts) if not isinstance(s, str) or not s.strip()]
            if bad:
                raise LapelensError(f"Language {lang!r} has empty or missing texts in rows {bad[:5]}: drop those rows.")
            ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            n_truncated += sum(keep is not None and len(x) > keep for x in ids)
            ids = [[sep] + x[:keep] for x in ids]
            n_tokens[k] = torch.tensor([len(x) - 1 for x in ids])
            order = sorted(range(len(ids)), key=lambda t: len(ids[t]))
            for b in tqdm(range(0, len(order), batch_size), desc=f"embed {lang}", disable=not progress):
                rows = order[b : b + batch_size]
                tokens, mask, weights = padded_batch(ids, rows, pad)
                current.update(
                    k=k, rows=torch.tensor(rows), weights=weights.to(device), lengths=weights.sum(1).to(device)
                )
                kwargs = {"attention_mask": mask.to(device)} if bool((mask == 0).any()) else {}
                run_until(model, tokens.to(device), use_cache=False, **kwargs)
    medians = torch.tensor(
        [[torch.cat(token_norms[k][i]).median().item() for i in range(n_layers)] for k in range(n_lang)]
    )
    meta = {
        "model": str(cfg.model_name),
        "max_tokens": keep,
        "n_truncated": int(n_truncated),
        "separator_in_mean": False,
        "first_token_in_mean": True,
        "hook": "blocks.{i}.hook_resid_post; last layer ln_final.hook_out (HF hidden_states[i + 1])",
        "text_ids": [str(i) for i in parallel.index],
    }
    emb = SentenceEmbeddings(tuple(langs), out, meta, first, n_tokens, (sep_norm / n_texts).float(), medians)
    return emb if first_token else emb.drop_first_token()


register_kind(
    Kind(
        EMBEDDINGS_KIND,
        EMBEDDINGS_META,
        SentenceEmbeddings,
        "`lapelens ses --embeddings-out`",
        tensors=EMBEDDINGS_TENSORS,
    )
)


# ---- the experiments: SES and dominance from one set of embeddings per run ------------------------
def _one_of(choices: tuple[str, ...]):
    def check(value: Any, name: str, cfg: Any) -> None:
        if value not in choices:
            raise LapelensError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")

    return check


SES_TEXTS = Setting(
    "ses_texts",
    200,
    "Aligned texts for SES and dominance (at least 4: the standardized measure fits on half of them).",
    quick=40,
    check=positive(4),
)
SES_MEASURE = Setting(
    "ses_measure",
    "standardized",
    "How SES and dominance compare two texts: raw, centered or standardized (see `lapelens ses --help`).",
    check=_one_of(MEASURES),
)
SES_VECTORS = Setting(
    "ses_vectors",
    "heldout",
    "Where SES and dominance fit the means and deviations: heldout (on one "
    "half of the texts, applied to the other, then swapped) or all.",
    check=_one_of(VECTORS),
)
SES_N_BOOT = Setting(
    "ses_n_boot",
    DEFAULT_N_BOOT,
    "Bootstrap resamples of the texts for the SES and dominance intervals.",
    check=positive(),
)
SES_SETTINGS = (SES_TEXTS, SES_MEASURE, SES_VECTORS, SES_N_BOOT)


def _measure(cfg: Any) -> dict:
    """The measure's arguments of ``similarity``/``dominance``; the bootstrap takes the run's seed."""
    return dict(measure=cfg.ses_measure, vectors=cfg.ses_vectors, n_boot=cfg.ses_n_boot, seed=cfg.seed)


def _record(cfg: Any) -> dict:
    return {"ses_texts": cfg.ses_texts, **_measure(cfg)}


def _embeddings(ctx: Context) -> SentenceEmbeddings:
    return ctx.shared(
        "embeddings", lambda: sentence_embeddings(ctx.model, ctx.parallel.head(ctx.cfg.ses_texts), ctx.languages)
    )


@experiment(
    "ses",
    result=_similarity.SimilarityResult,
    reads=("primary?", "parallel"),
    settings=SES_SETTINGS,
    record=_record,
    figure="fig6_ses",
    paper="Fig. 6",
    order=40,
    exports={"sentence_embeddings": sentence_embeddings, "SentenceEmbeddings": SentenceEmbeddings},
)
def ses_stage(ctx: Context) -> "_similarity.SimilarityResult":
    """SES per layer of the aligned texts, beside the primary method's neurons per layer."""
    return _embeddings(ctx).similarity(ctx.selection("primary"), **_measure(ctx.cfg))


@experiment(
    "dominance",
    result=_similarity.DominanceResult,
    reads=("parallel",),
    settings=SES_SETTINGS,
    record=_record,
    figure="fig7_dominance",
    paper="Fig. 7, Eq. 6",
    order=50,
)
def dominance_stage(ctx: Context) -> "_similarity.DominanceResult":
    """Retrieval into each target language (and, under raw, Eq. 6's shifted SES) per layer."""
    return _embeddings(ctx).dominance(**_measure(ctx.cfg))
