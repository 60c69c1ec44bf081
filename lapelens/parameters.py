"""``ParameterMask``: parameter entries per language (what PV selects), and how it binds to a model.

Per HF parameter name, a bool tensor ``lang x *shape``; deactivating a language zeroes its
entries inside a ``with`` block and restores them bit for bit on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from lapelens.artifacts import Kind, load_folder, register_kind, save_folder
from lapelens.constants import PARAMS_META, PARAMS_TENSORS
from lapelens.errors import LapelensError
from lapelens.types import BoundSelection, HookedModel, Selection

#: Artifact kind (registered below, with its class).
KIND = "parameter_mask"
#: Keys of the JSON file that are attributes of the object, not free-form ``meta``.
_RESERVED = ("lapelens_version", "method", "languages", "budget", "selected")


@dataclass
class ParameterMask(Selection):
    """Parameters selected for each language: ``masks[name][k]`` is a bool tensor shaped like
    the HF parameter ``name`` (e.g. ``"model.layers.0.mlp.gate_proj.weight"``), True where the
    entry belongs to ``languages[k]``. Parameters that PV did not consider have no key."""

    languages: tuple[str, ...]
    masks: dict[str, Bool[Tensor, " lang *shape"]]
    method: str = "pv"
    meta: dict = field(default_factory=dict)
    budget: int | None = None
    """Parameters the entropy selection was asked for: ``round(entries * top_rate)``."""
    selected: int | None = None
    """Parameters it found (fewer than ``budget`` when too few pass the filter)."""

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        for name, m in self.masks.items():
            if m.dtype != torch.bool or m.ndim < 1 or m.shape[0] != len(self.languages):
                raise LapelensError(
                    f"ParameterMask.masks[{name!r}] must be a bool tensor (lang={len(self.languages)}, *shape); "
                    f"got {m.dtype} {tuple(m.shape)}."
                )

    #: What the selection counts (``Selection.unit``).
    unit: ClassVar[str] = "parameters"

    def on(self, model: HookedModel) -> BoundSelection:
        """This selection checked against ``model`` once; its interventions then trust it."""
        return BoundParameters(self, model)

    def lang_index(self, lang: str) -> int:
        if lang not in self.languages:
            raise LapelensError(f"Language {lang!r} has no parameter set here (languages: {list(self.languages)}).")
        return self.languages.index(lang)

    def count(self, lang: str) -> int:
        k = self.lang_index(lang)
        return int(sum(int(m[k].sum()) for m in self.masks.values()))

    def per_language(self) -> pd.DataFrame:
        """Selected parameters per language and their share of the parameters considered."""
        total = sum(m[0].numel() for m in self.masks.values())
        counts = [self.count(l) for l in self.languages]
        df = pd.DataFrame(
            {"parameters": counts, "share": [c / total if total else float("nan") for c in counts]},
            index=pd.Index(self.languages, name="language"),
        )
        df.columns.name = "summary"
        return df

    def per_tensor(self) -> pd.DataFrame:
        """Selected entries per parameter tensor (rows) and language (columns)."""
        rows = {name: [int(m[k].sum()) for k in range(len(self.languages))] for name, m in self.masks.items()}
        return pd.DataFrame.from_dict(
            rows, orient="index", columns=pd.Index(self.languages, name="language")
        ).rename_axis("parameter")

    def summary(self) -> str:
        head = (
            f"method: {self.method}   model: {self.meta.get('model') or '?'}   languages: {', '.join(self.languages)}"
        )
        return "\n\n".join(
            [
                head,
                "Parameters per language:\n" + self.per_language().to_string(),
                "Parameters per tensor:\n" + self.per_tensor().to_string(),
            ]
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {
            "method": self.method,
            "languages": list(self.languages),
            "budget": self.budget,
            "selected": self.selected,
            **{k: v for k, v in self.meta.items() if k not in _RESERVED},
        }
        return save_folder(path, KIND, self.masks, meta)

    @classmethod
    def load(cls, path: str | Path) -> "ParameterMask":
        path = Path(path)
        meta, masks = load_folder(
            path, KIND, f"{path} is not a lapelens parameter-mask folder (expected {PARAMS_TENSORS} and {PARAMS_META})."
        )
        try:
            languages = tuple(meta.pop("languages"))
        except (KeyError, TypeError) as exc:
            raise LapelensError(
                f"{path} is corrupt ({type(exc).__name__}: {exc}); run `lapelens identify --method pv` again."
            ) from exc
        meta.pop("lapelens_version", None)
        return cls(
            languages, masks, meta.pop("method", "pv"), meta, meta.pop("budget", None), meta.pop("selected", None)
        )


def parameters_of(model: HookedModel, masks: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``(parameter, mask)`` for every ``{HF parameter name: bool mask}`` of ``model.original_model``,
    each checked: the parameter exists and has the mask's shape."""
    hf = getattr(model, "original_model", model)
    out = []
    for name, mask in masks.items():
        try:
            param = hf.get_parameter(name)
        except AttributeError:
            raise LapelensError(
                f"The model has no parameter {name!r}: the parameter mask was made for another architecture."
            ) from None
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(param.shape):
            raise LapelensError(
                f"The mask for {name!r} is {mask.dtype} {tuple(mask.shape)}, but the parameter is {tuple(param.shape)}: "
                "the parameter mask was made for a model of another size."
            )
        out.append((param, mask.to(param.device)))
    return out


@contextmanager
def zeroed_entries(targets: Sequence[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Zero ``param[mask]`` for each (parameter, mask) pair, already checked; restore them on exit."""
    saved: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for param, mask in targets:
                saved.append((param, mask, param[mask].clone()))
                param.masked_fill_(mask, 0)
        yield
    finally:
        with torch.no_grad():
            for param, mask, old in reversed(saved):  # reversed: a parameter listed twice ends as it began
                param[mask] = old


class BoundParameters(BoundSelection):
    """A ``ParameterMask`` checked against one model (``masks.on(model)``): every parameter it names
    is found and has the mask's shape."""

    def __init__(self, masks: ParameterMask, model: HookedModel):
        self.masks, self.model, self.languages = masks, model, masks.languages
        per_language = {name: m[0] for name, m in masks.masks.items()}
        self._params = [param for param, _ in parameters_of(model, per_language)]

    def deactivate(self, lang: str | Sequence[str]) -> AbstractContextManager:
        langs = [lang] if isinstance(lang, str) else list(lang)
        idx = [self.masks.lang_index(l) for l in langs]
        return zeroed_entries(
            [(param, m[idx].any(dim=0).to(param.device)) for param, m in zip(self._params, self.masks.masks.values())]
        )


register_kind(Kind(KIND, PARAMS_META, ParameterMask, "`lapelens identify --method pv`", tensors=PARAMS_TENSORS))
