"""Selection-ratio sweep (Tang et al., Fig. 4): PPL on every language while more and more of one
language's neurons are deactivated.

Definition used here. At ratio r, the neurons are those LAPE selects with ``top_rate = r``: rank
every neuron of the model by its LAPE entropy (after the same filter), keep the ``r`` share of
the model's neurons with the lowest entropy, and deactivate those of them assigned to the
target language. At ``r = 0.01`` this is exactly the paper's (default) set for that language;
the sets grow with r and contain each other (the ranking does not depend on r). So "ratio" is
the share of *all* the model's neurons that is selected, of which the target language gets its
part; ``n_neurons`` reports how many are actually deactivated. Past some ratio no more neurons
pass LAPE's filter for the language and the set stops growing (``saturated`` in the result).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from lapelens.constants import SWEEP_META, SWEEP_TABLE
from lapelens.errors import LapelensError
from lapelens.evaluate._registry import Context, Setting, experiment
from lapelens.evaluate.perplexity import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_N_BOOT,
    NONE,
    PerturbationResult,
    Value,
    evaluate_rows,
)
from lapelens.figures.sweep import sweep_figure
from lapelens.methods import identify
from lapelens.methods._registry import sweep_methods
from lapelens.neurons import LanguageNeurons
from lapelens.results import Result
from lapelens.stats import ActivationStats
from lapelens.types import HookedModel

DEFAULT_RATIOS = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10)


def _label(ratio: float) -> str:
    return NONE if ratio == 0 else f"{ratio:g}"


def sweep_masks(
    stats: ActivationStats,
    target: str,
    ratios: Sequence[float | int] = DEFAULT_RATIOS,
    method: str = "lape",
    **options: Any,
) -> tuple[dict[float, Tensor], dict[float, bool]]:
    """``{ratio: bool (layer, neuron) mask of target's neurons}`` and whether each selection was
    short of its budget (fewer neurons pass the filter than the ratio asks for)."""
    if method not in sweep_methods():
        raise LapelensError(f"The sweep varies top_rate, which only {list(sweep_methods())} have; got {method!r}.")
    stats.lang_index(target)
    ratios = sorted({float(r) for r in ratios})
    if any(not 0 <= r <= 1 for r in ratios):
        raise LapelensError(f"Ratios are shares of the model's neurons, in [0, 1]; got {ratios}.")
    masks, short = {}, {}
    for r in ratios:
        if r == 0:
            masks[r], short[r] = torch.zeros(stats.n_layers, stats.d_mlp, dtype=torch.bool), False
            continue
        with warnings.catch_warnings():  # a selection short of its budget is recorded, not warned
            warnings.simplefilter("ignore", UserWarning)
            neurons = identify(stats, method, top_rate=r, **options)
        masks[r] = neurons.mask[neurons.lang_index(target)]
        short[r] = neurons.short_of_budget
    return masks, short


@dataclass
class SweepResult(Result):
    """PPL of every language (columns) per ratio (rows) with the target's top neurons deactivated."""

    target: str
    ratios: tuple[float, ...]
    n_neurons: tuple[int, ...]
    saturated: tuple[bool, ...]
    matrix: PerturbationResult
    meta: dict = field(default_factory=dict)

    kind: ClassVar[str] = "sweep"
    marker: ClassVar[str] = SWEEP_META
    make: ClassVar[str] = "`lapelens sweep`"
    contains: ClassVar[tuple[str, ...]] = (PerturbationResult.kind,)
    files: ClassVar[tuple[str, ...]] = (SWEEP_TABLE,)

    def _by_ratio(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.loc[[_label(r) for r in self.ratios]]
        out.index = pd.Index(self.ratios, name="ratio")
        return out

    def value(self, kind: Value = "relative") -> pd.DataFrame:
        """Ratio x evaluated language: ``"ppl"``, ``"change"`` or ``"relative"`` change."""
        return self._by_ratio(self.matrix.value(kind))

    def table(self) -> pd.DataFrame:
        """Relative PPL change per ratio and language, with the number of deactivated neurons."""
        out = self.value("relative").copy()
        out.insert(0, "n_neurons", list(self.n_neurons))
        return out

    def interval(self, value: Value = "relative") -> tuple[pd.DataFrame, pd.DataFrame]:
        """(low, high) of the 95% paired-bootstrap interval, ratio x evaluated language."""
        low, high = self.matrix.interval(value)
        return self._by_ratio(low), self._by_ratio(high)

    def figure(self, value: Value = "relative") -> Any:
        """Fig. 4 (``lapelens.figures.sweep``): signed-log y axis, the selected rate marked."""
        return sweep_figure(self, value)

    # ---- persistence: the matrix's files, ``sweep.csv`` (the table) and ``sweep.json`` -----------
    def _write(self, tmp: Path) -> None:
        self.matrix.save(tmp)
        self.table().to_csv(tmp / SWEEP_TABLE, float_format="%.10g")

    def _meta(self) -> dict:
        return {
            **self.meta,
            "target": self.target,
            "ratios": list(self.ratios),
            "n_neurons": list(self.n_neurons),
            "saturated": list(self.saturated),
        }

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "SweepResult":
        matrix = PerturbationResult.load(folder)
        return cls(
            meta.pop("target"),
            tuple(meta.pop("ratios")),
            tuple(meta.pop("n_neurons")),
            tuple(meta.pop("saturated")),
            matrix,
            meta,
        )


def selection_ratio_sweep(
    model: HookedModel,
    stats: ActivationStats,
    target: str,
    chunks: Mapping[str, Int[Tensor, "chunk pos"]],
    *,
    ratios: Sequence[float | int] = DEFAULT_RATIOS,
    method: str = "lape",
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = True,
    selected_rate: float | None = None,
    **options: Any,
) -> SweepResult:
    """PPL on every language of ``chunks`` as the ratio of ``target``'s top neurons grows
    (see the module docstring for the definition). ``options`` go to the selection method.
    ``selected_rate``: the ``top_rate`` the method's own selection uses (the run's), recorded so
    that Fig. 4 marks it."""
    masks, short = sweep_masks(stats, target, ratios, method, **options)
    # One neuron set whose "languages" are the ratios, bound once: every row trusts the check.
    rows = [r for r in masks if r > 0]
    by_ratio = (
        LanguageNeurons(tuple(_label(r) for r in rows), torch.stack([masks[r] for r in rows]), method) if rows else None
    )
    bound = by_ratio.on(model) if by_ratio is not None else None
    contexts = {_label(r): (lambda r=r: bound.deactivate(_label(r))) for r in rows}
    starts = {_label(r): bound.first_layer(_label(r)) for r in rows}
    table = evaluate_rows(model, contexts, chunks, batch_size, progress, starts)
    meta = {
        "model": str(getattr(model.cfg, "model_name", "?")),
        "method": method,
        "options": options,
        "seq_len": sorted({int(c.shape[1]) for c in chunks.values()}),
        "chunks": {lang: int(len(c)) for lang, c in chunks.items()},
    }
    matrix = PerturbationResult(table, {**meta, "unit": "neurons"}, n_boot=n_boot, seed=seed)
    rs = tuple(masks)
    return SweepResult(
        target,
        rs,
        tuple(int(masks[r].sum()) for r in rs),
        tuple(short[r] for r in rs),
        matrix,
        {**meta, "selected_rate": selected_rate},
    )


# ---- the experiment ---------------------------------------------------------------------------------
def _default_target(cfg: Any) -> str:
    return "fr" if "fr" in cfg.languages else (cfg.languages[1] if len(cfg.languages) > 1 else "none")


def _check_target(value: str, name: str, cfg: Any) -> None:
    if value != "none" and value not in cfg.languages:
        raise LapelensError(
            f"{name} {value} is not among --languages {','.join(cfg.languages)}: "
            "pick one of them, or 'none' to skip the sweep."
        )


SWEEP_TARGET = Setting(
    "sweep_target",
    None,
    "Language whose top neurons the selection-ratio sweep deactivates; default: fr (the paper's) "
    "if among the languages, else the second language; 'none' skips the sweep.",
    type=str,
    check=_check_target,
    resolve=_default_target,
)


@experiment(
    "sweep",
    result=SweepResult,
    reads=("stats", "chunks"),
    settings=(SWEEP_TARGET,),
    record=lambda cfg: {"target": cfg.sweep_target, "seed": cfg.seed, "selected_rate": cfg.top_rate},
    runs_if=lambda cfg: cfg.sweep_target != "none",
    figure="fig4_sweep",
    exports={"selection_ratio_sweep": selection_ratio_sweep},
    paper="Fig. 4",
    order=30,
)
def sweep_stage(ctx: Context) -> SweepResult:
    """LAPE's selection-ratio sweep for the target language, on the held-out chunks."""
    return selection_ratio_sweep(
        ctx.model, ctx.stats, ctx.cfg.sweep_target, ctx.chunks, seed=ctx.cfg.seed, selected_rate=ctx.cfg.top_rate
    )
