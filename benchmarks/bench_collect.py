"""Throughput of ``collect`` against a bare forward of the same model on the same chunks.

Model: random LLaMA architecture, 12 layers, d_model 768, d_mlp 3072 (see ``_models.make_llama``),
loaded with ``load_model``. The two measurements are interleaved so that background load hits
both alike (alternating which runs first); the best and median of the repeats are printed. Target: collect >= 0.95x bare forward.

    python benchmarks/bench_collect.py [--chunks 16] [--seq-len 256] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _models import corpus, make_llama
from lapelens import load_model
from lapelens.activations import collect_chunks
from lapelens.tokens import pack_chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=None, help="default: the tiny tokenizer's (320)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(make_llama(Path(tmp) / "llama", vocab_size=args.vocab_size))
    cfg = model.cfg
    chunks = pack_chunks(model.tokenizer, corpus(), args.seq_len, max_tokens=args.chunks * args.seq_len)
    n_tok = chunks.numel()
    print(f"model: {cfg.n_layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, vocab {cfg.d_vocab}; "
          f"{chunks.shape[0]} chunks x {args.seq_len} tokens, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    def bare() -> None:
        with torch.inference_mode():
            for batch in chunks.split(args.batch_size):
                model(batch, return_type=None, use_cache=False)

    def coll() -> None:
        collect_chunks(model, {"en": chunks}, batch_size=args.batch_size, progress=False)

    times: dict[str, list[float]] = {"bare forward": [], "collect": []}
    bare(), coll()  # warm-up
    pair = [("bare forward", bare), ("collect", coll)]
    for r in range(args.repeats):
        # Alternate which goes first (ABBA...), so that a drifting background load favours neither.
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    for name, ts in times.items():
        print(f"{name:>13}: best {n_tok / min(ts):8.1f} tok/s   median {n_tok / statistics.median(ts):8.1f} tok/s   "
              f"times {[round(t, 2) for t in ts]}")
    best = min(times["bare forward"]) / min(times["collect"])
    med = statistics.median(times["bare forward"]) / statistics.median(times["collect"])
    print(f"collect / bare-forward throughput: best {best:.3f}, median {med:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
