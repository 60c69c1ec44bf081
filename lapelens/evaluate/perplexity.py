"""Perplexity when a language's neurons are deactivated: Tang et al., Fig. 2, 3 and 8.

Rows are what is perturbed (``"none"``, then each language whose neurons are deactivated, or
whose PV parameters are zeroed), columns the language of the held-out text. For each (row,
column) the model runs once over the column's chunks and keeps every chunk's summed next-token
NLL; everything else (perplexities, changes, bootstrap intervals, summaries) is computed from
those numbers, which are what a result saves.

- ``PPL = exp(sum of token NLLs / number of predicted tokens)`` over the chunks of a column
  (each chunk of ``pos`` tokens predicts its last ``pos - 1``); with equal-length chunks this is
  the official ``ppl.py``'s mean of per-chunk mean log-probabilities.
- change = perturbed PPL - unperturbed PPL; relative change = change / unperturbed PPL.
- 95% intervals: percentile bootstrap over chunks (seeded), resampling the *same* chunks for
  every row of a column, so the interval of a change is that of a paired difference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float64, Int
from torch import Tensor
from tqdm.auto import tqdm

from lapelens._version import __version__
from lapelens.constants import (
    EMBEDDED,
    PERTURBATION_CHUNKS,
    PERTURBATION_META,
    PERTURBATION_TABLE,
    RUN_TABLES,
    UNPERTURBED,
)
from lapelens.corpus import load_corpus
from lapelens.defaults import SEQ_LEN
from lapelens.errors import LapelensError
from lapelens.evaluate._registry import Context, experiment
from lapelens.figures.perturbation import colour_range, compare_figure, heatmap
from lapelens.methods._registry import METHODS, with_role
from lapelens.results import Result
from lapelens.resume import capture, starting_at
from lapelens.tokens import pack_chunks
from lapelens.types import HookedModel, Selection

#: Row label of the unperturbed model.
NONE = UNPERTURBED
#: Default evaluation size per language: 32 chunks of 256. A full 7 x (7 + 1) matrix is then
#: 458,752 token forward passes, about 3 minutes for the embedded model on 2 CPU cores. Changes
#: are paired (same chunks in every row), so their intervals are much tighter than the PPLs'.
DEFAULT_EVAL_TOKENS = 8_192
#: Chunks per forward pass: few large operations beat many small ones on a CPU.
DEFAULT_BATCH_SIZE = 16
DEFAULT_N_BOOT = 1000

Value = Literal["ppl", "change", "relative"]
RowContexts = Mapping[str, Callable[[], AbstractContextManager]]


# ---- the measurement -------------------------------------------------------------------------
def _check_chunks(chunks: Tensor, batch_size: int) -> None:
    if chunks.ndim != 2 or chunks.shape[1] < 2:
        raise LapelensError(f"Chunks must be token ids of shape [chunk, pos] with pos >= 2; got {tuple(chunks.shape)}.")
    if batch_size < 1:
        raise LapelensError(f"batch_size must be at least 1, got {batch_size}.")


def _nll(logits: Tensor, batch: Tensor) -> Tensor:
    """Summed next-token NLL of each row of ``batch``, float64 on the CPU."""
    # Targets shifted left; the last position predicts nothing (ignore_index), which avoids
    # copying logits[:, :-1] (the largest tensor of the pass).
    targets = batch.roll(-1, dims=1)
    targets[:, -1] = -100
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    nll = nll.view(batch.shape).double().sum(dim=1).cpu()
    if not bool(torch.isfinite(nll).all()):
        raise LapelensError(
            f"The loss is inf or NaN ({logits.dtype} logits): in float16 the activations overflow; "
            "evaluate in bfloat16 or float32."
        )
    return nll


def _logits(model: HookedModel, batch: Tensor) -> Tensor:
    return model(batch, return_type="logits", use_cache=False)


@torch.inference_mode()
def chunk_nll(
    model: HookedModel,
    chunks: Int[Tensor, "chunk pos"],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Float64[Tensor, " chunk"]:
    """Summed next-token NLL (nats) of each chunk: tokens 1..pos-1 predicted from their prefix.

    Runs under whatever interventions are active on ``model``.
    """
    _check_chunks(chunks, batch_size)
    device = next(model.parameters()).device
    return torch.cat([_nll(_logits(model, b.to(device)), b) for b in chunks.split(batch_size)])


def row_contexts(
    model: HookedModel, perturbation: Any, rows: Sequence[str] | None = None
) -> dict[str, Callable[[], AbstractContextManager]]:
    """Row label -> a factory of the context that perturbs ``model`` for that row.

    ``perturbation``: a ``Selection`` (deactivate each language's neurons, or zero each language's
    PV parameters), or such a mapping already; anything else is refused with a clear error. The selection is bound to the model here, checked
    once before any forward pass, and every row uses the bound selection.
    """
    return _rows(model, perturbation, rows)[0]


def _rows(
    model: HookedModel, perturbation: Any, rows: Sequence[str] | None = None
) -> tuple[dict[str, Callable[[], AbstractContextManager]], dict[str, int]]:
    """:func:`row_contexts`, and the first block each row perturbs (0 when not known)."""
    if isinstance(perturbation, Mapping):
        return dict(perturbation), {}
    if isinstance(perturbation, Selection):
        rows = list(perturbation.languages if rows is None else rows)
        for lang in rows:
            perturbation.lang_index(lang)
        bound = perturbation.on(model)
        return (
            {lang: (lambda lang=lang: bound.deactivate(lang)) for lang in rows},
            {lang: bound.first_layer(lang) for lang in rows},
        )
    raise LapelensError(
        f"Cannot perturb with a {type(perturbation).__name__}: pass LanguageNeurons, a ParameterMask, "
        "or a mapping from row label to a context-manager factory."
    )


def describe(perturbation: Any) -> dict:
    """Method and per-row size of a perturbation, for a result's metadata."""
    if isinstance(perturbation, Selection):
        return {"method": perturbation.method, "unit": perturbation.unit, "sizes": perturbation.sizes()}
    return {"method": "custom", "unit": None, "sizes": {}}


def evaluate_rows(
    model: HookedModel,
    contexts: RowContexts,
    chunks: Mapping[str, Int[Tensor, "chunk pos"]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    starts: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Per-chunk NLL sums for the unperturbed model and every row: a long DataFrame with columns
    ``perturbed, evaluated, chunk, nll, tokens``.

    ``starts``: the first block each row perturbs (missing: 0). A row that perturbs nothing below
    block ``l`` starts there, from the unperturbed row's residual stream (``lapelens.resume``),
    computed once per batch; a row that perturbs nothing at all takes the unperturbed losses.
    Either way its losses are those of a full forward. Rows are then evaluated batch by batch,
    entering each row's context once per batch; without any such row, row by row as before.
    """
    if not chunks:
        raise LapelensError("No evaluation text: pass at least one language's chunks.")
    if NONE in contexts:
        raise LapelensError(f"{NONE!r} is reserved for the unperturbed row; rename that row.")
    for c in chunks.values():
        _check_chunks(c, batch_size)
    n_layers = int(model.cfg.n_layers)
    starts = {row: min(int((starts or {}).get(row, 0)), n_layers) for row in contexts}
    rows = [NONE, *contexts]
    bar = tqdm(
        total=len(rows) * sum(int(c.numel()) for c in chunks.values()),
        unit="tok",
        unit_scale=True,
        desc="perplexity",
        disable=not progress,
    )
    resume = any(s > 0 for s in starts.values())
    frames = []
    for lang, c in chunks.items():
        nll = (
            _resumed(model, contexts, starts, c, batch_size, bar)
            if resume
            else _row_by_row(model, contexts, c, batch_size, bar)
        )
        frames += [
            pd.DataFrame(
                {
                    "perturbed": row,
                    "evaluated": lang,
                    "chunk": np.arange(len(c)),
                    "nll": nll[row].numpy(),
                    "tokens": c.shape[1] - 1,
                }
            )
            for row in rows
        ]
    bar.close()
    return pd.concat(frames, ignore_index=True)


@torch.inference_mode()
def _row_by_row(
    model: HookedModel, contexts: RowContexts, chunks: Tensor, batch_size: int, bar: Any
) -> dict[str, Tensor]:
    out = {NONE: chunk_nll(model, chunks, batch_size)}
    bar.update(int(chunks.numel()))
    for row, context in contexts.items():
        with context():
            out[row] = chunk_nll(model, chunks, batch_size)
        bar.update(int(chunks.numel()))
    return out


@torch.inference_mode()
def _resumed(
    model: HookedModel, contexts: RowContexts, starts: Mapping[str, int], chunks: Tensor, batch_size: int, bar: Any
) -> dict[str, Tensor]:
    n_layers = int(model.cfg.n_layers)
    needed = sorted({s for s in starts.values() if 0 < s < n_layers})
    device = next(model.parameters()).device
    parts: dict[str, list[Tensor]] = {row: [] for row in (NONE, *contexts)}
    for cpu_batch in chunks.split(batch_size):
        batch = cpu_batch.to(device)
        logits, residual = capture(model, batch, needed, return_type="logits", use_cache=False)
        parts[NONE].append(_nll(logits, batch))
        del logits
        for row, context in contexts.items():
            start = starts[row]
            if start >= n_layers:  # nothing perturbed: the unperturbed losses, exactly
                parts[row].append(parts[NONE][-1])
                continue
            with context():
                if start > 0:
                    with starting_at(model, start, residual[start]):
                        parts[row].append(_nll(_logits(model, batch), batch))
                else:
                    parts[row].append(_nll(_logits(model, batch), batch))
        bar.update(int(cpu_batch.numel()) * len(parts))
    return {row: torch.cat(p) for row, p in parts.items()}


def evaluation_chunks(
    model: HookedModel,
    corpus: str | Path = EMBEDDED,
    languages: Sequence[str] | None = None,
    tokens_per_language: int | None = DEFAULT_EVAL_TOKENS,
    seq_len: int | None = None,
    split: str = "valid",
) -> dict[str, Int[Tensor, "chunk pos"]]:
    """Held-out text of each language packed into ``seq_len`` chunks (as ``lapelens collect`` does)."""
    if seq_len is None:
        n_ctx = getattr(model.cfg, "n_ctx", None)
        seq_len = min(SEQ_LEN, n_ctx) if n_ctx else SEQ_LEN
    texts = load_corpus(corpus, split=split, languages=languages)
    return {lang: pack_chunks(model.tokenizer, docs, seq_len, tokens_per_language) for lang, docs in texts.items()}


def perturbation_matrix(
    model: HookedModel,
    perturbation: Any,
    chunks: Mapping[str, Int[Tensor, "chunk pos"]],
    *,
    rows: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = True,
    meta: dict | None = None,
) -> "PerturbationResult":
    """The PPL matrix: rows = ``"none"`` + each language whose neurons (or PV parameters) are
    perturbed, columns = the languages of ``chunks`` (held-out text, see :func:`evaluation_chunks`).

    ``perturbation`` is a ``LanguageNeurons`` (deactivated), a ``ParameterMask`` (zeroed), or a
    mapping ``row label -> context factory``; ``rows`` restricts its languages.
    """
    contexts, starts = _rows(model, perturbation, rows)
    start = time.perf_counter()
    table = evaluate_rows(model, contexts, chunks, batch_size, progress, starts)
    seconds = time.perf_counter() - start
    n_tokens = sum(int(c.numel()) for c in chunks.values()) * (len(contexts) + 1)
    info = {
        "lapelens_version": __version__,
        "model": str(getattr(model.cfg, "model_name", "?")),
        **describe(perturbation),
        "seq_len": sorted({int(c.shape[1]) for c in chunks.values()}),
        "chunks": {lang: int(len(c)) for lang, c in chunks.items()},
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tokens / seconds, 1) if seconds > 0 else None,
        **(meta or {}),
    }
    return PerturbationResult(table, info, n_boot=n_boot, seed=seed)


# ---- the result ------------------------------------------------------------------------------
@dataclass
class PerturbationResult(Result):
    """Per-chunk NLL sums of every (perturbed, evaluated) pair, and the tables derived from them.

    ``chunks`` has one row per (perturbed, evaluated, chunk) with the chunk's summed ``nll`` and
    number of predicted ``tokens``. Tables are DataFrames with index ``perturbed`` (``"none"``
    first) and columns ``evaluated``.
    """

    chunks: pd.DataFrame
    meta: dict = field(default_factory=dict)
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0

    kind: ClassVar[str] = "perturbation"
    marker: ClassVar[str] = PERTURBATION_META
    make: ClassVar[str] = "`lapelens perturb` (or the reproduce stage)"
    required: ClassVar[tuple[str, ...]] = (PERTURBATION_CHUNKS,)
    files: ClassVar[tuple[str, ...]] = (PERTURBATION_CHUNKS, PERTURBATION_TABLE)

    def __post_init__(self) -> None:
        need = {"perturbed", "evaluated", "chunk", "nll", "tokens"}
        if not need <= set(self.chunks.columns):
            raise LapelensError(f"A perturbation result needs columns {sorted(need)}; got {list(self.chunks.columns)}.")
        if NONE not in set(self.chunks["perturbed"]):
            raise LapelensError(f"A perturbation result needs the unperturbed row {NONE!r}.")
        counts = self.chunks.groupby(["perturbed", "evaluated"]).size().unstack()
        if counts.isna().any().any() or not (counts.nunique(axis=0) == 1).all():
            raise LapelensError("Every perturbed row must cover the same chunks of every evaluated language.")

    @property
    def method(self) -> str:
        """The selection method whose units were perturbed (``"custom"`` for hand-made contexts)."""
        return str(self.meta.get("method") or "custom")

    @property
    def unit(self) -> str:
        """What each row perturbs: "neurons", "parameters", or "units" when not recorded."""
        return str(self.meta.get("unit") or "units")

    @property
    def rows(self) -> list[str]:
        return list(dict.fromkeys(self.chunks["perturbed"]))

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(self.chunks["evaluated"]))

    def _matrix(self, lang: str) -> tuple[np.ndarray, np.ndarray]:
        """NLL sums [row, chunk] and tokens [chunk] of one evaluated language."""
        sub = self.chunks[self.chunks["evaluated"] == lang]
        wide = sub.pivot(index="perturbed", columns="chunk", values="nll").loc[self.rows]
        tokens = sub[sub["perturbed"] == NONE].set_index("chunk")["tokens"].loc[wide.columns]
        return wide.to_numpy(np.float64), tokens.to_numpy(np.float64)

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            values, index=pd.Index(self.rows, name="perturbed"), columns=pd.Index(self.columns, name="evaluated")
        )

    @cached_property
    def ppl(self) -> pd.DataFrame:
        cols = []
        for lang in self.columns:
            nll, tok = self._matrix(lang)
            cols.append(np.exp(nll.sum(axis=1) / tok.sum()))
        return self._frame(np.stack(cols, axis=1))

    @property
    def change(self) -> pd.DataFrame:
        """Perturbed PPL minus unperturbed PPL."""
        return self.ppl - self.ppl.loc[NONE]

    @property
    def relative(self) -> pd.DataFrame:
        """(perturbed - unperturbed) / unperturbed PPL."""
        return self.change / self.ppl.loc[NONE]

    def value(self, kind: Value) -> pd.DataFrame:
        if kind not in ("ppl", "change", "relative"):
            raise LapelensError(f"Unknown value {kind!r}: use 'ppl', 'change' or 'relative'.")
        return getattr(self, kind)

    @cached_property
    def _bootstrap(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        rows = self.rows
        base = rows.index(NONE)
        lows = {k: [] for k in ("ppl", "change", "relative")}
        highs = {k: [] for k in lows}
        for lang in self.columns:
            nll, tok = self._matrix(lang)
            n = nll.shape[1]
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=self.n_boot).astype(np.float64)  # [boot, chunk]
            ppl = np.exp((nll @ weights.T) / (weights @ tok))  # [row, boot]
            draws = {"ppl": ppl, "change": ppl - ppl[base], "relative": (ppl - ppl[base]) / ppl[base]}
            for k, d in draws.items():
                lo, hi = np.percentile(d, [2.5, 97.5], axis=1)
                lows[k].append(lo)
                highs[k].append(hi)
        return {k: (np.stack(lows[k], axis=1), np.stack(highs[k], axis=1)) for k in lows}

    def interval(self, kind: Value = "relative") -> tuple[pd.DataFrame, pd.DataFrame]:
        """(low, high) of the 95% percentile bootstrap interval over chunks."""
        self.value(kind)
        lo, hi = self._bootstrap[kind]
        return self._frame(lo), self._frame(hi)

    def table(self) -> pd.DataFrame:
        """Everything in long form: one row per (perturbed, evaluated), point values and intervals."""
        parts = {}
        for kind in ("ppl", "change", "relative"):
            lo, hi = self.interval(kind)
            parts[kind] = self.value(kind).stack()
            parts[f"{kind}_low"] = lo.stack()
            parts[f"{kind}_high"] = hi.stack()
        return pd.DataFrame(parts)

    # ---- summaries (the numbers the paper's claims rest on) -----------------------------------
    def _perturbed(self) -> pd.DataFrame:
        return self.relative.drop(index=NONE)

    def diagonal_languages(self) -> list[str]:
        return [l for l in self.columns if l in self.rows and l != NONE]

    def diagonal_mean_relative_increase(self) -> float:
        """Mean over languages of the relative PPL change of a language when its own neurons are off."""
        rel = self.relative
        langs = self.diagonal_languages()
        return float(np.mean([rel.loc[l, l] for l in langs])) if langs else float("nan")

    def diagonal_largest_in_column(self) -> int:
        """Number of evaluated languages whose PPL rises most when their own neurons are off
        (the diagonal entry is the largest of its column among the perturbed rows)."""
        rel = self._perturbed()
        return int(sum(rel.loc[l, l] >= rel[l].max() for l in self.diagonal_languages()))

    def offdiagonal_mean_relative_increase(self) -> float:
        rel = self._perturbed()
        vals = [rel.loc[r, c] for r in rel.index for c in rel.columns if r != c and r in self.columns]
        return float(np.mean(vals)) if vals else float("nan")

    def diagonal_offdiagonal_ratio(self) -> float:
        """Mean diagonal relative change / mean off-diagonal relative change (+inf if the
        off-diagonal mean is <= 0 while the diagonal's is > 0)."""
        diag, off = self.diagonal_mean_relative_increase(), self.offdiagonal_mean_relative_increase()
        if off <= 0:
            return float("inf") if diag > 0 else float("nan")
        return diag / off

    def summary(self) -> pd.Series:
        return pd.Series(
            {
                "diag_mean_relative": self.diagonal_mean_relative_increase(),
                "offdiag_mean_relative": self.offdiagonal_mean_relative_increase(),
                "diag_offdiag_ratio": self.diagonal_offdiagonal_ratio(),
                "diag_largest_in_column": self.diagonal_largest_in_column(),
                "languages": len(self.diagonal_languages()),
            },
            name=self.meta.get("method", "?"),
        )

    # ---- figures -------------------------------------------------------------------------------
    def figure(self, value: Value = "relative", scale: tuple[float, float] | None = None) -> Any:
        """Fig. 2: heatmap of the perturbed rows (relative change in %, absolute change, or PPL);
        ``scale``: a colour range shared with other results (``lapelens.figures.perturbation``)."""
        return heatmap(self, value, scale)

    # ---- persistence: ``chunks.csv`` (the raw numbers), ``table.csv`` (all derived values) and
    # ``perturbation.json`` (settings and provenance) --------------------------------------------
    def _tables(self) -> dict:
        return {
            PERTURBATION_CHUNKS: (self.chunks, {"index": False, "float_format": "%.17g"}),
            PERTURBATION_TABLE: (self.table(), {"float_format": "%.10g"}),
        }

    def _meta(self) -> dict:
        return {
            **self.meta,
            "rows": self.rows,
            "columns": self.columns,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "summary": self.summary().to_dict(),
        }

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "PerturbationResult":
        redo = f"make it again with {cls.make}"
        chunks = pd.read_csv(
            folder / PERTURBATION_CHUNKS, dtype={"perturbed": str, "evaluated": str}, keep_default_na=False
        )
        missing = [c for c in ("perturbed", "evaluated", "chunk", "nll", "tokens") if c not in chunks.columns]
        if missing or chunks.empty or NONE not in set(chunks["perturbed"]):
            raise LapelensError(
                f"{folder / PERTURBATION_CHUNKS} is corrupt ({'no column ' + ', '.join(missing) if missing else 'no rows of the unperturbed model'}); {redo}."
            )
        numbers = chunks[["nll", "tokens"]]
        if not all(pd.api.types.is_numeric_dtype(t) for t in numbers.dtypes) or numbers.isna().any().any():
            raise LapelensError(
                f"{folder / PERTURBATION_CHUNKS} is corrupt (missing or non-numeric nll/tokens); {redo}."
            )
        if chunks.duplicated(["perturbed", "evaluated", "chunk"]).any():
            raise LapelensError(f"{folder / PERTURBATION_CHUNKS} is corrupt (a chunk appears twice); {redo}.")
        for key in ("rows", "columns", "summary"):
            meta.pop(key, None)
        return cls(chunks, meta, n_boot=meta.pop("n_boot", DEFAULT_N_BOOT), seed=meta.pop("seed", 0))


def compare(results: Mapping[str, PerturbationResult], reference: str | None = "random") -> pd.DataFrame:
    """The summaries of several methods side by side (one row per method).

    With a ``reference`` among them (random neurons of the same sizes), ``ratio_vs_reference`` is
    each method's diagonal/off-diagonal ratio divided by the reference's.
    """
    table = pd.DataFrame({name: r.summary() for name, r in results.items()}).T
    table.index.name = "method"
    if reference is not None and reference in results:
        table["ratio_vs_reference"] = table["diag_offdiag_ratio"] / table.loc[reference, "diag_offdiag_ratio"]
    return table


# ---- the experiment: one matrix per method, and their comparison ------------------------------------
def _comparison(results: Mapping[str, PerturbationResult]) -> pd.DataFrame:
    """``compare`` against the run's baseline method (random neurons), if it ran."""
    return compare(results, reference=with_role("baseline", [m for m in results if m in METHODS]))


def _figures(results: Mapping[str, PerturbationResult]) -> dict[str, Any]:
    """Fig. 2 per method and Fig. 3, all on one colour range: the run's methods side by side."""
    scale = colour_range(list(results.values()))
    return {
        **{f"fig2_perturb_{m}": r.figure(scale=scale) for m, r in results.items()},
        "fig3_perturb_methods": compare_figure(results, scale=scale),
    }


@experiment(
    "perturb",
    result=PerturbationResult,
    reads=("chunks",),
    per_method=True,
    record=lambda cfg: {"seed": cfg.seed},
    figures=_figures,
    tables=lambda results: {RUN_TABLES["perturbation_summary"]: _comparison(results)},
    summary=lambda results: {"perturbation": json.loads(_comparison(results).to_json(orient="index"))},
    exports={
        "evaluation_chunks": evaluation_chunks,
        "perturbation_matrix": perturbation_matrix,
        "compare_perturbations": compare,
    },
    paper="Fig. 2, 3, 8",
    order=20,
)
def perturbation_stage(ctx: Context, method: str) -> PerturbationResult:
    """The PPL-change matrix of one method's selection on the held-out chunks."""
    return perturbation_matrix(ctx.model, ctx.selections[method], ctx.chunks, seed=ctx.cfg.seed)
