"""Every stage of ``lapelens reproduce`` on one model against its floor, side by side in one run.

For each stage, the same inputs go through (interleaved, alternating which runs first):

- ``lapelens``: the stage's own function, as ``reproduce`` calls it;
- ``tl`` (with ``--tl``): the same function the TransformerLens way: eager attention in every layer,
  every perturbation row a full forward, TransformerLens' generate loop in batches of 50;
- ``floor``: the plain Hugging Face model (SDPA attention, no bridge, no hooks) doing only what the
  stage must do: a body forward over the same chunks for the statistics, over the same padded
  batches for sentence means and embeddings; a forward with loss (``labels=``) per row and chunk
  for a perturbation matrix or the sweep; ``generate`` with the same batch, length, sampling and
  seed for a generation stage (and a forward for the outputs' perplexity where the stage takes it).

What the floor does not do -- language detection of generated text, bootstrap tables, picking
neurons -- is part of the stage's time, not of the floor's: it shows in the ratio. Neuron sets come
from the statistics stage (LAPE at ``--top-rate``, random of the same sizes) and the sentence means
(AP), as in ``reproduce``; the budgets are flags (small by default, reproduce's with ``--full``).

    python benchmarks/bench_stages.py --model smollm2-135m --threads 2 --tl
    python benchmarks/bench_stages.py --model gemma-3-270m --threads 2 --tl
    python benchmarks/bench_stages.py --model embedded --tiny     # a quick check that it works

Run it on a quiet machine: other jobs on the cores change the ratios several-fold.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from bench_generate import hf_generate, model_folder, tl_generate_ids

#: reproduce's budgets for a real model (``--full``), and the defaults here (a few minutes per model).
FULL = dict(
    tokens=100_000,
    eval_tokens=8192,
    ap_sentences=300,
    ses_texts=200,
    samples=100,
    prompts=10,
    new_tokens=24,
    unconditional_tokens=64,
)
SMALL = dict(
    tokens=4096,
    eval_tokens=1024,
    ap_sentences=40,
    ses_texts=32,
    samples=20,
    prompts=4,
    new_tokens=12,
    unconditional_tokens=24,
)
TINY = dict(
    tokens=512, eval_tokens=256, ap_sentences=6, ses_texts=4, samples=3, prompts=2, new_tokens=4, unconditional_tokens=4
)


@dataclass
class Stage:
    name: str
    ways: dict[str, Callable[[], Any]]
    work: str


def _hf(folder: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()


def _padded_batches(
    tokenizer: Any, texts: list[str], keep: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sorted by length and right-padded as collect_sentence_means and sentence_embeddings batch them."""
    from lapelens.activations import padded_batch, separator_id

    sep = separator_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep
    ids = [[sep] + x[:keep] for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(ids)), key=lambda t: len(ids[t]))
    return [padded_batch(ids, order[b : b + batch_size], pad)[:2] for b in range(0, len(order), batch_size)]


@contextlib.contextmanager
def _the_tl_way():
    """Inside: generation by TransformerLens' loop, and every perturbation row a full forward."""
    from lapelens.evaluate import generation as gen
    from lapelens.evaluate import perplexity as ppl
    from lapelens.evaluate import sweep

    saved = gen.generate_ids, ppl.evaluate_rows, sweep.evaluate_rows
    full = lambda model, contexts, chunks, batch_size=16, progress=True, starts=None: saved[1](  # noqa: E731
        model, contexts, chunks, batch_size, progress
    )
    gen.generate_ids, ppl.evaluate_rows, sweep.evaluate_rows = tl_generate_ids, full, full
    try:
        yield
    finally:
        gen.generate_ids, ppl.evaluate_rows, sweep.evaluate_rows = saved


def build_stages(name: str, budget: dict, top_rate: float, scale: float, tl: bool) -> tuple[list[Stage], str]:
    from lapelens import load_model
    from lapelens.activations import collect_chunks, collect_sentence_means, iter_chunks
    from lapelens.constants import PAPER_LANGUAGES
    from lapelens.corpus import load_corpus, load_parallel
    from lapelens.evaluate import generation as gen
    from lapelens.evaluate.embeddings import sentence_embeddings
    from lapelens.evaluate.perplexity import evaluation_chunks, perturbation_matrix
    from lapelens.evaluate.sweep import DEFAULT_RATIOS, selection_ratio_sweep
    from lapelens.methods import identify

    folder = model_folder(name)
    model = load_model(folder)
    eager = load_model(folder, attention="eager") if tl else None
    hf = _hf(folder)
    tok = model.tokenizer
    langs = list(PAPER_LANGUAGES)
    seq = min(256, model.cfg.n_ctx)
    train = load_corpus("embedded", split="train", languages=langs)
    chunks = {l: torch.stack(list(iter_chunks(tok, train[l], seq, budget["tokens"]))) for l in langs}
    evals = evaluation_chunks(model, "embedded", langs, budget["eval_tokens"], seq)
    sentences = {l: [s for d in train[l] for s in d.split("\n") if s.strip()][: budget["ap_sentences"]] for l in langs}
    par = load_parallel("embedded", split="valid", languages=langs).head(budget["ses_texts"])
    stats = collect_chunks(model, chunks, progress=False)
    lape = identify(stats, "lape", top_rate=top_rate)
    rand = identify(stats, "random", reference=lape, seed=0)
    means = collect_sentence_means(model, sentences, progress=False)
    ap = identify(means, "ap", k=100)
    n_eval = sum(c.numel() for c in evals.values())

    def variants(run: Callable[[Any], Any]) -> dict[str, Callable[[], Any]]:
        ways = {"lapelens": lambda: run(model)}
        if tl:

            def old() -> Any:
                with _the_tl_way():
                    return run(eager)

            ways["tl"] = old
        return ways

    def body(batches: list[tuple[torch.Tensor, torch.Tensor | None]]) -> Callable[[], None]:
        def floor() -> None:
            with torch.inference_mode():
                for tokens, mask in batches:
                    hf.model(tokens, attention_mask=mask, use_cache=False)

        return floor

    def with_loss(rows: int, batch_size: int = 16) -> Callable[[], None]:
        def floor() -> None:
            with torch.inference_mode():
                for _ in range(rows):
                    for c in evals.values():
                        for b in c.split(batch_size):
                            hf(b, labels=b, use_cache=False)

        return floor

    stages = [
        Stage(
            "stats",
            {
                **variants(lambda m: collect_chunks(m, chunks, progress=False)),
                "floor": body([(b, None) for c in chunks.values() for b in c.split(8)]),
            },
            f"{sum(c.numel() for c in chunks.values())} tokens, body forward",
        ),
        Stage(
            "sentences",
            {
                **variants(lambda m: collect_sentence_means(m, sentences, progress=False)),
                "floor": body([b for l in langs for b in _padded_batches(tok, sentences[l], 128, 8)]),
            },
            f"{sum(len(s) for s in sentences.values())} sentences, body forward",
        ),
    ]
    for set_name, neurons in (("lape", lape), ("random", rand), ("ap", ap)):
        stages.append(
            Stage(
                f"perturb_{set_name}",
                {
                    **variants(lambda m, n=neurons: perturbation_matrix(m, n, evals, progress=False)),
                    "floor": with_loss(len(neurons.languages) + 1),
                },
                f"{len(langs) + 1} rows x {n_eval} tokens, forward with loss",
            )
        )
    target = "fr"
    stages.append(
        Stage(
            "sweep",
            {
                **variants(lambda m: selection_ratio_sweep(m, stats, target, evals, progress=False)),
                "floor": with_loss(len(DEFAULT_RATIOS)),
            },
            f"{len(DEFAULT_RATIOS)} rows x {n_eval} tokens, forward with loss",
        )
    )
    stages.append(
        Stage(
            "ses",
            {
                **variants(lambda m: sentence_embeddings(m, par, langs, progress=False)),
                "floor": body([b for l in langs for b in _padded_batches(tok, par[l].tolist(), seq - 1, 8)]),
            },
            f"{len(par)} texts x {len(langs)} languages, body forward",
        )
    )
    unconditional = gen.Sampling(max_new_tokens=budget["unconditional_tokens"], seed=0)
    greedy = gen.Sampling.greedy(max_new_tokens=budget["new_tokens"])
    bos = [[tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]] * budget["samples"]
    prompts = {l: gen.encode_prompts(model, par[l].head(budget["prompts"]).tolist(), 32) for l in langs}
    stages += [
        Stage(
            "steer_unconditional",
            {
                **variants(
                    lambda m: gen.unconditional_steering(m, lape, stats, langs, budget["samples"], scale, unconditional)
                ),
                "floor": lambda: hf_generate(hf, tok, bos, unconditional, len(langs) + 1),
            },
            f"{len(langs) + 1} x {budget['samples']} samples x {budget['unconditional_tokens']} tokens, sampled",
        ),
        Stage(
            "kojima",
            {
                **variants(lambda m: gen.kojima_pinning(m, ap, langs, budget["samples"], unconditional)),
                "floor": lambda: hf_generate(hf, tok, bos, unconditional, len(langs) + 1),
            },
            f"{len(langs) + 1} x {budget['samples']} samples x {budget['unconditional_tokens']} tokens, sampled",
        ),
        Stage(
            "steer_prompted",
            {
                **variants(
                    lambda m: gen.prompted_steering(
                        m, lape, stats, par, n_prompts=budget["prompts"], scale=scale, sampling=greedy
                    )
                ),
                "floor": lambda: [hf_generate(hf, tok, prompts[l], greedy, 1 + 2 * (len(langs) - 1)) for l in langs],
            },
            f"{len(langs)} x {1 + 2 * (len(langs) - 1)} x {budget['prompts']} prompts x {budget['new_tokens']} tokens, greedy",
        ),
        Stage(
            "deactivated_generation",
            {
                **variants(
                    lambda m: gen.generation_under_deactivation(
                        m, lape, {l: par[l].head(budget["prompts"]).tolist() for l in langs}, rand, sampling=greedy
                    )
                ),
                "floor": lambda: [hf_generate(hf, tok, prompts[l], greedy, 3, score=True) for l in langs],
            },
            f"{len(langs)} x 3 x {budget['prompts']} prompts x {budget['new_tokens']} tokens, greedy (+ its perplexity)",
        ),
    ]
    label = f"{name}: {model.cfg.n_layers} layers x {model.cfg.d_mlp} neurons, vocab {model.cfg.d_vocab}"
    return stages, label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m, gemma-3-270m, embedded or a local HF folder")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=1, help="times each way runs (interleaved)")
    ap.add_argument(
        "--tl",
        action="store_true",
        help="also time each stage the TransformerLens way (eager attention, full-forward rows, its generate loop)",
    )
    ap.add_argument("--full", action="store_true", help="reproduce's budgets (long)")
    ap.add_argument("--tiny", action="store_true", help="tiny budgets: a check that it works")
    ap.add_argument("--stages", help="comma-separated subset (default: all)")
    ap.add_argument("--top-rate", type=float, default=0.01)
    ap.add_argument("--steer-scale", type=float, default=1.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = FULL if args.full else TINY if args.tiny else SMALL
    import warnings

    warnings.filterwarnings("ignore")
    stages, label = build_stages(args.model, budget, args.top_rate, args.steer_scale, args.tl)
    if args.stages:
        wanted = set(args.stages.split(","))
        stages = [s for s in stages if s.name in wanted]
    print(
        f"{label}; budgets {budget}; {args.repeats} interleaved repeat(s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    rows = []
    for k, stage in enumerate(stages):
        times: dict[str, list[float]] = {w: [] for w in stage.ways}
        order = list(stage.ways)
        for r in range(args.repeats):
            for way in order if (k + r) % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                stage.ways[way]()
                times[way].append(time.perf_counter() - start)
        med = {w: statistics.median(t) for w, t in times.items()}
        line = f"{stage.name:>24}: " + ", ".join(f"{w} {t:.2f} s" for w, t in med.items())
        line += f"; lapelens/floor {med['lapelens'] / med['floor']:.2f}"
        if "tl" in med:
            line += f", tl/floor {med['tl'] / med['floor']:.2f}, tl/lapelens {med['tl'] / med['lapelens']:.2f}"
        print(f"{line}   ({stage.work})", flush=True)
        rows.append((stage.name, med))
    print(
        "\n| stage | lapelens s | "
        + ("tl s | " if args.tl else "")
        + "floor s | lapelens / floor |"
        + (" tl / floor |" if args.tl else "")
    )
    print("|---|---:|" + ("---:|" if args.tl else "") + "---:|---:|" + ("---:|" if args.tl else ""))
    for name, med in rows:
        cells = (
            [f"{med['lapelens']:.1f}"]
            + ([f"{med['tl']:.1f}"] if args.tl else [])
            + [f"{med['floor']:.1f}", f"{med['lapelens'] / med['floor']:.2f}"]
        )
        if args.tl:
            cells.append(f"{med['tl'] / med['floor']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
