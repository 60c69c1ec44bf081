r"""A perturbation matrix against the same rows of Hugging Face forwards with loss; and what starting
rows at their first perturbed block saves on real neuron sets.

1. **The floor.** ``--languages`` languages, each with ``--share`` of the neurons of *every* layer
   drawn at random (so no row can start late), held-out chunks of random token ids; the matrix
   (the unperturbed row and one row per language) against the plain Hugging Face model (SDPA)
   running ``model(chunk, labels=chunk)`` on the same rows and chunks. Interleaved repeats.
   Target: the matrix costs at most 1.1x the forwards with loss.
2. **Starting late** (``--neurons NAME=PATH``, repeatable: a lapelens neuron folder or an official
   ``.pth`` mask, e.g. a run's ``neurons_lape``, ``neurons_lave``, ``neurons_ap``): each row starts at
   the lowest block its neurons are in, from the unperturbed row's residual stream. Prints the
   start of every row, the share of block forwards that skips, the matrix's time against the same
   matrix with every row a full forward (interleaved), and the largest difference in any chunk's
   loss between the two (0: bit-identical).

    python benchmarks/bench_perturb.py --model smollm2-135m --threads 2
    python benchmarks/bench_perturb.py --model smollm2-135m --threads 2 --skip-floor \
        --neurons lape=RUN/neurons_lape --neurons lave=RUN/neurons_lave --neurons ap=RUN/neurons_ap
    python benchmarks/bench_perturb.py --model embedded --tokens 512 --repeats 1    # quick check
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def interleaved(ways: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each way (alternating which runs first) and each way's last result."""
    times: dict[str, list[float]] = {w: [] for w in ways}
    out: dict[str, Any] = {}
    order = list(ways)
    for r in range(repeats):
        for w in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            out[w] = ways[w]()
            times[w].append(time.perf_counter() - start)
    return {w: statistics.median(t) for w, t in times.items()}, out


def main() -> None:
    from bench_generate import model_folder
    from transformers import AutoModelForCausalLM

    from lapelens import load_model
    from lapelens.cli._evaluation import load_selection
    from lapelens.evaluate.perplexity import DEFAULT_BATCH_SIZE, perturbation_matrix, row_contexts
    from lapelens.models import neuron_spec
    from lapelens.neurons import LanguageNeurons

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per language (reproduce: 8192)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--languages", type=int, default=7)
    ap.add_argument("--share", type=float, default=0.02, help="random neurons per language, in every layer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--neurons", action="append", default=[], metavar="NAME=PATH", help="neuron sets to start late")
    ap.add_argument("--skip-floor", action="store_true", help="only the neuron sets")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    folder = model_folder(args.model)
    model = load_model(folder)
    spec = neuron_spec(model)
    gen = torch.Generator().manual_seed(0)
    n_chunks = max(1, args.tokens // args.seq_len)
    print(
        f"{args.model}: {spec.n_layers} layers x {spec.d_mlp} neurons, vocab {model.cfg.d_vocab}; {n_chunks} chunks x "
        f"{args.seq_len} tokens per language, batch {args.batch_size}, {args.repeats} interleaved repeats, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )

    if not args.skip_floor:
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
        langs = tuple(f"l{k}" for k in range(args.languages))
        mask = torch.rand(len(langs), spec.n_layers, spec.d_mlp, generator=gen) < args.share
        neurons = LanguageNeurons(langs, mask, "random")
        chunks = {l: torch.randint(0, model.cfg.d_vocab, (n_chunks, args.seq_len), generator=gen) for l in langs}

        def floor() -> list[float]:
            losses = []
            with torch.inference_mode():
                for _ in range(len(langs) + 1):
                    for c in chunks.values():
                        for b in c.split(args.batch_size):
                            losses.append(float(hf(b, labels=b, use_cache=False).loss))
            return losses

        med, out = interleaved(
            {
                "matrix": lambda: perturbation_matrix(
                    model, neurons, chunks, batch_size=args.batch_size, progress=False
                ),
                "hf forwards with loss": floor,
            },
            args.repeats,
        )
        n_tok = (len(langs) + 1) * len(langs) * n_chunks * args.seq_len
        none = out["matrix"].chunks.query("perturbed == 'none'")
        mean_nll = none["nll"].sum() / none["tokens"].sum()
        hf_mean = float(np.mean(out["hf forwards with loss"][: len(langs) * -(-n_chunks // args.batch_size)]))
        print(
            f"floor: a {len(langs) + 1}-row x {len(langs)}-language matrix ({n_tok:,} tokens), {args.share:.0%} random "
            f"neurons per language in every layer: matrix {med['matrix']:.1f} s, HF forwards with loss "
            f"{med['hf forwards with loss']:.1f} s -> matrix / floor {med['matrix'] / med['hf forwards with loss']:.3f} "
            f"(target <= 1.1); unperturbed mean NLL {mean_nll:.5f} vs HF's {hf_mean:.5f}",
            flush=True,
        )

    for spec_arg in args.neurons:
        name, _, path = spec_arg.partition("=")
        selection = load_selection(Path(path), model)
        bound = selection.on(model)
        starts = {l: bound.first_layer(l) for l in selection.languages}
        skipped = sum(starts.values()) / (spec.n_layers * (len(starts) + 1))
        chunks = {
            l: torch.randint(0, model.cfg.d_vocab, (n_chunks, args.seq_len), generator=gen) for l in selection.languages
        }
        med, out = interleaved(
            {
                "started late": lambda selection=selection, chunks=chunks: perturbation_matrix(
                    model, selection, chunks, batch_size=args.batch_size, progress=False
                ),
                "full forwards": lambda selection=selection, chunks=chunks: perturbation_matrix(
                    model, row_contexts(model, selection), chunks, batch_size=args.batch_size, progress=False
                ),
            },
            args.repeats,
        )
        diff = np.abs(
            out["started late"].chunks["nll"].to_numpy() - out["full forwards"].chunks["nll"].to_numpy()
        ).max()
        print(
            f"{name} ({selection.method}, {sum(selection.sizes().values())} neurons): first layer per row {starts}; "
            f"{skipped:.1%} of the block forwards skipped; started late {med['started late']:.1f} s, full forwards "
            f"{med['full forwards']:.1f} s -> {med['started late'] / med['full forwards']:.3f}; "
            f"largest |difference| in a chunk's NLL {diff:.3g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
