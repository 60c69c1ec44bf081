"""Config dataclasses the commands share: model, held-out text, prompts, sampling, results.

Each command's config inherits the groups it takes, so a flag is declared (and checked) once;
``lapelens.cli._config`` turns the fields into flags and their attribute docstrings into help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapelens.checks import check_positive
from lapelens.cli._evaluation import load_selection
from lapelens.constants import EMBEDDED
from lapelens.defaults import SEQ_LEN  # noqa: F401 (named in a help text)
from lapelens.errors import LapelensError
from lapelens.evaluate.generation import Sampling
from lapelens.evaluate.perplexity import DEFAULT_BATCH_SIZE, DEFAULT_EVAL_TOKENS, evaluation_chunks  # noqa: F401 (help text)
from lapelens.lock import OUTPUT
from lapelens.models import DTYPES
from lapelens.neurons import LanguageNeurons
from lapelens.pretrained import MODEL_HELP  # noqa: F401 (named in a help text)


def positive(value: int | float | None, flag: str) -> None:
    if value is not None and value < 1:
        raise LapelensError(f"{flag} must be a positive number, got {value}.")


@dataclass(kw_only=True)
class ModelOptions:
    model: str = EMBEDDED
    """Model: {MODEL_HELP}."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or mps."""
    quiet: bool = False
    """No progress bars."""


@dataclass(kw_only=True)
class DtypeOptions:
    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    """Model dtype. bfloat16: float32's range at half the memory; float16: a run whose activations overflow stops
    with an error. Firing counts are taken in this dtype, sums accumulate in float64."""


@dataclass(kw_only=True)
class EvalTextOptions:
    """Held-out text, cut into chunks, for a perplexity."""

    corpus: str = EMBEDDED
    """Held-out text: 'embedded', 'wikipedia', or a folder of {lang}.valid.txt files."""
    split: str = "valid"
    """Corpus split to evaluate on."""
    languages: tuple[str, ...] | None = None
    """Evaluation languages (default: those of the neuron set)."""
    tokens_per_language: int = DEFAULT_EVAL_TOKENS
    """Evaluation tokens per language, rounded down to whole chunks."""
    seq_len: int | None = None
    """Tokens per chunk (default: {SEQ_LEN}, as `lapelens collect`, or the model's context if shorter)."""
    batch_size: int | None = None
    """Chunks per forward pass (default: {DEFAULT_BATCH_SIZE})."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% intervals."""
    seed: int = 0
    """Bootstrap seed."""

    def check_sizes(self) -> None:
        for name in ("tokens_per_language", "seq_len", "batch_size", "n_boot"):
            positive(getattr(self, name), "--" + name.replace("_", "-"))

    def chunks(self, model: Any, languages: list[str]) -> Any:
        return evaluation_chunks(model, self.corpus, languages, self.tokens_per_language, self.seq_len, self.split)

    @property
    def batch(self) -> dict:
        """``batch_size=`` for the evaluation, when one was given."""
        return {"batch_size": self.batch_size} if self.batch_size else {}


@dataclass(kw_only=True)
class PromptOptions:
    parallel: str = EMBEDDED
    """Parallel corpus the prompts come from: 'embedded' or 'flores'."""
    parallel_split: str = "valid"
    """Split of the parallel corpus."""
    n_prompts: int = 20
    """Prompts per (source) language."""
    prompt_tokens: int = 32
    """Tokens kept of each prompt."""


@dataclass(kw_only=True)
class SamplingOptions:
    max_new_tokens: int = 48
    """Tokens generated per sample."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_k: int | None = None
    """Sample from the top k tokens only."""
    top_p: float | None = None
    """Nucleus sampling mass, in (0, 1]."""
    repetition_penalty: float | None = None
    """HF-style repetition penalty (default: 1.1 greedy, as the official generation script; 1.0 sampling)."""
    seed: int = 0
    """Sampling seed, the same for every condition."""
    batch_size: int | None = None
    """Sequences generated at once (default: all of a condition's at once)."""

    def sampling(self, greedy: bool) -> Any:
        """The ``Sampling`` these flags describe, after checking them."""
        positive(self.max_new_tokens, "--max-new-tokens")
        positive(self.batch_size, "--batch-size")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise LapelensError(f"--top-p must be in (0, 1] (the probability mass sampled from), got {self.top_p}.")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise LapelensError(f"--temperature must be a positive number, got {self.temperature}.")
        check_positive(self.top_k, "--top-k")
        if self.repetition_penalty is not None and not 0 < self.repetition_penalty < float("inf"):
            raise LapelensError(
                f"--repetition-penalty must be a positive number (1: none), got {self.repetition_penalty}."
            )
        penalty = self.repetition_penalty if self.repetition_penalty is not None else (1.1 if greedy else 1.0)
        return Sampling(
            max_new_tokens=self.max_new_tokens,
            do_sample=not greedy,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=penalty,
            seed=self.seed,
            batch_size=self.batch_size,
        )


@dataclass(kw_only=True)
class GenerationCommand(PromptOptions, SamplingOptions, DtypeOptions, ModelOptions):
    """What ``generate`` and ``steer`` share: a neuron set, prompts, sampling, a result folder."""

    neurons: Path
    """Neuron folder or official .pth mask."""
    languages: tuple[str, ...] | None = None
    """Target languages (default: all of the neuron set); for an official .pth, as many as it has entries name
    them in the file's order."""
    out: Path = field(metadata=OUTPUT)
    """Folder for the result (summary.csv, samples.jsonl)."""
    figure: Path | None = None
    """Also write a bar chart as HTML to this file."""

    def neuron_set(self, model: Any, what: str) -> tuple[Any, list[str]]:
        """The neuron set and the languages to run, checked; ``what`` says why a PV mask is refused."""
        requested = list(self.languages) if self.languages else None
        neurons = load_selection(self.neurons, model, requested)
        if not isinstance(neurons, LanguageNeurons):
            raise LapelensError(f"--neurons {self.neurons} is a PV parameter mask; {what}: pass a neuron set.")
        languages = requested or list(neurons.languages)
        missing = [l for l in languages if l not in neurons.languages]
        if missing:
            raise LapelensError(
                f"--languages {','.join(missing)}: not in the neuron set ({','.join(neurons.languages)})."
            )
        return neurons, languages

    def write(self, result: Any) -> None:
        """Save the result (and its figure) where the flags say."""
        result.save(self.out)
        if self.figure:
            self.figure.parent.mkdir(parents=True, exist_ok=True)
            result.figure().write_html(str(self.figure))
