"""Experiments under interventions, one module each, behind one registry (``EXPERIMENTS``).

Every module of this package that declares an experiment (``lapelens.evaluate._registry.experiment``)
does so when it is imported; all of them are imported here, so a new experiment is one new file.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from lapelens.evaluate._registry import (
    EXPERIMENTS,
    Context,
    Experiment,
    Setting,
    all_settings,
    experiment,
    exported,
    figures_of,
    finite,
    positive,
    unregister,
)

# The submodules stay reachable as attributes (``lapelens.evaluate.perplexity``): import the
# modules, not their same-named functions.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        import_module(f"{__name__}.{_info.name}")

__all__ = [
    "EXPERIMENTS",
    "Context",
    "Experiment",
    "Setting",
    "all_settings",
    "experiment",
    "exported",
    "figures_of",
    "finite",
    "positive",
    "unregister",
]
