"""The experiment registry: each experiment declares itself here, once, in its own module.

An experiment says what it reads, what it computes (a result with ``save``/``load``, usually a
``lapelens.results.Result``), its settings, the figures and tables drawn from its result and the
entries it adds to a run's ``summary.json``. Everything that lists experiments reads
``EXPERIMENTS``: ``reproduce`` (one stage per experiment, or per method, in ``order``; the
settings are ``ReproduceConfig`` fields and ``lapelens reproduce`` flags, with their ``--quick``
values), ``lapelens figures`` and ``lapelens.load(run_dir)`` (``lapelens.run.Run``), and
``lapelens.<name>`` for the names an experiment ``exports``. A new experiment is one new module in
``lapelens/evaluate/`` (the package imports every module, so it registers itself); see
``docs/extending.md``.

What an experiment can ``read`` (a name ending in ``?`` is optional: the experiment runs without it):

- ``"stats"``: the run's ``ActivationStats``;
- ``"primary"``, ``"baseline"``, ``"pinned"``: the selection of the method that plays that role
  (``lapelens.methods.with_role``; LAPE, random, AP); ``"selections"``: every method's;
- ``"chunks"``: held-out text of every language in ``seq_len`` chunks (``--eval-tokens-per-language``);
- ``"parallel"``: the aligned texts of the parallel corpus (``--parallel``).

With ``per_method=True`` the experiment runs once per selection of the run (stage ``NAME_METHOD``)
and its figures, tables and summary get ``{method: result}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lapelens.checks import check_positive
from lapelens.errors import LapelensError
from lapelens.methods._registry import METHODS, Role, with_role

#: Inputs an experiment can read besides the roles (see the module docstring).
INPUTS = ("stats", "selections", "chunks", "parallel")
ROLES: tuple[Role, ...] = ("primary", "baseline", "pinned")
#: What reading an input adds to a stage's record (the identity of the text it was computed on).
RECORDED = {"chunks": "eval_corpus", "parallel": "parallel"}


def flag(name: str) -> str:
    """The CLI flag of a setting (error messages name what the user typed)."""
    return "--" + name.replace("_", "-")


#: ``check(value, flag, config)``: raises ``LapelensError`` when the value is wrong.
Check = Callable[[Any, str, Any], None]


def positive(minimum: int = 1) -> Check:
    """A number of at least ``minimum``."""
    return lambda value, name, cfg: check_positive(value, name, minimum)


def finite(value: Any, name: str, cfg: Any) -> None:
    if not math.isfinite(value):
        raise LapelensError(f"{name} must be a finite number, got {value}.")


_NO_QUICK = object()


@dataclass(frozen=True, eq=False)
class Setting:
    """A setting of an experiment: a ``ReproduceConfig`` field and a ``lapelens reproduce`` flag."""

    name: str
    default: Any
    help: str
    """One or two sentences: the flag's ``--help``."""
    type: type | None = None
    """The value's type; needed when ``default`` is None (then ``resolve`` gives the value)."""
    quick: Any = _NO_QUICK
    """The value under ``--quick`` (smaller budgets, same code path), if it has one."""
    check: Check | None = None
    """Refuses a wrong value before the first stage (``positive()``, ``finite``, or your own)."""
    resolve: Callable[[Any], Any] | None = None
    """The value for a default of None, from the other settings (e.g. a model-dependent default)."""

    @property
    def value_type(self) -> type:
        return self.type if self.type is not None else type(self.default)

    @property
    def has_quick(self) -> bool:
        return self.quick is not _NO_QUICK

    def same_as(self, other: "Setting") -> bool:
        return (self.name, self.default, self.help, self.type, self.quick) == (
            other.name,
            other.default,
            other.help,
            other.type,
            other.quick,
        )


class Context:
    """What an experiment's ``compute`` gets: the run's settings, model, statistics, selections and texts.

    ``chunks`` and ``parallel`` are loaded on first use, once per run; :meth:`shared` keeps any other
    value that several experiments compute alike (SES and dominance share their embeddings).
    """

    def __init__(
        self,
        cfg: Any,
        model: Any = None,
        stats: Any = None,
        selections: Mapping[str, Any] | None = None,
        chunks: Callable[[], Any] | None = None,
        parallel: Callable[[], Any] | None = None,
    ):
        self.cfg, self.model, self.stats = cfg, model, stats
        self.selections = dict(selections or {})
        self._loaders = {"chunks": chunks, "parallel": parallel}
        self._shared: dict[str, Any] = {}

    @property
    def languages(self) -> list[str]:
        return list(self.cfg.languages)

    def role(self, role: Role) -> str | None:
        """The method of the run that plays ``role`` (``"primary"``: LAPE ...), or None."""
        return with_role(role, [m for m in self.selections if m in METHODS])

    def selection(self, role: Role) -> Any:
        """The selection of the method that plays ``role``, or None."""
        method = self.role(role)
        return None if method is None else self.selections[method]

    def _load(self, name: str) -> Any:
        if self._loaders[name] is None:
            raise LapelensError(f"This run has no {name}: an experiment that reads them runs inside `reproduce`.")
        return self._loaders[name]()

    @cached_property
    def chunks(self) -> Any:
        """Held-out text per language, in ``seq_len`` chunks (``evaluation_chunks``)."""
        return self._load("chunks")

    @cached_property
    def parallel(self) -> Any:
        """The parallel corpus: one column of aligned texts per language."""
        return self._load("parallel")

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per run for every experiment that asks for ``key``."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


@dataclass(frozen=True)
class Experiment:
    """One experiment: how it computes its result, and what a run reads and writes of it."""

    name: str
    compute: Callable[..., Any]
    result: type
    reads: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()
    record: Callable[[Any], dict] | None = None
    per_method: bool = False
    cached: bool = True
    runs_if: Callable[[Any], bool] | None = None
    figures: Callable[[Any], Mapping[str, Any]] | None = None
    tables: Callable[[Any], Mapping[str, Any]] | None = None
    summary: Callable[[Any], Mapping[str, Any]] | None = None
    exports: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    order: int = 100

    @property
    def roles(self) -> tuple[tuple[str, bool], ...]:
        """``(role, required)`` for every role it reads."""
        return tuple((r.rstrip("?"), not r.endswith("?")) for r in self.reads if r.rstrip("?") in ROLES)

    def missing(self, methods: list[str]) -> str | None:
        """Why it cannot run on a run of ``methods`` (a required role nobody plays), or None."""
        known = [m for m in methods if m in METHODS]
        for role, required in self.roles:
            if required and with_role(role, known) is None:  # type: ignore[arg-type]
                wanted = with_role(role, METHODS)  # type: ignore[arg-type]
                return f"it reads the {role} method's selection, and {wanted or 'no method'} is not in --methods"
        return None

    def stage(self, method: str | None = None) -> str:
        """The run folder its result is saved in."""
        return f"{self.name}_{method}" if self.per_method else self.name

    def settings_record(self, cfg: Any) -> dict:
        """The settings its stage record lists (a changed one recomputes the stage)."""
        if self.record is not None:
            return self.record(cfg)
        return {s.name: getattr(cfg, s.name) for s in self.settings}

    def draw(self, result: Any) -> dict[str, Any]:
        return dict(self.figures(result)) if self.figures is not None else {}


#: name -> Experiment, in ``order``; filled by ``experiment`` as the modules of ``lapelens.evaluate`` are imported.
EXPERIMENTS: dict[str, Experiment] = {}


def experiment(
    name: str,
    *,
    result: type,
    reads: tuple[str, ...] = (),
    settings: tuple[Setting, ...] | list[Setting] = (),
    record: Callable[[Any], dict] | None = None,
    per_method: bool = False,
    cached: bool = True,
    runs_if: Callable[[Any], bool] | None = None,
    figure: str | None = None,
    figures: Callable[[Any], Mapping[str, Any]] | None = None,
    tables: Callable[[Any], Mapping[str, Any]] | None = None,
    summary: Callable[[Any], Mapping[str, Any]] | None = None,
    exports: Mapping[str, Any] | None = None,
    paper: str = "",
    order: int = 100,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``compute(ctx)`` (``compute(ctx, method)`` with ``per_method``) as the
    experiment ``name``.

    - ``result``: the class of what ``compute`` returns; its ``load(folder)`` reads a saved stage
      back (``save(folder)`` writes it). A ``lapelens.results.Result`` is also a ``lapelens.load`` kind.
    - ``reads``: its inputs (module docstring); its stage is recomputed when one of them changes.
    - ``settings``: its ``Setting`` objects (shared ones: the same object in several experiments).
    - ``record``: ``config -> dict`` of what the stage is computed from, when it is more than its
      settings (e.g. ``seed``); default ``{setting: value}``.
    - ``cached=False``: computed from its inputs in every run, never saved (a cheap summary of them).
    - ``runs_if``: ``config -> bool``; False skips it (e.g. ``--sweep-target none``).
    - ``figure``: the name of the one figure, ``result.figure()``; or ``figures``: ``result ->
      {name: go.Figure}``. ``tables``: ``result -> {file name: DataFrame}`` (written to
      ``tables/``). ``summary``: ``result -> {key: JSON value}`` (``summary.json``).
    - ``exports``: ``{name: object}`` reachable as ``lapelens.<name>``.
    - ``paper``: what of the paper it reproduces (e.g. "Fig. 4"); ``order``: its place in a run.
    """
    settings = tuple(settings)
    bad = [r for r in reads if r.rstrip("?") not in INPUTS + ROLES]
    if bad:
        raise LapelensError(f"Experiment {name!r} reads {bad}: an experiment reads {', '.join(INPUTS + ROLES)}.")
    if figures is None:
        drawn = figure or name
        figures = (
            (lambda results: {f"{drawn}_{m}": r.figure() for m, r in results.items()})
            if per_method
            else (lambda r: {drawn: r.figure()})
        )

    def decorate(compute: Callable[..., Any]) -> Callable[..., Any]:
        add(
            Experiment(
                name,
                compute,
                result,
                tuple(reads),
                settings,
                record,
                per_method,
                cached,
                runs_if,
                figures,
                tables,
                summary,
                dict(exports or {}),
                paper,
                order,
            )
        )
        return compute

    return decorate


def add(exp: Experiment) -> None:
    """Put ``exp`` in ``EXPERIMENTS`` (replacing one of the same name), keeping ``order``."""
    others = {s.name: s for e in EXPERIMENTS.values() if e.name != exp.name for s in e.settings}
    for s in exp.settings:
        if s.name in others and not s.same_as(others[s.name]):
            raise LapelensError(
                f"Experiment {exp.name!r}: setting {s.name!r} is declared differently by another "
                "experiment; share one Setting object."
            )
    clash = {k: v for e in EXPERIMENTS.values() if e.name != exp.name for k, v in e.exports.items()}
    taken = [k for k, v in exp.exports.items() if k in clash and clash[k] is not v]
    if taken:
        raise LapelensError(f"Experiment {exp.name!r} exports {taken}, which another experiment exports already.")
    entries = [e for e in EXPERIMENTS.values() if e.name != exp.name] + [exp]
    entries.sort(key=lambda e: e.order)  # stable: ties keep registration order
    EXPERIMENTS.clear()  # in place: modules that imported EXPERIMENTS see the change
    EXPERIMENTS.update((e.name, e) for e in entries)


def unregister(name: str) -> None:
    """Remove an experiment (tests register toy experiments and remove them again)."""
    EXPERIMENTS.pop(name, None)


def all_settings() -> dict[str, Setting]:
    """Every experiment's settings, each once, in experiment order."""
    out: dict[str, Setting] = {}
    for exp in EXPERIMENTS.values():
        for s in exp.settings:
            out.setdefault(s.name, s)
    return out


def exported() -> dict[str, Any]:
    """``{name: object}`` of every experiment's ``exports``."""
    return {k: v for exp in EXPERIMENTS.values() for k, v in exp.exports.items()}


def figures_of(results: Mapping[str, Any]) -> dict[str, Any]:
    """``{figure name: go.Figure}`` of every experiment whose result is in ``results`` (by name), in order.

    ``reproduce`` (from the results it computed) and ``lapelens figures`` (``Run.figures``, from
    the results a finished run saved) both draw through the experiments' declarations, so the two
    cannot draw different figures.
    """
    figs: dict[str, Any] = {}
    for exp in EXPERIMENTS.values():
        if exp.name in results:
            figs.update(exp.draw(results[exp.name]))
    return figs
