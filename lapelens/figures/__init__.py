"""Figures: offline export (HTML, PNG, SVG) and the shared look (``style``).

Which figure comes from which result is declared by each experiment (``lapelens.evaluate``);
``lapelens.load(run_dir).figures()`` draws every figure of a run.
"""

from lapelens.figures.export import find_browser, write_figure, write_figures

__all__ = ["find_browser", "write_figure", "write_figures"]
