"""Which figure comes from which result of a ``lapelens reproduce`` run: declared once, here.

``reproduce`` (from the results it holds) and ``lapelens figures RUN_DIR`` (from the results a
finished run saved) both go through :func:`figures_of`, so the two cannot draw different figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapelens.constants import RUN_CONFIG
from lapelens.errors import LapelensError

#: The generation stages, in the order their figures are written (stage name = figure name), and
#: the role of the method whose selection each one uses (reproduce runs it only when that method runs).
GENERATION_STAGES = {"steer_unconditional": "primary", "steer_prompted": "primary",
                     "deactivated_generation": "primary", "kojima": "pinned"}
CONFIG_JSON = RUN_CONFIG


@dataclass
class RunResults:
    """The results a run's figures are drawn from; a missing result means no figure for it."""

    lape: Any = None
    """The primary method's (LAPE's) ``LanguageNeurons`` (Fig. 5)."""
    perturbations: dict[str, Any] = field(default_factory=dict)
    """Method -> ``PerturbationResult``, in the run's method order (Fig. 2, 3, 8)."""
    sweep: Any = None
    """``SweepResult`` (Fig. 4)."""
    ses: Any = None
    """``SimilarityResult`` (Fig. 6)."""
    dominance: Any = None
    """``DominanceResult`` (Fig. 7)."""
    generations: dict[str, Any] = field(default_factory=dict)
    """Stage name (one of ``GENERATION_STAGES``) -> ``GenerationResult`` (Tables 1, 2, 4, 5; Kojima)."""


def figures_of(run: RunResults) -> dict[str, Any]:
    """``{file name without suffix: go.Figure}`` for every result the run holds."""
    from lapelens.evaluate.perplexity import compare_figure

    figs: dict[str, Any] = {}
    if run.lape is not None:
        figs["fig5_layers"] = run.lape.figure()
    for method, result in run.perturbations.items():
        figs[f"fig2_perturb_{method}"] = result.figure()
    if run.perturbations:
        figs["fig3_perturb_methods"] = compare_figure(run.perturbations)
    if run.sweep is not None:
        figs["fig4_sweep"] = run.sweep.figure()
    if run.ses is not None:
        figs["fig6_ses"] = run.ses.figure()
    if run.dominance is not None:
        figs["fig7_dominance"] = run.dominance.figure()
    for name in GENERATION_STAGES:
        if name in run.generations:
            figs[name] = run.generations[name].figure()
    return figs


def _run_config(run_dir: Path) -> tuple[list[str], set[str] | None]:
    """The run's methods in its order, and the stages it computed or reused (None: not recorded).

    From ``config.json``, which ``reproduce`` writes when a run completes; without one, every
    ``perturb_*`` folder counts, in the pipeline's method order.
    """
    from lapelens.methods import METHODS

    order = list(METHODS)
    config = run_dir / CONFIG_JSON
    if config.is_file():
        data = json.loads(config.read_text())
        stages = data.get("stages")
        return list(data.get("methods", order)), (set(stages) if isinstance(stages, dict) else None)
    found = {p.name.removeprefix("perturb_") for p in run_dir.glob("perturb_*") if p.is_dir()}
    return [m for m in order if m in found] + sorted(found - set(order)), None


def load_run(run_dir: str | Path) -> RunResults:
    """The saved results of a ``reproduce`` run folder (nothing is recomputed; no model is loaded).

    Only the methods and stages in the run's ``config.json`` count, as in ``reproduce``: a stage
    folder left from an earlier run with other settings draws no figure.
    """
    from lapelens.artifacts import load
    from lapelens.methods import METHODS, with_role

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LapelensError(f"Run folder {run_dir} does not exist; make one with `lapelens reproduce --out {run_dir}`.")
    methods, stages = _run_config(run_dir)

    def saved(name: str) -> bool:
        return (run_dir / name).is_dir() and (stages is None or name in stages)

    run = RunResults()
    known = [m for m in methods if m in METHODS]  # a run's config may name a method this lapelens lacks
    primary = with_role("primary", known)
    if primary and saved(METHODS[primary].stage):
        run.lape = load(run_dir / METHODS[primary].stage, "language_neurons")
    run.perturbations = {m: load(run_dir / f"perturb_{m}", "perturbation") for m in methods if saved(f"perturb_{m}")}
    if saved("sweep"):
        run.sweep = load(run_dir / "sweep", "sweep")
    if saved("ses"):
        run.ses = load(run_dir / "ses", "similarity")
    if saved("dominance"):
        run.dominance = load(run_dir / "dominance", "dominance")
    for name, role in GENERATION_STAGES.items():
        if with_role(role, known) and saved(name):
            run.generations[name] = load(run_dir / name, "generation")
    return run


def run_figures(run_dir: str | Path) -> dict[str, Any]:
    """Every figure of a finished run, from its saved results: ``figures_of(load_run(run_dir))``."""
    figs = figures_of(load_run(run_dir))
    if not figs:
        raise LapelensError(f"{run_dir} holds no saved result to draw (expected folders such as neurons_lape, "
                            "perturb_lape, sweep, ses, dominance written by `lapelens reproduce`).")
    return figs
