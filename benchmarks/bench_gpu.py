"""``collect`` on a GPU: a randomly initialised model of LLaMA-2-7B's shape in bfloat16, no download.

On one device the same token chunks go, interleaved, through the plain Hugging Face model with
logits (what a forward costs), its decoder body alone (what a collection must compute), and
``lapelens collect`` (counts, sums and squares of every neuron through TransformerLens hooks). For
each: tokens per second and peak device memory. The bridge and the plain model share one copy of
the weights (the bridge wraps a second module tree over the same tensors), so a 7B model fits
on a 24 GB card once. Content is irrelevant to speed: the chunks are random token ids.

The official LAPE code reports about 3.5-4k tokens/s for a 7B model on one RTX 3090 (7-8 h per
language for 100M tokens, with vLLM).

    python benchmarks/bench_gpu.py                                     # cuda, LLaMA-2-7B's shape, bf16
    python benchmarks/bench_gpu.py --shape llama-2-7b --batch-size 16 --seq-len 512
    python benchmarks/bench_gpu.py --device cpu --shape tiny --tokens 512 --repeats 1   # CPU smoke test (CI)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SHAPES = {
    # meta-llama/Llama-2-7b-hf's config.json
    "llama-2-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=320,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
    ),
}


def build(shape: str, device: str, dtype: torch.dtype, folder: Path) -> tuple[Any, Any]:
    """The plain HF model (random weights on ``device``) and a lapelens bridge sharing its weights."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from lapelens import load_model
    from tiny import tiny_tokenizer

    config = LlamaConfig(**SHAPES[shape], bos_token_id=0, eos_token_id=1, pad_token_id=2)
    config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)  # ids beyond its vocabulary are fine: only the model reads them
    torch.manual_seed(0)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    with torch.device("meta"):
        twin = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    twin.load_state_dict(hf.state_dict(), assign=True)
    for name, buf in hf.named_buffers():  # non-persistent buffers (rotary frequencies) are not in the state dict
        module, _, leaf = name.rpartition(".")
        twin.get_submodule(module).register_buffer(leaf, buf, persistent=False)
    return hf, load_model(folder, hf_model=twin.eval())


def peak_memory(device: str) -> float:
    """Peak memory since the last reset, in GB: the device's allocator on CUDA, the process's RSS elsewhere."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-2-7b")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per way and repeat")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("No CUDA device here: run with --device cpu --shape tiny for the smoke test.")
    from lapelens.activations import collect_chunks

    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        hf, bridge = build(args.shape, args.device, dtype, Path(tmp))
    n_chunks = max(1, args.tokens // args.seq_len)
    chunks = torch.randint(
        0, hf.config.vocab_size, (n_chunks, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    n_tok = chunks.numel()
    batches = [b.to(args.device) for b in chunks.split(args.batch_size)]

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize(args.device)

    def hf_logits() -> None:
        with torch.inference_mode():
            for b in batches:
                hf(b, use_cache=False)

    def hf_body() -> None:
        with torch.inference_mode():
            for b in batches:
                hf.model(b, use_cache=False)

    def collect() -> None:
        collect_chunks(bridge, {"x": chunks}, batch_size=args.batch_size, progress=False)

    ways: dict[str, Callable[[], None]] = {"hf logits": hf_logits, "hf body": hf_body, "lapelens collect": collect}
    params = sum(p.numel() for p in hf.parameters()) / 1e9
    print(
        f"{args.shape} shape ({params:.2f}B parameters, random), {args.dtype} on {args.device}"
        f"{' (' + torch.cuda.get_device_name(args.device) + ')' if args.device.startswith('cuda') else ''}; "
        f"{n_chunks} chunks x {args.seq_len} tokens, batch {args.batch_size}, {args.repeats} interleaved repeats",
        flush=True,
    )
    for fn in ways.values():  # warm-up (kernels, allocator)
        fn()
    sync()
    times: dict[str, list[float]] = {w: [] for w in ways}
    peaks: dict[str, float] = {}
    order = list(ways)
    for r in range(args.repeats):
        for w in order[r % len(order) :] + order[: r % len(order)]:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(args.device)
            sync()
            start = time.perf_counter()
            ways[w]()
            sync()
            times[w].append(time.perf_counter() - start)
            peaks[w] = max(peaks.get(w, 0.0), peak_memory(args.device))
    rates = {w: n_tok / statistics.median(t) for w, t in times.items()}
    unit = "GB peak allocated" if args.device.startswith("cuda") else "GB peak RSS of the process"
    for w in ways:
        print(f"{w:>17}: {rates[w]:10.1f} tok/s (median of {len(times[w])}), {peaks[w]:6.2f} {unit}")
    print(
        f"lapelens collect / hf body {rates['lapelens collect'] / rates['hf body']:.3f}, "
        f"/ hf logits {rates['lapelens collect'] / rates['hf logits']:.3f}; official LAPE code: ~3,500-4,000 tok/s "
        "for a 7B model on one RTX 3090"
    )
    return rates


if __name__ == "__main__":
    main()
