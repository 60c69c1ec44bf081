"""Continued training of a causal LM: the loop the embedded model was trained with, and the
short monolingual tuning runs that PV compares (``methods.pv.tune_per_language``).

AdamW, linear warmup + cosine decay, gradient clipping; batches from :class:`UniformMixture`.
The embedded model's full recipe (tokenizer, config, evaluation) stays in ``lapelens.embedded.train``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int64
from torch import Tensor
from tqdm.auto import tqdm

from lapelens._io import respect_umask
from lapelens.tokens import pack_chunks


class UniformMixture:
    """Batches whose rows come from languages drawn uniformly, each row a random chunk of it."""

    def __init__(self, chunks: Mapping[str, Tensor], batch_size: int, seed: int):
        self.langs = list(chunks)
        self.chunks = [chunks[l] for l in self.langs]
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self) -> Int64[Tensor, "batch pos"]:
        lang_idx = torch.randint(len(self.chunks), (self.batch_size,), generator=self.gen)
        rows = [
            self.chunks[k][torch.randint(len(self.chunks[k]), (1,), generator=self.gen)][0] for k in lang_idx.tolist()
        ]
        return torch.stack(rows)


def lr_schedule(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate: linear warmup, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class LoopResult:
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0


def train_loop(
    model: Any,
    next_batch: Callable[[], Tensor],
    *,
    steps: int,
    lr: float,
    warmup: int,
    min_lr_ratio: float,
    weight_decay: float,
    grad_clip: float,
    bf16: bool,
    evaluate: Callable[[], dict] | None = None,
    eval_every: int = 0,
    on_checkpoint: Callable[[int], None] | None = None,
    checkpoint_seconds: float = 0,
    desc: str = "train",
    log_path: Path | None = None,
    bar: Any = None,
) -> LoopResult:
    """``bar``: a progress bar to advance one step at a time instead of the loop's own (one bar
    over several runs, e.g. PV's tuning of every language)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    model.train()
    res = LoopResult()
    start = last_ckpt = time.time()
    own = bar is None
    bar = tqdm(total=steps, desc=desc, unit="step") if own else bar
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_schedule(step, steps, warmup, min_lr_ratio)
        x = next_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        res.tokens += x.numel()
        entry = {
            "step": step + 1,
            "tokens": res.tokens,
            "train_loss": loss.item(),
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - start, 1),
        }
        if evaluate is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            entry.update(evaluate())
            model.train()
        res.log.append(entry)
        if log_path is not None:  # appended as we go, so a killed run keeps its curve
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{entry['train_loss']:.3f}", **({} if own else {"run": desc}))
        if on_checkpoint is not None and checkpoint_seconds and time.time() - last_ckpt > checkpoint_seconds:
            on_checkpoint(step + 1)
            last_ckpt = time.time()
    if own:
        bar.close()
    res.seconds = time.time() - start
    return res


def continue_training(
    model_dir: str | Path,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    steps: int,
    lr: float = 5e-4,
    seq_len: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    warmup: int = 10,
    bar: Any = None,
) -> Path:
    """Tune an HF causal LM on one language's ``texts`` for ``steps`` steps; save it to ``out_dir``.

    Same loop as ``lapelens.embedded.train.train`` (AdamW, warmup + cosine to 10%, grad clip 1, no weight decay so
    that untouched parameters stay put). Seeded: the same call gives the same weights. ``bar``: a
    progress bar to advance (default: one of its own).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: transformers takes seconds to import

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    chunks = pack_chunks(tokenizer, texts, seq_len)
    train_loop(
        model,
        UniformMixture({"text": chunks}, batch_size, seed),
        steps=steps,
        lr=lr,
        warmup=warmup,
        min_lr_ratio=0.1,
        weight_decay=0.0,
        grad_clip=1.0,
        bf16=False,
        desc=f"tune {Path(out_dir).name}",
        bar=bar,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    respect_umask(out)  # save_pretrained writes its safetensors 0600
    return out
