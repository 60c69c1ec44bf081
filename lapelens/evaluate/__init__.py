"""Evaluation under interventions: perplexity matrices, selection-ratio sweeps, steering and generation."""

from lapelens.evaluate.perplexity import (
    PerturbationResult,
    chunk_nll,
    compare,
    compare_figure,
    evaluation_chunks,
    perturbation_matrix,
)

__all__ = ["PerturbationResult", "chunk_nll", "compare", "compare_figure", "evaluation_chunks", "perturbation_matrix"]
