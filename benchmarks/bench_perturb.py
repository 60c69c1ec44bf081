"""Time a full perturbation matrix (7 languages x (7 + 1) rows) and compare with bare forwards.

    python benchmarks/bench_perturb.py [--model DIR] [--tokens 8192] [--seq-len 256] [--batch-size 16]

Without --model the model is a random LLaMA of the embedded model's shape (8 layers, d_model
192, d_mlp 1024, vocab 4096); only the time means anything. Prints the matrix's seconds and
tokens per second, and the same tokens through the bare Hugging Face model (no bridge, no hooks)
for reference. The budget for one full matrix is 180 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _models import make_llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, help="A model folder (default: a random embedded-size LLaMA).")
    ap.add_argument("--tokens", type=int, default=None, help="Tokens per language (default: lapelens' default).")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--languages", type=int, default=7)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from lapelens.evaluate.perplexity import DEFAULT_BATCH_SIZE, DEFAULT_EVAL_TOKENS, perturbation_matrix
    from lapelens.models import load_model, neuron_spec
    from lapelens.neurons import LanguageNeurons

    tokens = args.tokens or DEFAULT_EVAL_TOKENS
    batch = args.batch_size or DEFAULT_BATCH_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or make_llama(Path(tmp) / "m", n_layers=8, d_model=192, d_mlp=1024, n_heads=6, vocab_size=4096)
        model = load_model(folder)
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    spec = neuron_spec(model)
    vocab = model.cfg.d_vocab
    gen = torch.Generator().manual_seed(0)
    langs = tuple(f"l{k}" for k in range(args.languages))
    # About as many neurons per language as LAPE selects on the embedded model (~1-3%).
    mask = torch.rand(len(langs), spec.n_layers, spec.d_mlp, generator=gen) < 0.02
    neurons = LanguageNeurons(langs, mask, "random")
    n_chunks = tokens // args.seq_len
    chunks = {l: torch.randint(0, vocab, (n_chunks, args.seq_len), generator=gen) for l in langs}

    start = time.perf_counter()
    result = perturbation_matrix(model, neurons, chunks, batch_size=batch, progress=False)
    seconds = time.perf_counter() - start
    total = n_chunks * args.seq_len * len(langs) * (len(langs) + 1)
    print(f"matrix {len(langs)}x{len(langs) + 1}, {n_chunks * args.seq_len} tokens/language, seq_len {args.seq_len}, "
          f"batch {batch}, {torch.get_num_threads()} threads: {seconds:.1f} s, {total / seconds:.0f} tokens/s "
          f"(bootstrap and tables: {result.table().shape[0]} cells)")

    some = chunks[langs[0]]
    with torch.inference_mode():
        start = time.perf_counter()
        for b in some.split(batch):
            hf(b, use_cache=False)
        bare = time.perf_counter() - start
        start = time.perf_counter()
        for b in some.split(batch):
            model(b, use_cache=False)
        bridged = time.perf_counter() - start
    print(f"one language, bare HF forward: {some.numel() / bare:.0f} tokens/s; bridge forward: {some.numel() / bridged:.0f} tokens/s")


if __name__ == "__main__":
    main()
