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
from pathlib import Path
from typing import Iterator

from lapelens.constants import EMBEDDED
from lapelens.errors import LapelensError

_DTYPES = ("float32", "bfloat16", "float16")
#: Folder inside --out for the checkpoints of a collection in progress.
CHECKPOINT_DIR = "collect.checkpoint"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.activations import DEFAULT_BATCH_SIZE, DEFAULT_SENTENCE_TOKENS, DEFAULT_SEQ_LEN
    from lapelens.checkpoint import DEFAULT_CHECKPOINT_EVERY

    parser = subparsers.add_parser(
        "collect",
        help="Count how often every MLP neuron fires on each language (and sum its activations).",
        description="Tokenize each language's text, pack it into full --seq-len chunks (each document "
        "preceded by BOS), run the model and write an ActivationStats folder.",
    )
    parser.add_argument("--model", default=EMBEDDED, help="Hub name, local HF folder, or 'embedded' (default).")
    parser.add_argument("--corpus", default=EMBEDDED,
                        help="'embedded' (default), 'wikipedia', or a folder of {lang}.txt files (one document per line).")
    parser.add_argument("--split", default="train", help="Corpus split (default: train).")
    parser.add_argument("--languages", help="Comma-separated language codes (default: the paper's seven, en,zh,fr,es,vi,id,ja, if the corpus has them all, else every language of the corpus).")
    parser.add_argument("--tokens-per-language", type=int, default=None,
                        help="Tokens per language, rounded down to whole chunks (default: all the text).")
    parser.add_argument("--seq-len", type=int, default=None,
                        help=f"Tokens per chunk (default: {DEFAULT_SEQ_LEN}, or the model's context if shorter).")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"Chunks per forward pass ({DEFAULT_BATCH_SIZE}).")
    parser.add_argument("--out", type=Path, required=True, help="Folder to write the statistics to.")
    parser.add_argument("--official-tag", help="Also write official activation.{lang}.train.TAG files into --out.")
    parser.add_argument("--sentences-out", type=Path,
                        help="Also write per-sentence mean activations (for method ap) to this folder, one sentence "
                        "per corpus document.")
    parser.add_argument("--sentences-per-language", type=int, default=500,
                        help="With --sentences-out: documents per language to use as sentences (500).")
    parser.add_argument("--max-sentence-tokens", type=int, default=DEFAULT_SENTENCE_TOKENS,
                        help=f"With --sentences-out: tokens kept per sentence ({DEFAULT_SENTENCE_TOKENS}).")
    parser.add_argument("--device", default="cpu",
                        help="Torch device (default: cpu). Under torchrun, 'cuda' means cuda:LOCAL_RANK for each rank.")
    parser.add_argument("--device-map",
                        help="Spread a model too big for one device: a Hugging Face device_map ('auto', 'balanced', or "
                        "a JSON object of module -> device), loaded through accelerate; replaces --device.")
    parser.add_argument("--checkpoint-every", type=float, default=DEFAULT_CHECKPOINT_EVERY,
                        help=f"Seconds between checkpoints of the running sums in OUT/{CHECKPOINT_DIR} "
                        f"(default {DEFAULT_CHECKPOINT_EVERY:g}; 0: after every batch). Re-running the same command "
                        "resumes from it.")
    parser.add_argument("--dtype", choices=_DTYPES, default="float32", help="Model dtype (default: float32).")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    if args.quiet:  # also silence transformers' weight-loading bar
        hf_logging.disable_progress_bar()
    try:
        _run(args)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _process_group(device: str) -> Iterator[str]:
    """Join the process group torchrun describes in the environment (if any); yields this rank's device."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield device
        return
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
        dist.destroy_process_group()


@contextlib.contextmanager
def _log_resumes(command: str = "collect") -> Iterator[None]:
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
        raise LapelensError(f"--device-map is not valid JSON ({exc}): give 'auto' or an object such as "
                            '\'{"": "cpu"}\'.') from None


def _run(args: argparse.Namespace) -> None:
    languages = [l.strip() for l in args.languages.split(",") if l.strip()] if args.languages else None
    if args.languages is not None and not languages:
        raise LapelensError("--languages is empty: give comma-separated codes such as en,zh,fr.")
    for flag, value in (("--tokens-per-language", args.tokens_per_language), ("--seq-len", args.seq_len),
                        ("--batch-size", args.batch_size), ("--sentences-per-language", args.sentences_per_language)):
        if value is not None and value < 1:
            raise LapelensError(f"{flag} must be a positive number, got {value}.")
    if args.checkpoint_every < 0:
        raise LapelensError(f"--checkpoint-every must be >= 0 seconds, got {args.checkpoint_every:g}.")
    device_map = _device_map(args.device_map)
    with _process_group(args.device) as device, _log_resumes():
        _collect(args, languages, device, device_map)


def _collect(args: argparse.Namespace, languages: list[str] | None, device: str, device_map: str | dict | None) -> None:
    import torch

    from lapelens.activations import collect, collect_sentence_means
    from lapelens.checkpoint import current_shard
    from lapelens.corpus import default_languages_of, load_corpus
    from lapelens.models import load_model

    if device_map is not None and "device_map" not in inspect.signature(load_model).parameters:
        raise LapelensError("--device-map needs lapelens.load_model(..., device_map=...), which this version lacks.")
    texts = load_corpus(args.corpus, split=args.split, languages=languages or default_languages_of(args.corpus, args.split))
    where = {"device_map": device_map} if device_map is not None else {"device": device}
    model = load_model(args.model, dtype=getattr(torch, args.dtype), **where)
    stats = collect(model, texts, tokens_per_language=args.tokens_per_language, seq_len=args.seq_len,
                    batch_size=args.batch_size, progress=not args.quiet, corpus=f"{args.corpus}:{args.split}",
                    checkpoint=args.out / CHECKPOINT_DIR, checkpoint_every=args.checkpoint_every)
    shard = current_shard()
    if shard.rank != 0:  # every rank holds the summed totals; one writes them
        return
    stats.save(args.out)
    if args.official_tag:
        stats.to_official(args.out, args.official_tag)
    ranks = f" (summed over {shard.world} processes)" if shard.world > 1 else ""
    print(f"Wrote statistics of {stats.n_layers} layers x {stats.d_mlp} neurons to {args.out}{ranks}: "
          + ", ".join(f"{lang} {n:,} tokens" for lang, n in zip(stats.languages, stats.n.tolist())))
    if args.sentences_out:  # not sharded: rank 0 alone
        sentences = {lang: [d for d in docs if d.strip()][:args.sentences_per_language] for lang, docs in texts.items()}
        acts = collect_sentence_means(model, sentences, batch_size=args.batch_size,
                                      max_tokens_per_sentence=args.max_sentence_tokens, progress=not args.quiet)
        acts.meta["corpus"] = f"{args.corpus}:{args.split}"
        acts.save(args.sentences_out)
        print(f"Wrote mean activations of {acts.means.shape[0]} sentences to {args.sentences_out}.")
