"""``lapelens collect``: per-language neuron statistics of a model on a corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.constants import EMBEDDED
from lapelens.errors import LapelensError

_DTYPES = ("float32", "bfloat16", "float16")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.activations import DEFAULT_BATCH_SIZE, DEFAULT_SENTENCE_TOKENS, DEFAULT_SEQ_LEN

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
    parser.add_argument("--languages", help="Comma-separated language codes (default: every language of the corpus).")
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
    parser.add_argument("--device", default="cpu", help="Torch device (default: cpu).")
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


def _run(args: argparse.Namespace) -> None:
    import torch

    from lapelens.activations import collect, collect_sentence_means
    from lapelens.corpus import load_corpus
    from lapelens.models import load_model

    languages = [l.strip() for l in args.languages.split(",") if l.strip()] if args.languages else None
    if args.languages is not None and not languages:
        raise LapelensError("--languages is empty: give comma-separated codes such as en,zh,fr.")
    for flag, value in (("--tokens-per-language", args.tokens_per_language), ("--seq-len", args.seq_len),
                        ("--batch-size", args.batch_size), ("--sentences-per-language", args.sentences_per_language)):
        if value is not None and value < 1:
            raise LapelensError(f"{flag} must be a positive number, got {value}.")
    texts = load_corpus(args.corpus, split=args.split, languages=languages)
    model = load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    stats = collect(model, texts, tokens_per_language=args.tokens_per_language, seq_len=args.seq_len,
                    batch_size=args.batch_size, progress=not args.quiet, corpus=f"{args.corpus}:{args.split}")
    stats.save(args.out)
    if args.official_tag:
        stats.to_official(args.out, args.official_tag)
    print(f"Wrote statistics of {stats.n_layers} layers x {stats.d_mlp} neurons to {args.out}: "
          + ", ".join(f"{lang} {n:,} tokens" for lang, n in zip(stats.languages, stats.n.tolist())))
    if args.sentences_out:
        sentences = {lang: [d for d in docs if d.strip()][:args.sentences_per_language] for lang, docs in texts.items()}
        acts = collect_sentence_means(model, sentences, batch_size=args.batch_size,
                                      max_tokens_per_sentence=args.max_sentence_tokens, progress=not args.quiet)
        acts.meta["corpus"] = f"{args.corpus}:{args.split}"
        acts.save(args.sentences_out)
        print(f"Wrote mean activations of {acts.means.shape[0]} sentences to {args.sentences_out}.")
