"""The single-neuron explorer: one self-contained HTML page per run, and a live mode for notebooks."""

from lapelens.explorer.data import ExplorerData, gather
from lapelens.explorer.explore import Explorer, explore
from lapelens.explorer.live import live, token_activations
from lapelens.explorer.page import render

__all__ = ["Explorer", "ExplorerData", "explore", "gather", "live", "render", "token_activations"]
