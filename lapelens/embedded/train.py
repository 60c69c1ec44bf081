"""Train a small multilingual LLaMA-architecture model from scratch (the embedded default).

Two stages, both seeded and logged:

1. a byte-level BPE tokenizer (``tokenizers``), trained on the same number of characters of every
   language, with ``<s>``/``</s>``/``<pad>`` inside the vocabulary and NFC normalisation (by
   default no token spans two Han/kana characters);
2. a ``transformers`` ``LlamaForCausalLM`` (gated SiLU MLP, RMSNorm, rotary), trained with a plain
   PyTorch loop: AdamW, linear warmup + cosine decay, languages mixed uniformly (every sequence of a
   batch is drawn from a language picked uniformly at random), every document starting with BOS so
   that generation from BOS alone has to pick a language.

The final evaluation reports, per language, the valid perplexity next to an add-one unigram
model's and the bits per UTF-8 byte, which do not depend on the tokenizer.

The training loop lives in ``lapelens.training`` (PV's short monolingual tuning runs use it too),
the tokenizer in ``lapelens.embedded.tokenizer``, the evaluation and the model card in
``lapelens.embedded.card``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lapelens._io import respect_umask
from lapelens._version import __version__
from lapelens.constants import EMBEDDED, PAPER_LANGUAGES
from lapelens.corpus import load_corpus
from lapelens.embedded.card import mean_nll, model_card, per_language_perplexity, previous_run
from lapelens.embedded.tokenizer import train_tokenizer
from lapelens.errors import LapelensError
from lapelens.lock import OUTPUT
from lapelens.models import embedded_model_dir
from lapelens.tokens import pack_chunks
from lapelens.training import UniformMixture, train_loop


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved next to the model). The defaults are the
    recipe of the shipped embedded model (``lapelens train --out DIR --threads 2`` remakes it)."""

    out: str = field(metadata=OUTPUT)
    """Folder to write the model, tokenizer, model card and log to."""
    corpus: str = EMBEDDED
    """Corpus name or folder (see ``lapelens.load_corpus``); its train and valid splits are used."""
    languages: tuple[str, ...] = PAPER_LANGUAGES
    """Languages to train on, each with the same number of tokens."""
    init_from: str = ""
    """Continue from this HF folder (or 'embedded'): its tokenizer and weights instead of new ones."""
    vocab_size: int = 4096
    """Tokenizer vocabulary size (byte-level BPE)."""
    tokenizer_chars_per_language: int = 600_000
    """Characters of each language the tokenizer is trained on (equal amounts: a balanced vocabulary)."""
    cjk_characters: bool = True
    """Make every Han/kana character a pre-token of its own, so that no token spans two of them: a Chinese
    or Japanese token is one character or a byte piece of one. The vocabulary's merges then go to
    the words of the other languages."""
    n_layers: int = 8
    """Transformer blocks."""
    d_model: int = 192
    """Width of the residual stream."""
    d_mlp: int = 1024
    """Neurons per MLP (the units LAPE ranks)."""
    n_heads: int = 6
    """Attention heads per block."""
    seq_len: int = 256
    """Tokens per training sequence (the model's context)."""
    batch_size: int = 16
    """Sequences per optimiser step."""
    steps: int = 2400
    """Optimiser steps."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.05
    """Final learning rate of the cosine schedule, as a share of the peak."""
    warmup_steps: int = 60
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    bf16: bool = False
    """bf16 autocast. Off by default: on CPUs without native bf16 (AVX2 only) it is ~10x slower."""
    eval_every: int = 100
    """Steps between evaluations on the valid split."""
    eval_chunks_per_language: int = 16
    """Valid chunks per language in each evaluation."""
    checkpoint_minutes: float = 10.0
    """Minutes between checkpoints (a killed run resumes from the last)."""
    seed: int = 0
    """Seed of the initialisation and of the data order."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""


# ---- data ------------------------------------------------------------------------------------
def pack_languages(tokenizer: Any, texts_by_language: Mapping[str, Sequence[str]], seq_len: int) -> dict[str, Tensor]:
    """Every language's documents as BOS-separated ``seq_len`` chunks (see ``lapelens.tokens``)."""
    return {lang: pack_chunks(tokenizer, docs, seq_len) for lang, docs in texts_by_language.items()}


# ---- model -----------------------------------------------------------------------------------
def llama_config(cfg: TrainConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=max(1024, cfg.seq_len),
        hidden_act="silu",
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _save_hf(model: Any, tokenizer: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
    respect_umask(out)  # save_pretrained writes its safetensors 0600


# ---- the full run ----------------------------------------------------------------------------
def train(cfg: TrainConfig) -> Path:
    """Train tokenizer and model on ``cfg.corpus``; write an HF folder with a model card to ``cfg.out``."""
    from transformers import LlamaForCausalLM

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    train_docs = load_corpus(cfg.corpus, split="train", languages=list(cfg.languages))
    valid_docs = load_corpus(cfg.corpus, split="valid", languages=list(cfg.languages))
    if cfg.init_from:
        from transformers import AutoTokenizer

        source = embedded_model_dir() if cfg.init_from == EMBEDDED else Path(cfg.init_from)
        tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        tokenizer = train_tokenizer(train_docs, cfg.vocab_size, cfg.tokenizer_chars_per_language, cfg.cjk_characters)
    train_chunks = pack_languages(tokenizer, train_docs, cfg.seq_len)
    valid_chunks = pack_languages(tokenizer, valid_docs, cfg.seq_len)
    data_summary = {
        l: {"train_tokens": int(train_chunks[l].numel()), "valid_tokens": int(valid_chunks[l].numel())}
        for l in cfg.languages
    }
    print("tokens per language:", json.dumps(data_summary))

    if cfg.init_from:
        model = LlamaForCausalLM.from_pretrained(source, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(llama_config(cfg, tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    eval_sets = {l: c[: cfg.eval_chunks_per_language] for l, c in valid_chunks.items()}

    def evaluate() -> dict:
        return {f"valid_loss_{l}": round(mean_nll(model, c), 4) for l, c in eval_sets.items()}

    log_path = out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)

    def checkpoint(step: int) -> None:
        _save_hf(model, tokenizer, out)
        (out / "checkpoint.json").write_text(json.dumps({"step": step}))

    result = train_loop(
        model,
        UniformMixture(train_chunks, cfg.batch_size, cfg.seed),
        steps=cfg.steps,
        lr=cfg.lr,
        warmup=cfg.warmup_steps,
        min_lr_ratio=cfg.min_lr_ratio,
        weight_decay=cfg.weight_decay,
        grad_clip=cfg.grad_clip,
        bf16=cfg.bf16,
        evaluate=evaluate,
        eval_every=cfg.eval_every,
        on_checkpoint=checkpoint,
        checkpoint_seconds=cfg.checkpoint_minutes * 60,
        desc="train",
        log_path=log_path,
    )

    # Final evaluation on the whole valid split, in the saved (bf16) precision.
    _save_hf(model, tokenizer, out)
    saved = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    final = per_language_perplexity(saved, tokenizer, train_chunks, valid_chunks)
    summary = {
        "lapelens_version": __version__,
        "config": asdict(cfg),
        "parameters": n_params,
        "tokens_seen": result.tokens,
        "wall_seconds": round(result.seconds),
        "per_language": final,
    }
    log = result.log
    if cfg.init_from:
        # A continued run: the card and summary describe the whole history, stage by stage.
        previous, previous_log = previous_run(source)
        if previous is not None:
            stages = previous.get("stages") or [{k: previous[k] for k in ("config", "tokens_seen", "wall_seconds")}]
            summary["stages"] = [
                *stages,
                {"config": asdict(cfg), "tokens_seen": result.tokens, "wall_seconds": round(result.seconds)},
            ]
            summary["tokens_seen"] = sum(s["tokens_seen"] for s in summary["stages"])
            summary["wall_seconds"] = sum(s["wall_seconds"] for s in summary["stages"])
            offset_step, offset_tokens = (
                (previous_log[-1]["step"], previous_log[-1]["tokens"]) if previous_log else (0, 0)
            )
            log = previous_log + [
                {**e, "step": e["step"] + offset_step, "tokens": e["tokens"] + offset_tokens} for e in result.log
            ]
            log_path.write_text("".join(json.dumps(e) + "\n" for e in log))
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2))
    (out / "checkpoint.json").unlink(missing_ok=True)
    (out / "README.md").write_text(model_card(summary, log))
    print(json.dumps(final, indent=1))
    return out


def reevaluate(folder: str | Path, corpus: str = "embedded") -> dict[str, dict]:
    """Evaluate a ``lapelens train`` output folder on ``corpus`` (e.g. after the corpus was
    rebuilt) and rewrite its ``training_summary.json`` and model card with the new numbers."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = Path(folder)
    summary, log = previous_run(folder)
    if summary is None:
        raise LapelensError(f"{folder} has no training_summary.json: not a `lapelens train` output folder")
    languages = list(summary["config"]["languages"])
    seq_len = summary["config"]["seq_len"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    train_chunks = pack_languages(tokenizer, load_corpus(corpus, "train", languages), seq_len)
    valid_chunks = pack_languages(tokenizer, load_corpus(corpus, "valid", languages), seq_len)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    summary["per_language"] = per_language_perplexity(model, tokenizer, train_chunks, valid_chunks)
    summary["evaluated_on"] = corpus
    (folder / "training_summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "README.md").write_text(model_card(summary, log))
    return summary["per_language"]
