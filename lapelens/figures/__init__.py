"""Figures of a run: which figure from which result (``run``) and offline export (``export``)."""

from lapelens.figures.export import find_browser, write_figure, write_figures
from lapelens.figures.run import RunResults, figures_of, load_run, run_figures

__all__ = ["RunResults", "figures_of", "find_browser", "load_run", "run_figures", "write_figure", "write_figures"]
