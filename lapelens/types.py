"""The two interfaces every experiment is written against: a hooked model and a selection.

**Axis order.** Every per-language tensor puts the language first, so that ``x[k]`` is language
k's part: ``lang layer neuron`` for what selections hold (``LanguageNeurons.mask`` and
``.values``) and for the statistics (``ActivationStats.count``, ``act_sum``, ``act_sq_sum`` and
everything derived from them, ``firing_probability`` ...; ``stats.count[k]`` is the official
per-language file's ``over_zero``), ``lang *shape`` for ``ParameterMask.masks``, ``lang *unit``
for the scores ``entropy_select`` takes, ``lang text layer d_model`` for sentence embeddings.
Only the computation of LAPE's entropy moves the language last (``stats.languages_last``), to the
layout of the official ``identify.py``, so that its sums over languages round as the script's;
it returns language first again. (The explorer's records of a list of neurons, e.g.
``NeuronSamples``, are rows of those neurons, each with its languages.) The jaxtyping
annotations name the axes on every public signature.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd


@runtime_checkable
class HookedModel(Protocol):
    """What lapelens uses of a TransformerLens model (``TransformerBridge`` in TransformerLens 4.x,
    ``HookedTransformer`` before): hook points ``blocks.{i}.mlp.hook_pre`` ..., ``hooks()``,
    ``run_with_hooks``, ``generate``, ``cfg`` and the torch module interface."""

    cfg: Any

    def hooks(self, *args: Any, **kwargs: Any) -> AbstractContextManager: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


class BoundSelection(ABC):
    """A selection checked against one model, once: its interventions trust it.

    Made by :meth:`Selection.on`; an experiment binds its selection when it starts and every
    condition of its inner loops uses the bound object.
    """

    languages: tuple[str, ...]

    @abstractmethod
    def deactivate(self, lang: str | Sequence[str]) -> AbstractContextManager:
        """The context that removes ``lang``'s units (a list: their union) from the model."""

    def first_layer(self, lang: str | Sequence[str]) -> int:
        """The lowest block ``deactivate(lang)`` changes (the number of blocks: none): a forward
        under it may start there from the unperturbed residual stream. 0 unless the selection knows."""
        return 0


class Selection(ABC):
    """What a selection method returns: units of the model per language.

    ``LanguageNeurons`` (MLP neurons, deactivated by zeroing their activation) and ``ParameterMask``
    (PV's parameter entries, deactivated by zeroing them) are the two kinds; experiments accept
    either through this interface.
    """

    languages: tuple[str, ...]
    method: str
    meta: dict
    #: What is counted: "neurons" or "parameters".
    unit: str
    #: An entropy selection's (LAPE, LAVE, PV) ``round(units * top_rate)`` and the units it found; None otherwise.
    budget: int | None
    selected: int | None

    @property
    def short_of_budget(self) -> bool:
        """An entropy selection that found fewer units than its ``top_rate`` budget."""
        return self.budget is not None and self.selected is not None and self.selected < self.budget

    @abstractmethod
    def lang_index(self, lang: str) -> int:
        """Position of ``lang`` on the language axis; a clear error if it has no set here."""

    @abstractmethod
    def count(self, lang: str) -> int:
        """Units selected for ``lang``."""

    @abstractmethod
    def per_language(self) -> "pd.DataFrame":
        """Units per language and their share of all units."""

    @abstractmethod
    def summary(self) -> str:
        """The summary tables as text."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the selection's folder (``lapelens.load`` reads it back)."""

    @abstractmethod
    def on(self, model: HookedModel) -> BoundSelection:
        """This selection checked against ``model`` (shape, parameter names): raises if it does not fit."""

    def sizes(self) -> dict[str, int]:
        """Units per language, in language order."""
        return {lang: self.count(lang) for lang in self.languages}
