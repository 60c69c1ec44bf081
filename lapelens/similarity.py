"""Moved to :mod:`lapelens.evaluate.similarity` and :mod:`lapelens.evaluate.embeddings`; kept importable."""

from lapelens.evaluate.embeddings import *  # noqa: F401,F403
from lapelens.evaluate.measures import *  # noqa: F401,F403
from lapelens.evaluate.similarity import *  # noqa: F401,F403
