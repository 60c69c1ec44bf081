"""``lapelens collect``: per-language neuron statistics of a model on a corpus.

Data-parallel with ``torchrun --nproc-per-node N -m lapelens collect ...``: this entry point
(the only place that reads torchrun's environment) joins the process group, gloo on the CPU and
NCCL on CUDA (rank r on ``cuda:LOCAL_RANK``); the library splits the batches and sums the totals;
rank 0 writes the result. Running sums are checkpointed into ``OUT/collect.checkpoint`` so that
the same command, re-run after a kill, resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.activations import (  # noqa: F401 (help)
    DEFAULT_BATCH_SIZE,
    DEFAULT_SENTENCE_TOKENS,
    DEFAULT_SEQ_LEN,
    collect,
    collect_sentence_means,
)
from lapelens.checkpoint import DEFAULT_CHECKPOINT_EVERY, current_shard
from lapelens.cli._config import add_command
from lapelens.cli._evaluation import quiet_transformers
from lapelens.cli._options import DtypeOptions, ModelOptions, positive
from lapelens.constants import EMBEDDED
from lapelens.corpus import default_languages_of, load_corpus
from lapelens.errors import LapelensError
from lapelens.lock import OUTPUT
from lapelens.models import load_model

#: Folder inside --out for the checkpoints of a collection in progress.
CHECKPOINT_DIR = "collect.checkpoint"


@dataclass(kw_only=True)
class CollectConfig(DtypeOptions, ModelOptions):
    corpus: str = EMBEDDED
    """'embedded', 'wikipedia', or a folder of {lang}.txt files (one document per line)."""
    split: str = "train"
    """Corpus split."""
    languages: tuple[str, ...] | None = None
    """Language codes (default: the paper's seven, en,zh,fr,es,vi,id,ja, if the corpus has them all, else every
    language of the corpus)."""
    tokens_per_language: int | None = None
    """Tokens per language, rounded down to whole chunks (default: all the text)."""
    skip_tokens: int = 0
    """Skip the first chunks of this many tokens per language (what an earlier collection of that budget counted):
    the two statistics, merged, are those of one longer collection."""
    seq_len: int | None = None
    """Tokens per chunk (default: {DEFAULT_SEQ_LEN}, or the model's context if shorter)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Chunks per forward pass."""
    out: Path = field(metadata=OUTPUT)
    """Folder to write the statistics to."""
    official_tag: str | None = None
    """Also write official activation.{lang}.train.TAG files into --out."""
    sentences_out: Path | None = field(default=None, metadata=OUTPUT)
    """Also write per-sentence mean activations (for method ap) to this folder, one sentence per corpus document."""
    sentences_per_language: int = 500
    """With --sentences-out: documents per language to use as sentences."""
    max_sentence_tokens: int = DEFAULT_SENTENCE_TOKENS
    """With --sentences-out: tokens kept per sentence."""
    device: str = "cpu"
    """Torch device. Under torchrun, 'cuda' means cuda:LOCAL_RANK for each rank."""
    device_map: str | None = None
    """Spread a model too big for one device: a Hugging Face device_map ('auto', 'balanced', or a JSON object of
    module -> device), loaded through accelerate; replaces --device."""
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY
    """Seconds between checkpoints of the running sums in OUT/{CHECKPOINT_DIR} (0: after every batch). Re-running
    the same command resumes from it."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "collect",
        CollectConfig,
        run,
        help="Count how often every MLP neuron fires on each language (and sum its activations).",
        description="Tokenize each language's text, pack it into full --seq-len chunks (each document "
        "preceded by BOS), run the model and write an ActivationStats folder.",
    )


def run(cfg: CollectConfig) -> None:
    with quiet_transformers(cfg.quiet):  # also silence transformers' weight-loading bar
        _run(cfg)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """Join the process group torchrun describes in the environment (if any); yields this rank's device."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield device
        return
    # torch.distributed.nn.functional binds ``group.WORLD`` as default arguments when first
    # imported, and transformers imports it while loading a model. Imported after the group
    # exists, it holds the group past destroy_process_group: the backend's threads then live
    # until interpreter shutdown, where gloo's teardown can abort ("terminate called without an
    # active exception"). Imported first, it binds None (the default group) and holds nothing.
    import torch.distributed.nn.functional  # noqa: F401

    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if device == "cuda" else device
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        if dist.is_initialized():  # reproduce leaves it itself once the statistics are summed
            dist.destroy_process_group()


@contextlib.contextmanager
def log_resumes(command: str = "collect") -> Iterator[None]:
    """Show the library's 'resuming from checkpoint ...' line on stderr for this command."""
    logger = logging.getLogger("lapelens.activations")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"lapelens {command}: %(message)s"))
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _device_map(value: str | None) -> str | dict | None:
    if value is None or not value.lstrip().startswith("{"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise LapelensError(
            f"--device-map is not valid JSON ({exc}): give 'auto' or an object such as '{{\"\": \"cpu\"}}'."
        ) from None


def _run(cfg: CollectConfig) -> None:
    languages = list(cfg.languages) if cfg.languages else None
    for flag, value in (
        ("--tokens-per-language", cfg.tokens_per_language),
        ("--seq-len", cfg.seq_len),
        ("--batch-size", cfg.batch_size),
        ("--sentences-per-language", cfg.sentences_per_language),
    ):
        positive(value, flag)
    if cfg.checkpoint_every < 0:
        raise LapelensError(f"--checkpoint-every must be >= 0 seconds, got {cfg.checkpoint_every:g}.")
    device_map = _device_map(cfg.device_map)
    with process_group(cfg.device) as device, log_resumes():
        _collect(cfg, languages, device, device_map)


def _collect(cfg: CollectConfig, languages: list[str] | None, device: str, device_map: str | dict | None) -> None:
    if device_map is not None and "device_map" not in inspect.signature(load_model).parameters:
        raise LapelensError("--device-map needs lapelens.load_model(..., device_map=...), which this version lacks.")
    texts = load_corpus(cfg.corpus, split=cfg.split, languages=languages or default_languages_of(cfg.corpus, cfg.split))
    where = {"device_map": device_map} if device_map is not None else {"device": device}
    model = load_model(cfg.model, dtype=cfg.dtype, **where)
    stats = collect(
        model,
        texts,
        tokens_per_language=cfg.tokens_per_language,
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size,
        progress=not cfg.quiet,
        corpus=f"{cfg.corpus}:{cfg.split}",
        checkpoint=cfg.out / CHECKPOINT_DIR,
        checkpoint_every=cfg.checkpoint_every,
        skip_tokens=cfg.skip_tokens,
    )
    shard = current_shard()
    if shard.rank != 0:  # every rank holds the summed totals; one writes them
        return
    stats.save(cfg.out)
    if cfg.official_tag:
        stats.to_official(cfg.out, cfg.official_tag)
    ranks = f" (summed over {shard.world} processes)" if shard.world > 1 else ""
    print(
        f"Wrote statistics of {stats.n_layers} layers x {stats.d_mlp} neurons to {cfg.out}{ranks}: "
        + ", ".join(f"{lang} {n:,} tokens" for lang, n in zip(stats.languages, stats.n.tolist()))
    )
    if cfg.sentences_out:  # not sharded: rank 0 alone
        sentences = {lang: [d for d in docs if d.strip()][: cfg.sentences_per_language] for lang, docs in texts.items()}
        acts = collect_sentence_means(
            model,
            sentences,
            batch_size=cfg.batch_size,
            max_tokens_per_sentence=cfg.max_sentence_tokens,
            progress=not cfg.quiet,
        )
        acts.meta["corpus"] = f"{cfg.corpus}:{cfg.split}"
        acts.save(cfg.sentences_out)
        print(f"Wrote mean activations of {acts.means.shape[0]} sentences to {cfg.sentences_out}.")
