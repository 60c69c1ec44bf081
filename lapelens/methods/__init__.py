"""Neuron-selection methods behind one registry: ``identify(source, method, **options)``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from lapelens.errors import LapelensError
# The submodules stay reachable as attributes (``lapelens.methods.lape.entropy``): import the
# modules here, not their same-named functions.
from lapelens.methods import ap, lap, lape, pv, rs
from lapelens.methods.pv import ParameterMask
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats, SentenceActivations

#: What a method reads: token statistics, per-sentence activations, or model weights.
Source = Literal["stats", "sentences", "models"]


@dataclass(frozen=True)
class Method:
    """One selection method: its function, what it reads and returns, and its options."""

    name: str
    function: Callable[..., Any]
    source: Source
    summary: str

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options and their defaults (the paper's), read off the function's signature."""
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(self.function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lape", lape.lape, "stats", "Language activation probability entropy (Tang et al., 2024)."),
        Method("lap", lap.lap, "stats", "Firing probability above a threshold on a language (Tang et al. §3.1)."),
        Method("lave", lape.lave, "stats", "LAPE on mean activation values (Tang et al. §3.1)."),
        Method("random", rs.random_neurons, "stats", "Random neurons, as many per language as a reference set."),
        Method("ap", ap.ap, "sentences", "Top/bottom-k average precision of sentence-mean activations (Kojima et al., 2024)."),
        Method("pv", pv.pv, "models", "Parameter variation after per-language tuning (Tang et al. §3.1); returns a ParameterMask."),
    )
}


def _restrict(source: Any, languages: Sequence[str]) -> Any:
    if isinstance(source, ActivationStats):
        return source.select(languages)
    if isinstance(source, SentenceActivations):
        return ap.select_sentences(source, languages)
    if isinstance(source, LanguageNeurons):
        return source.subset(languages)
    return source


def identify(
    source: ActivationStats | SentenceActivations | LanguageNeurons | str | Path | Mapping,
    method: str = "lape",
    *,
    languages: Sequence[str] | None = None,
    **options: Any,
) -> LanguageNeurons | ParameterMask:
    """Select language-specific neurons (or parameters, for PV) with a registered method.

    ``source`` is what the method reads (``METHODS[method].source``): ``ActivationStats`` for
    lape, lap, lave and random (random also takes a ``LanguageNeurons`` as its reference);
    ``SentenceActivations`` for ap; the base model (folder or state dict) for pv, with
    ``tuned={lang: folder}``. ``languages`` restricts (and orders) the languages first: note
    that LAPE's thresholds are quantiles over all languages present, so a subset changes them.
    ``options`` are the method's keyword options (``METHODS[method].options``).
    """
    if method not in METHODS:
        raise LapelensError(f"Unknown method {method!r}: choose one of {sorted(METHODS)}.")
    spec = METHODS[method]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise LapelensError(
            f"Method {method!r} has no option {', '.join(unknown)}; its options are {sorted(spec.options) or 'none'}."
        )
    accepted = {
        "stats": (ActivationStats, LanguageNeurons) if method == "random" else (ActivationStats,),
        "sentences": (SentenceActivations,),
        "models": (str, Path, Mapping),
    }[spec.source]
    if not isinstance(source, accepted):
        raise LapelensError(
            f"Method {method!r} reads {' or '.join(t.__name__ for t in accepted)}, got {type(source).__name__}."
        )
    if languages is not None:
        languages = tuple(languages)
        if spec.source == "models":
            tuned = options.get("tuned") or {}
            missing = [l for l in languages if l not in tuned]
            if missing:
                raise LapelensError(f"No tuned model for {missing} (tuned: {list(tuned)}).")
            options["tuned"] = {l: tuned[l] for l in languages}
        else:
            source = _restrict(source, languages)
        if method == "random" and options.get("reference") is not None:
            options["reference"] = options["reference"].subset(languages)
    return spec.function(source, **options)


__all__ = ["METHODS", "Method", "ParameterMask", "identify"]
