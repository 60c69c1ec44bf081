"""``lapelens.explore(run_dir)``: build the explorer of a run; shown inline in Jupyter, saved as one file."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lapelens.explorer.data import ExplorerData, finished_run, gather
from lapelens.explorer.live import html_object, live
from lapelens.explorer.page import render
from lapelens.models import load_model
from lapelens.types import HookedModel


@dataclass
class Explorer:
    """A built explorer: ``html`` is the whole page; ``model`` is kept for :meth:`live`."""

    data: ExplorerData
    html: str
    model: HookedModel
    seconds: float

    def save(self, path: str | Path) -> Path:
        """Write the page (self-contained; open it from a file manager, no network needed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path

    def display(self, height: int = 900) -> Any:
        """The page as an IPython HTML object: an iframe, so its script and styles stay apart from the notebook's."""
        return html_object(self._iframe(height))

    def _iframe(self, height: int = 900) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:{height}px;'
                'border:1px solid #ddd" sandbox="allow-scripts"></iframe>')

    def _repr_html_(self) -> str:
        return self._iframe()

    def live(self, layer: int, neuron: int, text: str | None = None) -> Any:
        """Live mode on this run's model: see :func:`lapelens.explorer.live`."""
        return live(self.model, layer, neuron, text)


def explore(run_dir: str | Path, model: HookedModel | None = None, out: str | Path | None = None, **budgets: Any) -> Explorer:
    """Build the neuron explorer of a ``lapelens reproduce`` folder.

    ``model`` defaults to the run's (``load_model(config["model"])``); ``budgets`` go to
    :func:`lapelens.explorer.gather` (``context_tokens``, ``loss_neurons``, ...). With ``out`` the
    page is also written there. In Jupyter the returned object shows the page inline, and
    ``.live(layer, neuron)`` shows one neuron on text you type.
    """
    start = time.perf_counter()
    if model is None:
        model = load_model(finished_run(run_dir).config["model"])
    data = gather(run_dir, model, **budgets)
    page = render(data)
    explorer = Explorer(data, page, model, round(time.perf_counter() - start, 1))
    if out is not None:
        explorer.save(out)
    return explorer
