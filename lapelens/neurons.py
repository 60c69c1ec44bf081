"""``LanguageNeurons``: which neurons belong to which language (a boolean mask per language)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from lapelens.errors import LapelensError


@dataclass
class LanguageNeurons:
    """The neurons selected for each language.

    ``mask[k, i, j]`` is True when neuron j of layer i belongs to ``languages[k]``. A neuron may
    belong to several languages (LAPE assigns it to every language whose firing probability
    passes the threshold); a language may have no neurons at all and still keeps its slot.
    ``values`` holds optional per-neuron numbers that interventions use (e.g. ``"median"`` for
    Kojima et al.'s pinning), each of the same shape as ``mask``.
    """

    languages: tuple[str, ...]
    mask: Bool[Tensor, "lang layer neuron"]
    method: str = "unknown"
    meta: dict = field(default_factory=dict)
    values: dict[str, Float[Tensor, "lang layer neuron"]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        if self.mask.dtype != torch.bool or self.mask.ndim != 3 or self.mask.shape[0] != len(self.languages):
            raise LapelensError(
                f"LanguageNeurons.mask must be a bool tensor of shape (lang={len(self.languages)}, layer, neuron); "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}."
            )
        for name, v in self.values.items():
            if v.shape != self.mask.shape:
                raise LapelensError(f"LanguageNeurons.values[{name!r}] has shape {tuple(v.shape)}, expected {tuple(self.mask.shape)}.")

    @property
    def n_layers(self) -> int:
        return self.mask.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.mask.shape[2]

    def lang_index(self, lang: str) -> int:
        if lang not in self.languages:
            raise LapelensError(f"Language {lang!r} has no neuron set here (languages: {list(self.languages)}).")
        return self.languages.index(lang)

    def layer_indices(self, lang: str) -> list[Int64[Tensor, " idx"]]:
        """Sorted neuron indices per layer for one language (the official mask layout)."""
        k = self.lang_index(lang)
        return [torch.nonzero(self.mask[k, i], as_tuple=False).flatten() for i in range(self.n_layers)]

    def count(self, lang: str) -> int:
        return int(self.mask[self.lang_index(lang)].sum())

    def subset(self, languages: Sequence[str]) -> "LanguageNeurons":
        idx = [self.lang_index(l) for l in languages]
        return LanguageNeurons(tuple(languages), self.mask[idx].clone(), self.method, dict(self.meta),
                               {k: v[idx].clone() for k, v in self.values.items()})
