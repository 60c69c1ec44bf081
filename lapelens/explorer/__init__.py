"""The single-neuron explorer: an offline page per run, a live server with the model behind it, and notebook views."""

from lapelens.explorer.data import ExplorerData, ExplorerInputs, from_parts, gather, load_run
from lapelens.explorer.explore import Explorer, explore
from lapelens.explorer.live import live, token_activations
from lapelens.explorer.page import Page, render

__all__ = [
    "Explorer",
    "ExplorerData",
    "ExplorerInputs",
    "Page",
    "explore",
    "from_parts",
    "gather",
    "live",
    "load_run",
    "render",
    "token_activations",
]
