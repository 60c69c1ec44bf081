"""The method registry: each selection method declares itself here, once, in its own module.

Everything that lists methods (``identify``, ``lapelens identify``'s flags, the pipeline's stages,
the sweep's choices, the explorer) reads ``METHODS``; nothing else names a method. A new method is
one new module in ``lapelens/methods/`` (imported by the package, so it registers itself)::

    @register("top-firing", source="stats", summary="The most-firing neurons of each language.",
              options={"top_rate": OptionHelp("share of the neurons kept per language", "rate")},
              sweepable=True, pipeline={"top_rate": "top_rate"})
    def top_firing(stats: ActivationStats, *, top_rate: float = 0.01) -> LanguageNeurons: ...
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lapelens.errors import LapelensError

#: What a method reads: token statistics, per-sentence activations, or tuned model weights.
Source = Literal["stats", "sentences", "models"]
#: What it returns: a ``LanguageNeurons`` or a ``ParameterMask``.
Returns = Literal["neurons", "parameters"]
#: How an option's value is checked before a selection (``lapelens.checks``).
Check = Literal["rate", "quantile", "positive", None]
#: Keyword arguments that are inputs, not options: a reference selection, the tuned models.
INPUT_KEYWORDS = ("reference", "tuned")


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default (the paper's), type and one line of help."""

    name: str
    default: Any
    type: type
    help: str
    check: Check = None
    model_default: bool = False
    """The default depends on the model (``lapelens.defaults``): filled from the statistics' model."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class OptionHelp:
    """What ``register(options=...)`` says about an option besides what the signature gives."""

    help: str
    check: Check = None
    model_default: bool = False


@dataclass(frozen=True)
class Method:
    """One selection method: its function, what it reads and returns, and its options."""

    name: str
    function: Callable[..., Any]
    source: Source
    summary: str
    returns: Returns = "neurons"
    reference: str | None = None
    """A method whose selection this one needs (random draws as many neurons as LAPE)."""
    sweepable: bool = False
    """It has a ``top_rate`` the selection-ratio sweep varies (its result's ``meta`` then records
    ``budget`` and ``selected``, as LAPE's does)."""
    min_languages: int = 1
    """Languages it needs to mean anything (a score compared across languages needs two)."""
    baseline: bool = False
    """A chance baseline: the other methods' perturbations are compared with it, and generation
    under deactivation runs it as the control."""
    primary: bool = False
    """The paper's method: ``reproduce``'s per-language and per-layer tables (Table 3, Fig. 5), the
    SES, steering and generation-under-deactivation experiments use its selection."""
    pinned: bool = False
    """Kojima et al.'s generation experiment pins its selection to its ``median`` values."""
    pipeline: Mapping[str, str] = field(default_factory=dict)
    """Option -> the ``ReproduceConfig`` field that ``lapelens reproduce`` sets it from."""
    option_specs: tuple[Option, ...] = ()
    order: int = 100
    """Place among the methods (lists, pipeline stages); ties keep registration order."""

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments and their defaults (the paper's), read off the function's signature."""
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(self.function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    @property
    def stage(self) -> str:
        """The pipeline stage (run folder) of its selection."""
        return f"neurons_{self.name}"

    @property
    def input_stage(self) -> str | None:
        """The pipeline stage it reads: ``stats``, ``sentences``, or None for tuned models (tuned
        inside its own stage); a method with a reference reads the reference's stage instead."""
        if self.reference:
            return f"neurons_{self.reference}"
        return None if self.source == "models" else self.source


#: name -> Method, in ``order``; filled by ``register`` as the method modules are imported.
METHODS: dict[str, Method] = {}


def _option_type(hints: dict, name: str, default: Any) -> type:
    if default is not None and not isinstance(default, bool):
        return type(default)
    args = [a for a in typing.get_args(hints.get(name)) if a is not type(None)]
    return args[0] if args and isinstance(args[0], type) else hints.get(name, str)


def register(
    name: str,
    *,
    source: Source,
    summary: str,
    options: Mapping[str, str | OptionHelp] | None = None,
    returns: Returns = "neurons",
    reference: str | None = None,
    sweepable: bool = False,
    min_languages: int = 1,
    baseline: bool = False,
    primary: bool = False,
    pinned: bool = False,
    pipeline: Mapping[str, str] | None = None,
    order: int = 100,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``function`` as the selection method ``name``.

    The function takes its input (``source``) positionally and keyword-only options with defaults;
    ``options`` gives each option a line of help (a string, or an ``OptionHelp`` with a check).
    """
    options = dict(options or {})

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(function)
        specs = []
        for p in inspect.signature(function).parameters.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in INPUT_KEYWORDS:
                continue
            text = options.get(p.name)
            if text is None:
                raise LapelensError(
                    f"Method {name!r}: option {p.name!r} has no help (give it in register(options=...))."
                )
            about = text if isinstance(text, OptionHelp) else OptionHelp(text)
            default = None if p.default is inspect.Parameter.empty else p.default
            specs.append(
                Option(
                    p.name, default, _option_type(hints, p.name, default), about.help, about.check, about.model_default
                )
            )
        extra = sorted(set(options) - {s.name for s in specs})
        if extra:
            raise LapelensError(f"Method {name!r}: help for options it does not take: {extra}.")
        add(
            Method(
                name,
                function,
                source,
                summary,
                returns,
                reference,
                sweepable,
                min_languages,
                baseline,
                primary,
                pinned,
                dict(pipeline or {}),
                tuple(specs),
                order,
            )
        )
        return function

    return decorate


def add(method: Method) -> None:
    """Put ``method`` in ``METHODS`` (replacing one of the same name), keeping ``order``."""
    if method.reference is not None and method.reference not in METHODS and method.reference != method.name:
        raise LapelensError(f"Method {method.name!r} needs {method.reference!r}, which is not registered.")
    roles = [r for r in ("primary", "pinned") if getattr(method, r)]
    if roles and method.returns != "neurons":
        raise LapelensError(
            f"Method {method.name!r}: the {roles[0]} method's experiments act on neurons, but it returns "
            f"{method.returns}."
        )
    entries = [m for m in METHODS.values() if m.name != method.name] + [method]
    entries.sort(key=lambda m: m.order)  # stable: ties keep registration order
    METHODS.clear()  # in place: modules that imported METHODS see the change
    METHODS.update((m.name, m) for m in entries)


def unregister(name: str) -> None:
    """Remove a method (tests register toy methods and remove them again)."""
    METHODS.pop(name, None)


def get(name: str, what: str = "method") -> Method:
    if name not in METHODS:
        raise LapelensError(f"Unknown {what} {name!r}: choose one of {sorted(METHODS)}.")
    return METHODS[name]


def neuron_methods() -> tuple[str, ...]:
    """Methods that return a ``LanguageNeurons``, in registry order."""
    return tuple(m for m, s in METHODS.items() if s.returns == "neurons")


#: The roles an experiment can ask of a method (``Method`` flags of those names).
Role = Literal["primary", "baseline", "pinned"]


def with_role(role: Role, names: Iterable[str]) -> str | None:
    """The first of ``names`` (registered methods) that plays ``role``, or None."""
    return next((n for n in names if getattr(get(n), role)), None)


def sweep_methods() -> tuple[str, ...]:
    """Methods whose ``top_rate`` the sweep can vary."""
    return tuple(m for m, s in METHODS.items() if s.sweepable)
