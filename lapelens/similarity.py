"""Moved to :mod:`lapelens.evaluate.similarity` (beside the other experiments); kept importable."""

from lapelens.evaluate.similarity import *  # noqa: F401,F403
