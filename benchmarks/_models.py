"""Random models for the benchmarks, saved like real checkpoints and loaded through ``load_model``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny import TEXTS, make_tiny_model, tiny_tokenizer  # noqa: E402,F401


def make_llama(
    folder: Path,
    n_layers: int = 12,
    d_model: int = 768,
    d_mlp: int = 3072,
    n_heads: int = 12,
    vocab_size: int | None = None,
    seed: int = 0,
    n_kv_heads: int | None = None,
    **config,
) -> Path:
    """A random LLaMA-architecture model (with the tiny test tokenizer) saved to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads or n_heads,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        **config,
    )
    model = AutoModelForCausalLM.from_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


#: HuggingFaceTB/SmolLM2-135M's shape (its config.json): the benchmarks' default "real-sized" model.
SMOLLM2_135M_SHAPE = dict(
    n_layers=30,
    d_model=576,
    d_mlp=1536,
    n_heads=9,
    n_kv_heads=3,
    vocab_size=49152,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)


def corpus(n_docs: int = 2000) -> list[str]:
    """Documents cycling through the tiny multilingual texts (content is irrelevant to speed)."""
    texts = list(TEXTS.values())
    return [texts[i % len(texts)] for i in range(n_docs)]
