"""``LanguageNeurons``: which neurons belong to which language (a boolean mask per language).

Besides the lapelens folder format (safetensors + JSON), a neuron set reads and writes the mask
files of the official RUCAIBox/Language-Specific-Neurons code: ``torch.save`` of a list with one
entry per language (in order), each a list with one entry per layer, each a sorted ``LongTensor``
of neuron indices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from lapelens._io import atomic_file
from lapelens.artifacts import Kind, kind_of_marker, load_folder, register_kind, save_folder, wrong_kind
from lapelens.constants import NEURONS_META, NEURONS_TENSORS, PAPER_LANGUAGES
from lapelens.errors import LapelensError
from lapelens.figures.layers import layers_figure
from lapelens.hooks import set_to, zeroed
from lapelens.models import neuron_spec
from lapelens.resume import first_layer
from lapelens.stats import ActivationStats
from lapelens.types import BoundSelection, HookedModel, Selection

#: Artifact kind (registered below, with its class).
KIND = "language_neurons"
#: Keys of the JSON file that are attributes of the object, not free-form ``meta``.
#: The fields among them saved as top-level JSON keys (a file written before they were fields has the same keys).
_TYPED = ("budget", "selected", "languages_assumed", "d_mlp_inferred")
_RESERVED = ("lapelens_version", "method", "languages", "n_layers", "d_mlp", "values", *_TYPED)


def default_official_languages(n_entries: int) -> tuple[str, ...]:
    """Language names for an official mask file with ``n_entries`` entries (the files carry none).

    7 entries: the paper's ``en, zh, fr, es, vi, id, ja``; 6 entries: the same without ``ja``
    (the models the paper ran on six languages, e.g. BLOOM, lack Japanese). Anything else must be
    named by the caller.
    """
    if n_entries == len(PAPER_LANGUAGES):
        return PAPER_LANGUAGES
    if n_entries == len(PAPER_LANGUAGES) - 1:
        return tuple(l for l in PAPER_LANGUAGES if l != "ja")
    raise LapelensError(
        f"The official mask file has {n_entries} language entries; only 7 (en, zh, fr, es, vi, id, ja) "
        "or 6 (the same without ja) have a default: name them in the file's order (--languages a,b,c)."
    )


@dataclass
class LanguageNeurons(Selection):
    """The neurons selected for each language.

    ``mask[k, i, j]`` is True when neuron j of layer i belongs to ``languages[k]``. A neuron may
    belong to several languages (LAPE assigns it to every language whose firing probability
    passes the threshold); a language may have no neurons at all and still keeps its slot.
    ``values`` holds optional per-neuron numbers that interventions use (e.g. ``"median"`` for
    Kojima et al.'s pinning), each of the same shape as ``mask``.
    ``meta`` records what produced the set: ``settings`` (the method's options), ``model``, ...;
    what the code acts on is a field of its own (``budget``/``selected``, ``languages_assumed``,
    ``d_mlp_inferred``), saved beside ``meta``.
    """

    languages: tuple[str, ...]
    mask: Bool[Tensor, "lang layer neuron"]
    method: str = "unknown"
    meta: dict = field(default_factory=dict)
    values: dict[str, Float[Tensor, "lang layer neuron"]] = field(default_factory=dict)
    budget: int | None = None
    """Units an entropy selection (LAPE, LAVE) was asked for: ``round(units * top_rate)``; None for other methods."""
    selected: int | None = None
    """Units it found (fewer than ``budget`` when too few pass the filter)."""
    languages_assumed: bool = False
    """An official file that named no languages, read in the paper's order (``default_official_languages``)."""
    d_mlp_inferred: bool = False
    """An official file's MLP width taken as its largest index + 1 (a lower bound of the true width)."""

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        if self.mask.dtype != torch.bool or self.mask.ndim != 3 or self.mask.shape[0] != len(self.languages):
            raise LapelensError(
                f"LanguageNeurons.mask must be a bool tensor of shape (lang={len(self.languages)}, layer, neuron); "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}."
            )
        if len(set(self.languages)) != len(self.languages):
            raise LapelensError(f"LanguageNeurons: duplicate language names in {list(self.languages)}.")
        for name, v in self.values.items():
            if v.shape != self.mask.shape:
                raise LapelensError(
                    f"LanguageNeurons.values[{name!r}] has shape {tuple(v.shape)}, expected {tuple(self.mask.shape)}."
                )

    @property
    def n_layers(self) -> int:
        return self.mask.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.mask.shape[2]

    #: What the selection counts (``Selection.unit``).
    unit: ClassVar[str] = "neurons"

    def on(self, model: HookedModel) -> BoundSelection:
        """This selection checked against ``model`` once; its interventions then trust it."""
        return BoundNeurons(self, model)

    def lang_index(self, lang: str) -> int:
        if lang not in self.languages:
            raise LapelensError(f"Language {lang!r} has no neuron set here (languages: {list(self.languages)}).")
        return self.languages.index(lang)

    def layer_indices(self, lang: str) -> list[Int64[Tensor, " idx"]]:
        """Sorted neuron indices per layer for one language (the official mask layout)."""
        k = self.lang_index(lang)
        # clone: each tensor owns its storage, so torch.save writes exactly these values.
        return [torch.nonzero(self.mask[k, i], as_tuple=False).flatten().clone() for i in range(self.n_layers)]

    def count(self, lang: str) -> int:
        return int(self.mask[self.lang_index(lang)].sum())

    def subset(self, languages: Sequence[str]) -> "LanguageNeurons":
        idx = [self.lang_index(l) for l in languages]
        return replace(
            self,
            languages=tuple(languages),
            mask=self.mask[idx].clone(),
            meta=dict(self.meta),
            values={k: v[idx].clone() for k, v in self.values.items()},
        )

    # ---- summaries (DataFrames with named axes) ----------------------------------------------
    def per_language(self) -> pd.DataFrame:
        """Neurons per language (Table 3): ``neurons`` and ``share`` of all the model's neurons."""
        counts = self.mask.sum(dim=(1, 2)).tolist()
        total = self.n_layers * self.d_mlp
        df = pd.DataFrame(
            {"neurons": counts, "share": [c / total for c in counts]},
            index=pd.Index(self.languages, name="language"),
        )
        df.columns.name = "summary"
        return df

    def per_layer(self) -> pd.DataFrame:
        """Neurons per layer (rows) and language (columns): Fig. 5 and Tables 6, 8-10."""
        counts = self.mask.sum(dim=2).T  # layer x lang
        return pd.DataFrame(
            counts.numpy(),
            index=pd.RangeIndex(self.n_layers, name="layer"),
            columns=pd.Index(self.languages, name="language"),
        )

    def layer_shares(self, parts: int = 3) -> pd.Series:
        """Share of the selected (language, neuron) pairs in each of ``parts`` consecutive groups of layers.

        The layers are cut as ``numpy.array_split`` cuts them (30 layers into thirds: 0-9, 10-19, 20-29; 8 into
        3, 3, 2). A neuron selected for two languages counts twice, as in :meth:`per_layer`. A "skewed U"
        (Tang et al., Fig. 5) puts most pairs in the first and last part, a top-heavy profile in the last.
        """
        if not 1 <= parts <= self.n_layers:
            raise LapelensError(f"parts must be between 1 and the {self.n_layers} layers, got {parts}.")
        per_layer = self.mask.sum(dim=(0, 2)).to(torch.float64)  # layer
        total = float(per_layer.sum())
        groups = np.array_split(np.arange(self.n_layers), parts)
        names = ["first", "middle", "last"] if parts == 3 else [f"part{i + 1}" for i in range(parts)]
        shares = [float(per_layer[g].sum()) / total if total else float("nan") for g in groups]
        return pd.Series(shares, index=pd.Index(names, name="layers"), name="share")

    def _shared(self) -> Int64[Tensor, "lang other"]:
        flat = self.mask.reshape(len(self.languages), -1).to(torch.int64)
        return flat @ flat.T

    def overlap(self) -> pd.DataFrame:
        """Neurons shared by each pair of languages; the diagonal is each language's count."""
        return pd.DataFrame(
            self._shared().numpy(),
            index=pd.Index(self.languages, name="language"),
            columns=pd.Index(self.languages, name="other"),
        )

    def jaccard(self) -> pd.DataFrame:
        """Jaccard index |A∩B| / |A∪B| between the neuron sets of each pair of languages.

        NaN where both sets are empty (the index is undefined there).
        """
        inter = self._shared().to(torch.float64)
        sizes = inter.diagonal()
        union = sizes[:, None] + sizes[None, :] - inter
        jac = inter / union  # 0/0 -> nan: both sets empty
        return pd.DataFrame(
            jac.numpy(),
            index=pd.Index(self.languages, name="language"),
            columns=pd.Index(self.languages, name="other"),
        )

    def compare(self, other: "LanguageNeurons") -> pd.DataFrame:
        """Per language, how two neuron sets of the same model agree (e.g. LAPE vs AP).

        Columns: ``self`` and ``other`` counts, ``shared`` and ``jaccard`` (NaN if both are empty).
        Only languages present in both are compared, in ``self``'s order.
        """
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise LapelensError(
                f"Cannot compare neuron sets of a {self.n_layers}x{self.d_mlp} model and a "
                f"{other.n_layers}x{other.d_mlp} model: they come from different models."
            )
        langs = [l for l in self.languages if l in other.languages]
        if not langs:
            raise LapelensError(
                f"The two neuron sets share no language ({list(self.languages)} vs {list(other.languages)})."
            )
        rows = []
        for lang in langs:
            a, b = self.mask[self.lang_index(lang)], other.mask[other.lang_index(lang)]
            inter, union = int((a & b).sum()), int((a | b).sum())
            rows.append((int(a.sum()), int(b.sum()), inter, inter / union if union else float("nan")))
        df = pd.DataFrame(rows, columns=["self", "other", "shared", "jaccard"], index=pd.Index(langs, name="language"))
        df.columns.name = "summary"
        return df

    def figure(self) -> Any:
        """Fig. 5: neurons per layer, one line per language (the paper's skewed U shape;
        ``lapelens.figures.layers``)."""
        return layers_figure(self)

    def summary(self) -> str:
        """The summary tables as text (what ``lapelens neurons show`` prints)."""
        head = (
            f"method: {self.method}   model: {self.meta.get('model') or '?'}   "
            f"shape: {self.n_layers} layers x {self.d_mlp} neurons   languages: {', '.join(self.languages)}"
        )
        parts = [head]
        if self.meta.get("settings"):
            parts.append("settings: " + json.dumps(self.meta["settings"]))
        parts += [
            "Neurons per language:\n" + self.per_language().to_string(),
            "Neurons per layer:\n" + self.per_layer().to_string(),
            "Shared neurons between languages:\n" + self.overlap().to_string(),
            "Jaccard between languages:\n" + self.jaccard().round(3).to_string(),
        ]
        return "\n\n".join(parts)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/neurons.safetensors`` (mask and values) and ``path/neurons.json``."""
        path = Path(path)
        tensors = {"mask": self.mask.contiguous()}
        tensors.update({f"values.{k}": v.contiguous() for k, v in self.values.items()})
        meta = {
            "method": self.method,
            "languages": list(self.languages),
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "values": sorted(self.values),
            **{k: getattr(self, k) for k in _TYPED},
            **{k: v for k, v in self.meta.items() if k not in _RESERVED},
        }
        return save_folder(path, KIND, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "LanguageNeurons":
        path = Path(path)
        meta, tensors = load_folder(
            path,
            KIND,
            f"{path} is not a lapelens neuron folder (expected {NEURONS_TENSORS} and "
            f"{NEURONS_META}); make one with `lapelens identify`, or pass an official .pth mask "
            "file instead.",
        )
        try:
            languages = tuple(meta["languages"])
            mask = tensors["mask"]
            values = {k[len("values.") :]: v for k, v in tensors.items() if k.startswith("values.")}
        except Exception as exc:
            raise LapelensError(
                f"{path} is corrupt ({type(exc).__name__}: {exc}); run `lapelens identify` again."
            ) from exc
        if (
            mask.dtype != torch.bool
            or mask.ndim != 3
            or (meta.get("n_layers"), meta.get("d_mlp")) != tuple(mask.shape[1:])
        ):
            raise LapelensError(f"{path} is corrupt: mask {mask.dtype} {tuple(mask.shape)} does not match its JSON.")
        method = meta.get("method", "unknown")
        rest = {k: v for k, v in meta.items() if k not in _RESERVED}
        typed = {k: meta[k] for k in _TYPED if meta.get(k) is not None}  # older files: absent or inside meta, same keys
        return cls(languages, mask, method, rest, values, **typed)

    # ---- the official RUCAIBox/Language-Specific-Neurons mask format --------------------------
    def to_official(self, path: str | Path) -> Path:
        """``torch.save`` the official layout: ``[language][layer] -> sorted LongTensor``.

        Every language keeps its slot, also one without neurons (a list of empty LongTensors);
        the official ``identify.py`` drops trailing empty languages, which shifts nothing here
        but would make such a file ambiguous to read back.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            torch.save([self.layer_indices(lang) for lang in self.languages], tmp)
        return path

    @classmethod
    def from_official(
        cls,
        path: str | Path,
        languages: Sequence[str] | None = None,
        d_mlp: int | None = None,
        method: str = "lape",
    ) -> "LanguageNeurons":
        """Read an official mask file (loaded with ``torch.load(weights_only=True)``).

        The file holds neither language names nor the MLP width:

        - ``languages`` default by the number of entries: 7 -> en, zh, fr, es, vi, id, ja (the
          paper's order); 6 -> the same without ja. Other lengths need explicit names.
          ``languages_assumed`` says whether the default was used.
        - ``d_mlp`` defaults to the largest neuron index in the file + 1, which is only a lower
          bound of the true width: pass it when known. ``d_mlp_inferred`` records which.

        Indices must be strictly increasing per layer (as ``identify.py`` writes them), so that
        ``to_official`` gives back exactly the same tensors.
        """
        path = Path(path)
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:
            raise LapelensError(
                f"{path} is not an official neuron mask file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
            ) from exc
        where = f"{path} is not an official neuron mask file"
        if not isinstance(obj, (list, tuple)) or not obj or not all(isinstance(e, (list, tuple)) for e in obj):
            raise LapelensError(
                f"{where}: expected a non-empty list (languages) of lists (layers) of LongTensors, got {type(obj).__name__}."
            )
        n_layers = len(obj[0])
        if n_layers == 0 or any(len(e) != n_layers for e in obj):
            raise LapelensError(
                f"{where}: its languages have {[len(e) for e in obj]} layers; all must have the same number (> 0)."
            )
        assumed = languages is None
        langs = default_official_languages(len(obj)) if assumed else tuple(languages)
        if len(langs) != len(obj):
            raise LapelensError(
                f"{path} has {len(obj)} language entries but {len(langs)} language names were given ({list(langs)})."
            )
        max_index = -1
        for k, layers in enumerate(obj):
            for i, idx in enumerate(layers):
                if (
                    not isinstance(idx, Tensor)
                    or idx.ndim != 1
                    or idx.is_floating_point()
                    or idx.is_complex()
                    or idx.dtype == torch.bool
                ):
                    raise LapelensError(f"{where}: entry [{langs[k]}][layer {i}] is not a 1-D integer tensor.")
                if idx.numel():
                    if int(idx.min()) < 0:
                        raise LapelensError(f"{where}: entry [{langs[k]}][layer {i}] has a negative neuron index.")
                    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
                        raise LapelensError(
                            f"{where}: the indices of [{langs[k]}][layer {i}] are not strictly increasing."
                        )
                    max_index = max(max_index, int(idx.max()))
        inferred = d_mlp is None
        if not inferred and int(d_mlp) < 1:
            raise LapelensError(f"d_mlp must be a positive MLP width, got {d_mlp}.")
        if inferred:
            if max_index < 0:
                raise LapelensError(
                    f"{path} selects no neuron at all, so the MLP width cannot be inferred: pass d_mlp."
                )
            d_mlp = max_index + 1
        elif max_index >= d_mlp:
            raise LapelensError(f"{path} has neuron index {max_index}, which does not fit d_mlp={d_mlp}.")
        mask = torch.zeros(len(langs), n_layers, d_mlp, dtype=torch.bool)
        for k, layers in enumerate(obj):
            for i, idx in enumerate(layers):
                mask[k, i, idx.long()] = True
        return cls(
            langs, mask, method, {"source": f"official:{path}"}, d_mlp_inferred=inferred, languages_assumed=assumed
        )


def load_neurons(path: str | Path, languages: Sequence[str] | None = None, d_mlp: int | None = None) -> LanguageNeurons:
    """A lapelens neuron folder (or its ``neurons.json``), or an official mask file (any other file:
    ``from_official``). ``languages`` and ``d_mlp`` only apply to official files (a lapelens folder
    records both)."""
    path = Path(path)
    if not path.exists():
        raise LapelensError(f"{path} does not exist: pass a lapelens neuron folder or an official .pth mask file.")
    if path.is_file():
        found = kind_of_marker(path)
        if found is None:
            return LanguageNeurons.from_official(path, languages=languages, d_mlp=d_mlp)
        if found != KIND:
            raise wrong_kind(path.parent, found, (KIND,))
        path = path.parent
    return LanguageNeurons.load(path)


class BoundNeurons(BoundSelection):
    """A ``LanguageNeurons`` checked against one model (``neurons.on(model)``)."""

    def __init__(self, neurons: LanguageNeurons, model: HookedModel):
        neuron_spec(model).check_fits(neurons.n_layers, neurons.d_mlp, f"{neurons.method} neuron set")
        self.neurons, self.model, self.languages = neurons, model, neurons.languages
        self._checked_stats: list[ActivationStats] = []

    def mask(self, lang: str | Sequence[str]) -> Bool[Tensor, "layer neuron"]:
        """``lang``'s neurons (several languages: their union)."""
        langs = [lang] if isinstance(lang, str) else list(lang)
        return self.neurons.mask[[self.neurons.lang_index(l) for l in langs]].any(dim=0)

    def deactivate(self, lang: str | Sequence[str]) -> AbstractContextManager:
        return zeroed(self.model, self.mask(lang))

    def first_layer(self, lang: str | Sequence[str]) -> int:
        return first_layer(self.mask(lang))

    def deactivate_mask(self, mask: Bool[Tensor, "layer neuron"]) -> AbstractContextManager:
        """Deactivate a mask derived from this set's masks (e.g. other languages' neurons minus the target's)."""
        return zeroed(self.model, mask)

    def steer(self, lang: str, stats: ActivationStats, scale: float | int = 1.0) -> AbstractContextManager:
        """``lapelens.steer``; the statistics are checked on first use."""
        if not any(s is stats for s in self._checked_stats):
            neuron_spec(self.model).check_fits(stats.n_layers, stats.d_mlp, "statistics")
            self._checked_stats.append(stats)
        mask = self.mask(lang)
        values = float(scale) * stats.mean_activation()[stats.lang_index(lang)]
        return set_to(self.model, mask, values.float())

    def pin_to_median(self, lang: str) -> AbstractContextManager:
        """``lapelens.pin_to_median``."""
        neurons = self.neurons
        if "median" not in neurons.values:
            raise LapelensError(
                f"The {neurons.method} neuron set has no 'median' values to pin to (it has {sorted(neurons.values) or 'none'}): "
                "use AP neurons from identify(sentences, 'ap')."
            )
        return set_to(self.model, self.mask(lang), neurons.values["median"][neurons.lang_index(lang)])


register_kind(Kind(KIND, NEURONS_META, LanguageNeurons, "`lapelens identify`", tensors=NEURONS_TENSORS))
