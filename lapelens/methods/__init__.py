"""Neuron-selection methods behind one registry: ``identify(source, method, **options)``.

Every module of this package registers its methods (``lapelens.methods._registry.register``) when
it is imported; all of them are imported here, so a new method is one new file.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from lapelens.errors import LapelensError
from lapelens.methods._registry import METHODS, Method, Option, OptionHelp, get, register, unregister, with_role
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats, SentenceActivations

# The submodules stay reachable as attributes (``lapelens.methods.lape.entropy``): import the
# modules, not their same-named functions.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        import_module(f"{__name__}.{_info.name}")

from lapelens.methods.ap import select_sentences  # noqa: E402
from lapelens.parameters import ParameterMask  # noqa: E402

#: What each kind of input may be, by ``Method.source``.
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "stats": (ActivationStats,),
    "sentences": (SentenceActivations,),
    "models": (str, Path, Mapping),
}


def _restrict(source: Any, languages: Sequence[str]) -> Any:
    if isinstance(source, ActivationStats):
        return source.select(languages)
    if isinstance(source, SentenceActivations):
        return select_sentences(source, languages)
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
    lape, lap, lave and random (a method with a ``reference``, like random, also takes a
    ``LanguageNeurons`` as its reference); ``SentenceActivations`` for ap; the base model (folder
    or state dict) for pv, with ``tuned={lang: folder}``. ``languages`` restricts (and orders) the
    languages first: note that LAPE's thresholds are quantiles over all languages present, so a
    subset changes them. ``options`` are the method's keyword options (``METHODS[method].options``).
    """
    spec = get(method)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise LapelensError(
            f"Method {method!r} has no option {', '.join(unknown)}; its options are {sorted(spec.options) or 'none'}."
        )
    accepted = _ACCEPTS[spec.source] + ((LanguageNeurons,) if spec.reference else ())
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
        if spec.reference and options.get("reference") is not None:
            options["reference"] = options["reference"].subset(languages)
    return spec.function(source, **options)


__all__ = [
    "METHODS",
    "Method",
    "Option",
    "OptionHelp",
    "ParameterMask",
    "identify",
    "register",
    "unregister",
    "with_role",
]
