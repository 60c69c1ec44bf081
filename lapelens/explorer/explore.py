"""``lapelens.explore(...)``: build the explorer of a run (or of statistics and a neuron set);
save it as a page, show it inline in Jupyter, or serve it live with the model behind it."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapelens.errors import LapelensError
from lapelens.explorer.data import ExplorerData, ExplorerInputs, from_parts, gather, load_run
from lapelens.explorer.live import html_object, live
from lapelens.explorer.page import Page, folder_for, render
from lapelens.explorer.server import LiveExplorer, make_server
from lapelens.models import load_model
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats
from lapelens.types import HookedModel


@dataclass
class Explorer:
    """A built explorer: its data, the inputs and model it came from, and the build time."""

    data: ExplorerData
    inputs: ExplorerInputs
    model: HookedModel
    seconds: float
    _pages: dict[str, Page] = field(default_factory=dict, repr=False)

    def page(self, path: str | Path | None = None) -> Page:
        """The page, its scripts in a folder named after ``path`` (``explorer.html`` -> ``explorer_files``)."""
        folder = folder_for(path) if path is not None else "explorer_files"
        if folder not in self._pages:
            self._pages[folder] = render(self.data, folder)
        return self._pages[folder]

    def save(self, path: str | Path) -> Path:
        """Write the page and its folder of scripts; open it from a file manager, no network needed."""
        return self.page(path).save(path)

    def display(self, height: int = 900) -> Any:
        """The page as an IPython HTML object: an iframe, so its script and styles stay apart from the notebook's."""
        return html_object(self._iframe(height))

    def _iframe(self, height: int = 900) -> str:
        one_file = render(self.data, inline=True).html  # an iframe's srcdoc has no folder to load from
        return (
            f'<iframe srcdoc="{html.escape(one_file, quote=True)}" style="width:100%;height:{height}px;'
            'border:1px solid #ddd" sandbox="allow-scripts"></iframe>'
        )

    def _repr_html_(self) -> str:
        return self._iframe()

    def live(self, layer: int, neuron: int, text: str | None = None) -> Any:
        """One neuron on text you type, in a notebook: see :func:`lapelens.explorer.live`."""
        return live(self.model, layer, neuron, text)

    def server(self, port: int = 0, log: Callable[[str], None] | None = None) -> Any:
        """A live server for this page on 127.0.0.1 (not started: call ``serve_forever()``, or
        :func:`lapelens.explorer.server.serve`)."""
        inputs = self.inputs
        live_explorer = LiveExplorer(self.model, self.page(), inputs.stats, inputs.sets[inputs.primary])
        return make_server(live_explorer, port, log)


def explore(
    run_dir: str | Path | ExplorerInputs | None = None,
    model: HookedModel | None = None,
    out: str | Path | None = None,
    *,
    stats: ActivationStats | None = None,
    neurons: LanguageNeurons | None = None,
    model_name: str | None = None,
    corpus: str | None = None,
    **budgets: Any,
) -> Explorer:
    """Build the neuron explorer of a ``lapelens reproduce`` folder (or ``ExplorerInputs``), or of
    ``stats`` and ``neurons`` (default: LAPE on ``stats``) on ``corpus`` (default: the statistics').

    ``model`` defaults to the run's (or ``model_name``, or the one the statistics record); ``budgets``
    go to :func:`lapelens.explorer.gather` (``context_tokens``, ``loss_max_neurons``, ...). With
    ``out`` the page is also written there (with its folder of scripts). In Jupyter the returned
    object shows the page inline, and ``.live(layer, neuron)`` shows one neuron on text you type.
    """
    start = time.perf_counter()
    if run_dir is not None and stats is not None:
        raise LapelensError("Give a run folder or statistics (and a neuron set), not both.")
    if isinstance(run_dir, ExplorerInputs):
        inputs = run_dir
    elif run_dir is not None:
        inputs = load_run(run_dir)
        if model_name:
            inputs.model = model_name
    elif stats is not None:
        inputs = from_parts(stats, neurons, model_name, corpus)
    else:
        raise LapelensError("Nothing to explore: give a `lapelens reproduce` folder, or statistics (stats=...).")
    if corpus is not None:
        inputs.corpus = corpus
    if model is None:
        model = load_model(inputs.model)
    data = gather(inputs, model, **budgets)
    explorer = Explorer(data, inputs, model, round(time.perf_counter() - start, 1))
    if out is not None:
        explorer.save(out)
    return explorer
