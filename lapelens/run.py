"""``Run``: a ``lapelens reproduce`` folder, read back (nothing recomputed, no model loaded).

The one reader of a run folder: ``lapelens.load(run_dir)`` returns it, ``lapelens figures``
draws its figures, the explorer takes its statistics and neuron sets. Only the methods and stages
in the run's ``config.json`` count, as in ``reproduce``: a stage folder left from an earlier run
with other settings is not part of the run. A folder without ``config.json`` (a run still going,
or stopped) counts every stage folder it has.
"""

from __future__ import annotations

import ast
import json
import shutil
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lapelens._io import atomic_write_text
from lapelens._version import __version__
from lapelens.artifacts import Kind, register_kind
from lapelens.constants import (
    PAIR_SEPARATOR,
    RUN_CONFIG,
    RUN_FIGURES_DIR,
    RUN_PUBLISHED,
    RUN_SUMMARY,
    RUN_TABLES_DIR,
    STAGE_RECORD,
)
from lapelens.errors import LapelensError
from lapelens.evaluate import EXPERIMENTS, Context, figures_of
from lapelens.methods import METHODS
from lapelens.neurons import LanguageNeurons
from lapelens.parameters import ParameterMask
from lapelens.stats import ActivationStats


class Run:
    """A run folder: ``config``, ``stats``, ``selections`` (method -> its neurons or parameters),
    ``results`` (experiment -> its result; ``{method: result}`` for one run per method),
    ``figures()`` and ``summary``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise LapelensError(
                f"Run folder {self.path} does not exist; make one with `lapelens reproduce --out {self.path}`."
            )
        file = self.path / RUN_CONFIG
        self.config: dict = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        stages = self.config.get("stages")
        #: The stages the run computed or reused (None: not recorded, every stage folder counts).
        self.stages: set[str] | None = set(stages) if isinstance(stages, dict) else None
        #: The run's methods, in its order (a method this lapelens lacks included).
        self.methods: list[str] = list(self.config.get("methods") or self._found_methods())

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        return cls(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, methods={self.methods}, results={list(self.results)})"

    @property
    def finished(self) -> bool:
        """``reproduce`` completed (it writes ``config.json`` last)."""
        return (self.path / RUN_CONFIG).is_file()

    def saved(self, stage: str) -> bool:
        """The run holds stage ``stage``: its folder exists and the run computed (or reused) it."""
        return (self.path / stage).is_dir() and (self.stages is None or stage in self.stages)

    def _found_methods(self) -> list[str]:
        """Without a config: every method with a stage folder, registered ones in registry order."""
        stems = [f"{e.name}_" for e in EXPERIMENTS.values() if e.per_method] + ["neurons_"]
        found = {
            p.name.removeprefix(s) for p in self.path.iterdir() if p.is_dir() for s in stems if p.name.startswith(s)
        }
        return [m for m in METHODS if m in found] + sorted(found - set(METHODS))

    @property
    def published(self) -> bool:
        """A folder ``lapelens figures RUN_DIR --out DIR`` wrote: results and figures, no statistics."""
        return (self.path / RUN_PUBLISHED).is_file()

    @property
    def figures_dir(self) -> Path:
        """Where the run's figures are: ``figures/`` of a run folder, the top of a published one."""
        return self.path if self.published else self.path / RUN_FIGURES_DIR

    @cached_property
    def stats(self) -> ActivationStats:
        if self.published:
            raise LapelensError(
                f"{self.path} is a published run (results and figures, no statistics): use the run "
                "folder it was published from."
            )
        if not self.saved("stats"):
            raise LapelensError(f"{self.path} has no stats/: it is not (yet) a `lapelens reproduce` run.")
        return ActivationStats.load(self.path / "stats")

    @cached_property
    def selections(self) -> dict[str, Any]:
        """Every registered method's saved selection, in the run's order."""
        out = {}
        for m in self.methods:
            if m in METHODS and self.saved(METHODS[m].stage):
                kind = ParameterMask if METHODS[m].returns == "parameters" else LanguageNeurons
                out[m] = kind.load(self.path / METHODS[m].stage)
        return out

    def context(self) -> Context:
        """What an experiment reads, as far as a saved run holds it (no model, no texts)."""
        return Context(SimpleNamespace(**self.config), stats=None, selections=self.selections)

    @cached_property
    def results(self) -> dict[str, Any]:
        """Experiment name -> its saved result (``{method: result}`` for a per-method experiment); an
        experiment that is not ``cached`` is read off the saved selections again."""
        known = [m for m in self.methods if m in METHODS]
        out: dict[str, Any] = {}
        for exp in EXPERIMENTS.values():
            if exp.missing(known):
                continue
            if exp.per_method:
                per = {m: exp.result.load(self.path / exp.stage(m)) for m in self.methods if self.saved(exp.stage(m))}
                if per:
                    out[exp.name] = per
            elif exp.cached:
                if self.saved(exp.stage()):
                    out[exp.name] = exp.result.load(self.path / exp.stage())
            elif not exp.missing(list(self.selections)):  # read off the selections the run saved
                out[exp.name] = exp.compute(self.context())
        return out

    def __getitem__(self, name: str) -> Any:
        if name not in self.results:
            raise KeyError(f"{self.path} holds no {name!r} result (it holds {', '.join(self.results) or 'none'}).")
        return self.results[name]

    def figures(self) -> dict[str, Any]:
        """``{file name without suffix: go.Figure}`` for every result the run holds."""
        return figures_of(self.results)

    def data_stages(self) -> list[str]:
        """The stage folders the figures are drawn from: every saved experiment result and every
        saved neuron set (a parameter mask, tens of MB, is left out: no figure reads it)."""
        known = [m for m in self.methods if m in METHODS]
        stages = [METHODS[m].stage for m in known if METHODS[m].returns != "parameters"]
        for exp in EXPERIMENTS.values():
            if exp.cached:
                stages += [exp.stage(m) for m in self.methods] if exp.per_method else [exp.stage()]
        return [s for s in dict.fromkeys(stages) if self.saved(s)]

    def publish(self, out: str | Path) -> list[Path]:
        """Copy what the figures are drawn from into ``out``: ``config.json``, ``summary.json``,
        ``tables/`` and the :meth:`data_stages` folders, each replaced whole; then the marker
        ``published.json``, listing them. ``Run(out)`` reads the copy as it reads this run (no
        statistics, no tuned models, no checkpoints); returns the files and folders written."""
        out = Path(out)
        if out.resolve() == self.path.resolve():
            return []
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in (RUN_CONFIG, RUN_SUMMARY):
            if (self.path / name).is_file():
                shutil.copyfile(self.path / name, out / name)
                written.append(out / name)
        folders = [RUN_TABLES_DIR] * (self.path / RUN_TABLES_DIR).is_dir() + self.data_stages()
        for name in folders:
            written.append(_replace_folder(self.path / name, out / name))
        left_out = sorted(
            p.name for p in self.path.iterdir() if p.is_dir() and p.name not in folders and (p / STAGE_RECORD).is_file()
        )
        atomic_write_text(
            out / RUN_PUBLISHED,
            json.dumps(
                {"kind": "published_run", "lapelens_version": __version__, "folders": folders, "left_out": left_out},
                indent=2,
            ),
        )
        return [*written, out / RUN_PUBLISHED]

    @cached_property
    def summary(self) -> dict:
        """``summary.json``, with pair keys in the ``"en->zh"`` form whichever form it was written in."""
        file = self.path / RUN_SUMMARY
        if not file.is_file():
            raise LapelensError(f"{self.path} has no {RUN_SUMMARY}: it is not a finished `lapelens reproduce` run.")
        summary = json.loads(file.read_text(encoding="utf-8"))
        return {
            k: ({pair_key(r): v for r, v in value.items()} if isinstance(value, dict) else value)
            for k, value in summary.items()
        }


def pair_key(key: str) -> str:
    """A ``summary.json`` row key in the current form: ``"('en', 'zh')"`` (runs before lapelens
    wrote ``"en->zh"``) becomes ``"en->zh"``; any other key is returned unchanged."""
    if key.startswith("(") and key.endswith(")"):
        try:
            parts = ast.literal_eval(key)
        except (ValueError, SyntaxError):
            return key
        if isinstance(parts, tuple):
            return PAIR_SEPARATOR.join(map(str, parts))
    return key


def _replace_folder(source: Path, target: Path) -> Path:
    """``target`` becomes a copy of ``source`` (written beside it, then swapped in)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


register_kind(Kind("run", RUN_CONFIG, Run, "`lapelens reproduce`", requires=(RUN_SUMMARY,)))
