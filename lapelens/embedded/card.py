"""What a trained model's card reports: per-language valid perplexity beside an add-one unigram
model's, bits per UTF-8 byte (comparable across tokenizers), the training stages and the loss
curve; and the card itself (``README.md`` of the model folder)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lapelens.embedded.tokenizer import token_byte_lengths


@torch.inference_mode()
def mean_nll(model: Any, chunks: Tensor, batch_size: int = 16) -> float:
    """Mean next-token NLL (nats) of an HF causal LM over all predicted positions of ``chunks``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        x = chunks[start : start + batch_size]
        logits = model(x).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += x[:, 1:].numel()
    model.train(was_training)
    return total / count


def unigram_nll(train_chunks: Sequence[Tensor], valid_chunks: Tensor, vocab_size: int) -> float:
    """Mean NLL of an add-one-smoothed unigram model fitted on ``train_chunks`` (same predicted positions)."""
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for c in train_chunks:
        counts += torch.bincount(c.flatten(), minlength=vocab_size).double()
    logp = (counts / counts.sum()).log()
    return float(-logp[valid_chunks[:, 1:].flatten()].mean())


def per_language_perplexity(
    model: Any, tokenizer: Any, train_chunks: Mapping[str, Tensor], valid_chunks: Mapping[str, Tensor]
) -> dict[str, dict]:
    """Per language: the model's perplexity on the whole valid split, the add-one unigram model's
    (fitted on the train split) on the same positions, their ratio, the token counts, and the
    model's bits per UTF-8 byte of the predicted tokens (a yardstick that does not depend on the
    tokenizer, so models with different vocabularies can be compared)."""
    byte_lengths = token_byte_lengths(tokenizer)
    final = {}
    for lang, valid in valid_chunks.items():
        nll = mean_nll(model, valid)
        uni = unigram_nll([train_chunks[lang]], valid, len(tokenizer))
        predicted = valid[:, 1:]
        n_bytes = int(byte_lengths[predicted].sum())
        final[lang] = {
            "valid_ppl": math.exp(nll),
            "unigram_ppl": math.exp(uni),
            "ratio": math.exp(nll - uni),
            "bits_per_byte": nll * predicted.numel() / (n_bytes * math.log(2)),
            "train_tokens": int(train_chunks[lang].numel()),
            "valid_tokens": int(valid.numel()),
            "valid_bytes": n_bytes,
        }
    return final


def previous_run(folder: Path) -> tuple[dict | None, list[dict]]:
    """The training summary and log of the model a run continues from (``None, []`` if it has none)."""
    summary_path, log_path = folder / "training_summary.json", folder / "train_log.jsonl"
    if not summary_path.exists():
        return None, []
    log = [json.loads(line) for line in log_path.read_text().splitlines() if line] if log_path.exists() else []
    return json.loads(summary_path.read_text()), log


def model_card(summary: dict, log: list[dict]) -> str:
    cfg = summary["config"]
    last = summary.get("stages", [summary])[-1]  # this run; the stages' totals follow
    lines = [
        "# lapelens embedded model",
        "",
        "A small multilingual LLaMA-architecture causal LM trained from scratch by `lapelens train` "
        f"(lapelens {summary['lapelens_version']}) on the embedded corpus (LibreOffice help and UI "
        "translations and three Debian books; see the corpus's NOTICE). "
        "It exists so that the whole lapelens pipeline runs offline; it is a research toy, not a useful LM.",
        "",
        "## Architecture",
        "",
        f"`LlamaForCausalLM`: {cfg['n_layers']} layers, d_model {cfg['d_model']}, {cfg['n_heads']} heads, "
        f"gated SiLU MLP with {cfg['d_mlp']} neurons per layer ({cfg['n_layers'] * cfg['d_mlp']} in all), RMSNorm, "
        f"rotary positions, tied embeddings, byte-level BPE vocabulary of {cfg['vocab_size']} (NFC, `<s>` `</s>` `<pad>`"
        f"{'; no token spans two Han/kana characters' if cfg.get('cjk_characters') else ''}). "
        f"{summary['parameters']:,} parameters, stored in bf16.",
        "",
        "## Training",
        "",
        f"Languages {', '.join(cfg['languages'])}, mixed uniformly; {cfg['steps']} steps of {cfg['batch_size']} x "
        f"{cfg['seq_len']} tokens = {last['tokens_seen']:,} tokens seen; AdamW (lr {cfg['lr']}, warmup "
        f"{cfg['warmup_steps']}, cosine to {cfg['min_lr_ratio']} x), weight decay {cfg['weight_decay']}, "
        f"seed {cfg['seed']}, bf16 autocast {'on' if cfg['bf16'] else 'off'}; wall time "
        f"{last['wall_seconds'] / 60:.1f} minutes on 2 CPU cores.",
        "",
        *_stages_text(summary),
        "## Validation perplexity (valid split; unigram = add-one unigram model fitted on the train split)",
        "",
        *(
            [
                f"Evaluated after training, on corpus `{summary['evaluated_on']}` as it is now "
                "(`lapelens train --reevaluate`).",
                "",
            ]
            if summary.get("evaluated_on")
            else []
        ),
        "Perplexities are per token, so they depend on the tokenizer; bits per byte (of the predicted tokens' "
        "UTF-8 text) do not, and compare models with different vocabularies.",
        "",
        "| language | valid tokens | model PPL | unigram PPL | model / unigram | bits per byte |",
        "|---|---|---|---|---|---|",
    ]
    for lang, r in summary["per_language"].items():
        bpb = f"{r['bits_per_byte']:.4f}" if "bits_per_byte" in r else "–"
        lines.append(
            f"| {lang} | {r['valid_tokens']:,} | {r['valid_ppl']:.2f} | {r['unigram_ppl']:.1f} | "
            f"{r['ratio']:.4f} | {bpb} |"
        )
    lines += ["", "## Loss curve", "", "| step | tokens | train loss | mean valid loss |", "|---|---|---|---|"]
    for e in log:
        valid = [v for k, v in e.items() if k.startswith("valid_loss_")]
        if valid:
            lines.append(f"| {e['step']} | {e['tokens']:,} | {e['train_loss']:.3f} | {sum(valid) / len(valid):.3f} |")
    return "\n".join(lines) + "\n"


def _stages_text(summary: dict) -> list[str]:
    if len(summary.get("stages", [])) < 2:
        return []
    lines = [
        "Trained in stages, each continuing from the previous weights (`lapelens train --init-from`); "
        "the numbers above are of the last stage, the totals here:",
        "",
    ]
    for n, st in enumerate(summary["stages"], 1):
        c = st["config"]
        lines.append(
            f"{n}. {c['steps']} steps, lr {c['lr']} (warmup {c['warmup_steps']}, cosine to "
            f"{c['min_lr_ratio']} x), corpus `{c['corpus']}`: {st['tokens_seen']:,} tokens, "
            f"{st['wall_seconds'] / 60:.1f} minutes."
        )
    lines += [
        "",
        f"In all: {summary['tokens_seen']:,} tokens, {summary['wall_seconds'] / 60:.1f} minutes. In the loss "
        "curve below, each stage's valid loss is on the first chunks of that stage's corpus's valid split, "
        "so the curve can jump where the corpus changed.",
        "",
    ]
    return lines
