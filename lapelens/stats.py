"""Per-language neuron statistics: additive, so streaming, resuming and sharding are just sums."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Float64, Int64, Shaped
from torch import Tensor

from lapelens._io import atomic_file
from lapelens.artifacts import Kind, load_folder, register_kind, save_folder
from lapelens.constants import OFFICIAL_ACTIVATION, SENTENCES_META, SENTENCES_TENSORS, STATS_META, STATS_TENSORS
from lapelens.errors import LapelensError

if TYPE_CHECKING:
    import pandas as pd

#: Artifact kinds (registered below, with their classes).
KIND = "activation_stats"
SENTENCES_KIND = "sentence_activations"
_TENSORS = ("count", "act_sum", "act_sq_sum")


def languages_last(x: Shaped[Tensor, " lang *unit"]) -> Shaped[Tensor, "*unit lang"]:
    """``x`` with its language axis moved last, contiguous: the layout of the official
    ``identify.py`` (``over_zero[layer, neuron, lang]``).

    A sum over languages adds the same numbers in another order on a strided axis than on the
    contiguous last one, and may round differently. What must equal the official script bit for
    bit (LAPE's entropy) runs on this layout.
    """
    return x.movedim(0, -1).contiguous()


def entropy(scores: Float[Tensor, " lang *unit"]) -> Float[Tensor, "*unit"]:
    """``H = -sum_k q_k log q_k`` of ``q = scores / scores.sum(lang)``, with 0/0 -> 0 and 0 log 0 = 0:
    LAPE's score of a unit (``methods.lape``), and the ``entropy`` column of :meth:`ActivationStats.neuron_table`.

    Computed on the official layout (``languages_last``), so that it rounds as ``identify.py``.
    """
    return entropy_languages_last(languages_last(scores))


def entropy_languages_last(scores: Float[Tensor, "*unit lang"]) -> Float[Tensor, "*unit"]:
    """:func:`entropy` on scores already in the official layout, languages last and contiguous."""
    normed = scores / scores.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_q = torch.where(normed > 0, normed.log(), 0)
    return -torch.sum(normed * log_q, dim=-1)


@dataclass
class ActivationStats:
    """Counts and sums over the tokens of each language, per (layer, neuron); language first.

    ``count[k, i, j]``: tokens of language k on which neuron (i, j) fired (``hook_pre > 0``), so
    ``count[k]`` is language k's (layer, neuron) matrix, as ``LanguageNeurons.mask[k]``.
    ``act_sum`` / ``act_sq_sum``: sums of the activation value ``act_fn(hook_pre)`` and of its square.
    """

    languages: tuple[str, ...]
    n: Int64[Tensor, " lang"]
    count: Int64[Tensor, "lang layer neuron"]
    act_sum: Float64[Tensor, "lang layer neuron"]
    act_sq_sum: Float64[Tensor, "lang layer neuron"]
    #: model, seq_len, corpus and whatever else produced the numbers (saved as JSON).
    meta: dict = field(default_factory=dict)
    #: False for statistics read from official ``activation.*`` files, which hold firing counts only
    #: (``act_sum`` and ``act_sq_sum`` are then zeros). After ``meta``, so that ``meta`` passed
    #: positionally stays ``meta``.
    has_activation_sums: bool = True

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        shape = self.count.shape
        if len(shape) != 3 or shape[0] != len(self.languages) or self.n.shape != (len(self.languages),):
            raise LapelensError(
                f"ActivationStats shapes do not fit {len(self.languages)} languages: n {tuple(self.n.shape)}, "
                f"count {tuple(shape)} (expected lang x layer x neuron)."
            )
        for name in ("act_sum", "act_sq_sum"):
            if getattr(self, name).shape != shape:
                raise LapelensError(
                    f"ActivationStats.{name} has shape {tuple(getattr(self, name).shape)}, expected {tuple(shape)}."
                )

    @classmethod
    def zeros(cls, languages: Sequence[str], n_layers: int, d_mlp: int, meta: dict | None = None) -> "ActivationStats":
        k = len(languages)
        return cls(
            languages=tuple(languages),
            n=torch.zeros(k, dtype=torch.int64),
            count=torch.zeros(k, n_layers, d_mlp, dtype=torch.int64),
            act_sum=torch.zeros(k, n_layers, d_mlp, dtype=torch.float64),
            act_sq_sum=torch.zeros(k, n_layers, d_mlp, dtype=torch.float64),
            meta=dict(meta or {}),
        )

    @property
    def n_layers(self) -> int:
        return self.count.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.count.shape[2]

    def lang_index(self, lang: str) -> int:
        if lang not in self.languages:
            raise LapelensError(f"Language {lang!r} is not in these statistics (they have {list(self.languages)}).")
        return self.languages.index(lang)

    def merge(self, other: "ActivationStats") -> "ActivationStats":
        """Statistics of the union of two disjoint text sets: a sum, language by language.

        Languages present in only one side are kept; the result lists ``self``'s languages first.
        """
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise LapelensError(
                f"Cannot merge statistics of a {self.n_layers}x{self.d_mlp} model with a "
                f"{other.n_layers}x{other.d_mlp} one: they come from different models."
            )
        for key in ("model",):
            if key in self.meta and key in other.meta and self.meta[key] != other.meta[key]:
                raise LapelensError(
                    f"Cannot merge statistics of model {self.meta[key]!r} with model {other.meta[key]!r}."
                )
        langs = self.languages + tuple(l for l in other.languages if l not in self.languages)
        out = ActivationStats.zeros(langs, self.n_layers, self.d_mlp, meta={**other.meta, **self.meta})
        out.has_activation_sums = self.has_activation_sums and other.has_activation_sums
        for src in (self, other):
            idx = torch.tensor([langs.index(l) for l in src.languages], dtype=torch.long)
            out.n.index_add_(0, idx, src.n)
            for name in _TENSORS:
                getattr(out, name).index_add_(0, idx, getattr(src, name))
        return out

    __add__ = merge

    def select(self, languages: Sequence[str]) -> "ActivationStats":
        """The same statistics restricted to (and reordered as) ``languages``."""
        idx = [self.lang_index(l) for l in languages]
        return ActivationStats(
            tuple(languages),
            self.n[idx].clone(),
            self.count[idx].clone(),
            self.act_sum[idx].clone(),
            self.act_sq_sum[idx].clone(),
            dict(self.meta),
            self.has_activation_sums,
        )

    def _check_tokens(self) -> None:
        empty = [l for l, n in zip(self.languages, self.n.tolist()) if n == 0]
        if empty:
            raise LapelensError(
                f"No tokens were collected for {empty}: collect statistics on text in those languages first."
            )

    def _per_token(self, total: Tensor) -> Tensor:
        """``total[k] / n[k]`` for every language k, in float64."""
        return total.double() / self.n.double().view(-1, 1, 1)

    def firing_probability(self) -> Float64[Tensor, "lang layer neuron"]:
        """``p[k, i, j] = count / n``: the share of language-k tokens on which neuron (i, j) fires."""
        self._check_tokens()
        return self._per_token(self.count)

    def mean_activation(self) -> Float64[Tensor, "lang layer neuron"]:
        """Mean activation value ``act_fn(hook_pre)`` per language."""
        self._check_tokens()
        return self._per_token(self.act_sum)

    def std_activation(self) -> Float64[Tensor, "lang layer neuron"]:
        mean = self.mean_activation()
        return (self._per_token(self.act_sq_sum) - mean**2).clamp_min(0).sqrt()

    def neuron_table(self) -> "pd.DataFrame":
        """One row per neuron, indexed by ``(layer, neuron)``: for exploring single neurons.

        Columns: ``p_<lang>`` (firing probability), ``mean_<lang>`` (mean activation, if the
        statistics have activation sums), and ``entropy`` of the normalised firing probabilities
        (LAPE's score before any filtering; 0/0 -> 0, 0 log 0 = 0). Sort by ``entropy`` and filter
        on ``p_<lang>`` to find candidates, then look a neuron up with ``.loc[(layer, neuron)]``.
        """
        import pandas as pd

        p = self.firing_probability()
        columns = {f"p_{l}": p[k].flatten().numpy() for k, l in enumerate(self.languages)}
        if self.has_activation_sums:
            mean = self.mean_activation()
            columns.update({f"mean_{l}": mean[k].flatten().numpy() for k, l in enumerate(self.languages)})
        index = pd.MultiIndex.from_product([range(self.n_layers), range(self.d_mlp)], names=["layer", "neuron"])
        columns["entropy"] = entropy(p).flatten().numpy()  # LAPE's, here on the float64 probabilities
        return pd.DataFrame(columns, index=index)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/stats.safetensors`` and ``path/stats.json`` (a folder); returns the folder."""
        path = Path(path)
        tensors = {"n": self.n, **{name: getattr(self, name) for name in _TENSORS}}
        meta = {**self.meta, "languages": list(self.languages), "has_activation_sums": self.has_activation_sums}
        return save_folder(path, KIND, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "ActivationStats":
        """Read a folder written by :meth:`save`, of this lapelens or an earlier one (schema 1,
        ``layer x neuron x lang`` tensors, is transposed to language first)."""
        path = Path(path)
        meta, tensors = load_folder(
            path,
            KIND,
            f"{path} is not a lapelens statistics folder (expected {STATS_TENSORS} "
            f"and {STATS_META}); make one with `lapelens collect`.",
            _language_first,
        )
        try:
            languages = tuple(meta.pop("languages"))
            # Its own key; schema 1 kept it in meta (only when False), which is the same place in the JSON.
            sums = bool(meta.pop("has_activation_sums", True))
            return cls(languages, tensors["n"], *(tensors[name] for name in _TENSORS), meta, sums)
        except (KeyError, TypeError) as exc:
            raise LapelensError(
                f"{path} is corrupt ({type(exc).__name__}: {exc}); collect the statistics again."
            ) from None

    # ---- the official RUCAIBox/Language-Specific-Neurons format ------------------------------
    def to_official(self, folder: str | Path, tag: str) -> list[Path]:
        """One ``torch.save({"n": int, "over_zero": int32[layers, neurons]})`` file per language."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.count.max() > torch.iinfo(torch.int32).max:
            raise LapelensError("Counts exceed int32, which the official format stores: split the statistics.")
        paths = []
        for k, lang in enumerate(self.languages):
            p = folder / OFFICIAL_ACTIVATION.format(lang=lang, tag=tag)
            with atomic_file(p) as tmp:
                torch.save({"n": int(self.n[k]), "over_zero": self.count[k].to(torch.int32).contiguous()}, tmp)
            paths.append(p)
        return paths

    @classmethod
    def from_official(cls, folder: str | Path, tag: str, languages: Sequence[str]) -> "ActivationStats":
        """Read official activation files (counts only; the activation sums are left at zero)."""
        folder = Path(folder)
        ns, counts = [], []
        for lang in languages:
            p = folder / OFFICIAL_ACTIVATION.format(lang=lang, tag=tag)
            if not p.is_file():
                raise LapelensError(f"Missing official activation file {p}: check --tag and the language codes.")
            try:
                d = torch.load(p, weights_only=True)
                ns.append(int(d["n"]))
                counts.append(d["over_zero"].to(torch.int64))
            except Exception as exc:
                raise LapelensError(f"{p} is not an official activation file ({type(exc).__name__}: {exc}).") from exc
        count = torch.stack(counts)
        return cls(
            tuple(languages),
            torch.tensor(ns, dtype=torch.int64),
            count,
            torch.zeros(count.shape, dtype=torch.float64),
            torch.zeros(count.shape, dtype=torch.float64),
            has_activation_sums=False,
            meta={"source": f"official:{folder}:{tag}"},
        )


def _language_first(version: int, meta: dict, tensors: dict) -> tuple[dict, dict]:
    """A statistics folder of schema 1 (``layer x neuron x lang`` tensors, the official
    ``over_zero`` stacking, saved by lapelens before the one axis order) in schema 2's order."""
    if version == 1:
        tensors = {
            k: v.permute(2, 0, 1).contiguous() if k in _TENSORS and v.ndim == 3 else v for k, v in tensors.items()
        }
    return meta, tensors


@dataclass
class SentenceActivations:
    """Per-sentence mean activation of every neuron, for Kojima et al.'s AP method.

    ``means[s, i, j]`` is the mean over the tokens of sentence s of ``act_fn(hook_pre)`` of
    neuron (i, j); ``labels[s]`` indexes ``languages``. Unlike ``ActivationStats`` this grows
    with the number of sentences (AP needs every per-sentence value to rank them).
    """

    languages: tuple[str, ...]
    labels: Int64[Tensor, " sentence"]
    means: Float[Tensor, "sentence layer neuron"]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        if self.means.ndim != 3 or self.labels.shape != (self.means.shape[0],):
            raise LapelensError(
                f"SentenceActivations: means {tuple(self.means.shape)} must be (sentence, layer, neuron) "
                f"and labels {tuple(self.labels.shape)} one per sentence."
            )

    def save(self, path: str | Path) -> Path:
        return save_folder(
            path,
            SENTENCES_KIND,
            {"labels": self.labels, "means": self.means},
            {**self.meta, "languages": list(self.languages)},
        )

    @classmethod
    def load(cls, path: str | Path) -> "SentenceActivations":
        path = Path(path)
        meta, t = load_folder(
            path,
            SENTENCES_KIND,
            f"{path} is not a lapelens sentence-activation folder (expected {SENTENCES_TENSORS} and {SENTENCES_META}).",
        )
        try:
            return cls(tuple(meta.pop("languages")), t["labels"], t["means"], meta)
        except (KeyError, TypeError) as exc:
            raise LapelensError(f"{path} is not a readable lapelens sentence-activation folder ({exc}).") from None


register_kind(Kind(KIND, STATS_META, ActivationStats, "`lapelens collect`", schema=2, tensors=STATS_TENSORS))
register_kind(
    Kind(
        SENTENCES_KIND,
        SENTENCES_META,
        SentenceActivations,
        "`lapelens identify --method ap` (or `lapelens.collect_sentence_means`)",
        tensors=SENTENCES_TENSORS,
    )
)
