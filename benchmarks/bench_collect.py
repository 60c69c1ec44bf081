"""``collect``'s tokens per second against the plain Hugging Face body forward on the same chunks.

Ways, interleaved (each repeat runs every way once, in a rotated order, so that background load
drifting during the run hits all alike): ``hf body`` (``model.model``: the decoder body a collection
must compute, SDPA attention), ``collect`` (:func:`lapelens.activations.collect_chunks`: counts,
sums and squares of every neuron through TransformerLens hooks) and, with ``--tl``,
``collect eager`` (the same with TransformerLens' eager attention in every layer:
``load_model(..., attention="eager")``). Target: collect >= 0.97x the body forward.

``--profile`` adds one profiled run of each way: the share of the time in each kind of operator
(matmuls, attention, element-wise, the rest), then the top operators. A profile is a share, so it
stays meaningful on a busy machine where absolute rates do not.

    python benchmarks/bench_collect.py --model smollm2-135m --threads 2 --tl
    python benchmarks/bench_collect.py --model gemma-3-270m --threads 2 --tl
    python benchmarks/bench_collect.py --model smollm2-135m --profile --tl --repeats 1
    python benchmarks/bench_collect.py --model shape --layers 2 --chunks 2 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: Operator kinds of a profile, by aten name.
KINDS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul", "aten::linear"),
    "attention": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_softmax",
        "aten::softmax",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_flash_attention",
    ),
    "element-wise": (
        "aten::mul",
        "aten::add",
        "aten::silu",
        "aten::gelu",
        "aten::tanh",
        "aten::pow",
        "aten::gt",
        "aten::mul_",
        "aten::add_",
        "aten::masked_fill",
        "aten::neg",
        "aten::cat",
        "aten::copy_",
        "aten::rsqrt",
        "aten::mean",
        "aten::sum",
        "aten::div",
        "aten::where",
        "aten::index_fill",
    ),
}


def folder_of(name: str, tmp: Path, layers: int | None) -> Path:
    if name == "shape":
        from _models import SMOLLM2_135M_SHAPE, make_llama

        shape = dict(SMOLLM2_135M_SHAPE, **({"n_layers": layers} if layers else {}))
        return make_llama(tmp / "shape", **shape)
    from bench_generate import model_folder

    return Path(model_folder(name))


def profile(fn: Callable[[], Any], top: int = 8) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    kind_of = {name: kind for kind, names in KINDS.items() for name in names}
    shares: dict[str, float] = {}
    for e in events:
        kind = kind_of.get(e.key, "other")
        shares[kind] = shares.get(kind, 0.0) + e.self_cpu_time_total / total
    lines = ["    " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(f"      {e.key:<52} {100 * e.self_cpu_time_total / total:5.1f}%  {e.count:6d} calls")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default="smollm2-135m",
        help="smollm2-135m, gemma-3-270m, embedded, 'shape' (a random "
        "LLaMA of SmolLM2-135M's shape) or a local HF folder",
    )
    ap.add_argument("--layers", type=int, help="with --model shape: fewer layers")
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--tl", action="store_true", help="also collect with TransformerLens' eager attention")
    ap.add_argument("--profile", action="store_true", help="where the time goes, per way")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from transformers import AutoModelForCausalLM

    from lapelens import load_model
    from lapelens.activations import collect_chunks

    with tempfile.TemporaryDirectory() as tmp:
        folder = folder_of(args.model, Path(tmp), args.layers)
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
        bridges = {"collect": load_model(folder)}
        if args.tl:
            bridges["collect eager"] = load_model(folder, attention="eager")
    vocab = hf.config.vocab_size
    chunks = torch.randint(0, vocab, (args.chunks, args.seq_len), generator=torch.Generator().manual_seed(0))
    n_tok = chunks.numel()

    def body() -> None:
        with torch.inference_mode():
            for b in chunks.split(args.batch_size):
                hf.model(b, use_cache=False)

    ways: dict[str, Callable[[], Any]] = {"hf body": body}
    for name, bridge in bridges.items():
        ways[name] = lambda bridge=bridge: collect_chunks(
            bridge, {"x": chunks}, batch_size=args.batch_size, progress=False
        )
    print(
        f"{args.model}: {hf.config.num_hidden_layers} layers, d_model {hf.config.hidden_size}, d_mlp "
        f"{hf.config.intermediate_size}; {args.chunks} chunks x {args.seq_len} tokens, batch {args.batch_size}, "
        f"{args.repeats} interleaved repeats, {torch.get_num_threads()} threads",
        flush=True,
    )
    for fn in ways.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways)
    for r in range(args.repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            start = time.perf_counter()
            ways[name]()
            times[name].append(time.perf_counter() - start)
        print(f"  repeat {r + 1}: " + ", ".join(f"{n} {n_tok / times[n][-1]:.0f} tok/s" for n in order), flush=True)
    for name, ts in times.items():
        print(f"{name:>14}: best {n_tok / min(ts):8.1f} tok/s, median {n_tok / statistics.median(ts):8.1f} tok/s")
    for name in bridges:
        best = min(times["hf body"]) / min(times[name])
        med = statistics.median(times["hf body"]) / statistics.median(times[name])
        print(
            f"{name} / hf body throughput: best {best:.3f}, median {med:.3f}"
            + (" (target >= 0.97)" if name == "collect" else "")
        )
    if args.profile:
        print("\nwhere the time goes (self CPU time, one run each):")
        for name, fn in ways.items():
            print(f"  {name}:\n{profile(fn)}", flush=True)


if __name__ == "__main__":
    main()
