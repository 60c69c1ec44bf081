"""Generation's tokens per second against Hugging Face ``generate`` on the same batch, in one run.

The two settings of ``reproduce``'s generation stages, each on its own batch:

- ``unconditional``: ``--samples`` sequences from BOS alone, sampled, ``--unconditional-tokens`` new
  tokens (unconditional steering, Kojima's pinning: one batch per condition);
- ``prompted``: ``--prompts`` prompts of up to 32 tokens of the parallel corpus, greedy with
  repetition penalty 1.1, ``--new-tokens`` new tokens (prompted steering, generation under
  deactivation).

Ways, interleaved (alternating which runs first): ``lapelens`` (:func:`generate_ids` on the bridge:
all of a condition's sequences in one batch), ``tl`` (TransformerLens' generate loop in batches
of 50 with eager attention: ``model.generate`` of the bridge), ``hf generate`` (the plain
Hugging Face model, SDPA, the same GenerationConfig and seed). The tokens of ``lapelens`` and
``hf generate`` are compared: they are the same when the bridge computes the same logits.

    python benchmarks/bench_generate.py --model smollm2-135m --threads 2
    python benchmarks/bench_generate.py --model gemma-3-270m --threads 2
    python benchmarks/bench_generate.py --model embedded --samples 4 --prompts 2 --new-tokens 4 --unconditional-tokens 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch


def tl_generate_ids(model: Any, prompts: Any, sampling: Any, on_batch: Any = None) -> list[list[int]]:
    """Generation by TransformerLens' generate loop (the bridge's ``generate``), in batches of 50;
    ``on_batch(n)`` after each batch, as :func:`lapelens.evaluate.generation.generate_ids` calls it."""
    from lapelens.evaluate import generation as gen

    _, eos, pad = gen._special_ids(model.tokenizer)
    out: list[list[int]] = []
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(sampling.seed)
        for start in range(0, len(prompts), 50):
            tokens, mask = gen.left_padded(prompts[start : start + 50], pad)
            kw = {"attention_mask": mask} if not bool(mask.all()) else {}
            result = model.generate(
                tokens,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sampling.do_sample,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                repetition_penalty=sampling.repetition_penalty,
                stop_at_eos=eos is not None,
                eos_token_id=eos,
                verbose=False,
                **kw,
            )
            out += [r[: r.index(eos)] if eos in r else r for r in result[:, tokens.shape[1] :].tolist()]
            if on_batch is not None:
                on_batch(len(tokens))
    return out


def hf_generate(
    hf: Any, tokenizer: Any, prompts: list[list[int]], sampling: Any, calls: int = 1, score: bool = False
) -> list[list[int]]:
    """``calls`` generations of ``prompts`` in one batch by the plain HF model; with ``score``, a
    forward over each output too (generation under deactivation reports the outputs' perplexity)."""
    from lapelens.evaluate import generation as gen

    _, eos, pad = gen._special_ids(tokenizer)
    tokens, mask = gen.left_padded(prompts, pad)
    config = sampling.generation_config(eos, pad)
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(sampling.seed)
        for _ in range(calls):
            out = hf.generate(input_ids=tokens, attention_mask=mask, generation_config=config)
            if score:
                full = torch.cat([mask, torch.ones(len(out), out.shape[1] - mask.shape[1], dtype=mask.dtype)], dim=1)
                hf(out, attention_mask=full, use_cache=False)
    return [r[: r.index(eos)] if eos is not None and eos in r else r for r in out[:, tokens.shape[1] :].tolist()]


def model_folder(name: str) -> Any:
    from lapelens.models import embedded_model_dir
    from lapelens.pretrained import PRETRAINED, hf_folder

    return hf_folder(name) if name in PRETRAINED else (embedded_model_dir() if name == "embedded" else name)


def main() -> None:
    from transformers import AutoModelForCausalLM

    from lapelens import load_model
    from lapelens.corpus import load_parallel
    from lapelens.evaluate import generation as gen

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--samples", type=int, default=100, help="sequences from BOS (reproduce: --n-samples 100)")
    ap.add_argument("--unconditional-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=10, help="prompts (reproduce: --n-prompts 10)")
    ap.add_argument("--new-tokens", type=int, default=24)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    folder = model_folder(args.model)
    model, eager = load_model(folder), load_model(folder, attention="eager")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    par = load_parallel("embedded", split="valid", languages=["fr"])
    settings = {
        "unconditional": ([[bos]] * args.samples, gen.Sampling(max_new_tokens=args.unconditional_tokens, seed=0)),
        "prompted": (
            gen.encode_prompts(model, par["fr"].head(args.prompts).tolist(), 32),
            gen.Sampling.greedy(max_new_tokens=args.new_tokens),
        ),
    }
    print(
        f"{args.model}: {model.cfg.n_layers} layers, vocab {model.cfg.d_vocab}; {args.repeats} interleaved repeats, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    for name, (prompts, sampling) in settings.items():
        ways = {
            "lapelens": lambda prompts=prompts, sampling=sampling: gen.generate_ids(model, prompts, sampling),
            "tl": lambda prompts=prompts, sampling=sampling: tl_generate_ids(eager, prompts, sampling),
            "hf generate": lambda prompts=prompts, sampling=sampling: hf_generate(hf, tok, prompts, sampling),
        }
        times: dict[str, list[float]] = {w: [] for w in ways}
        outputs: dict[str, Any] = {}
        order = list(ways)
        for r in range(args.repeats):
            for w in order[r % 3 :] + order[: r % 3]:
                start = time.perf_counter()
                outputs[w] = ways[w]()
                times[w].append(time.perf_counter() - start)
        n_tok = len(prompts) * sampling.max_new_tokens
        med = {w: statistics.median(t) for w, t in times.items()}
        same = sum(a == b for a, b in zip(outputs["lapelens"], outputs["hf generate"]))
        print(
            f"{name}: batch {len(prompts)} x {sampling.max_new_tokens} new tokens "
            f"({'sampled' if sampling.do_sample else 'greedy'}); "
            + ", ".join(f"{w} {n_tok / t:.1f} tok/s ({t:.2f} s)" for w, t in med.items())
            + f"; lapelens / hf generate throughput {med['hf generate'] / med['lapelens']:.2f} (target >= 0.9), "
            f"tl / hf generate {med['hf generate'] / med['tl']:.2f}; "
            f"outputs identical to hf generate: {same}/{len(prompts)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
