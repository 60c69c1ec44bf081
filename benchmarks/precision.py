r"""What reduced precision changes: firing decisions and LAPE selections in bfloat16 against float32.

1. **Firing decisions, paired.** The same chunks (``--corpus``, ``--tokens`` per language, seq_len
   256, as ``lapelens collect``) run through the model in float32 with fused attention
   (``load_model``'s default), in bfloat16, and in float32 with TransformerLens' eager attention
   (``attention="eager"``). For every token and
   neuron, ``hook_pre > 0`` is compared: the count and share of decisions that differ, per pair.
   The forwards are timed side by side: how much slower (or faster) bfloat16 is on this machine.
2. **LAPE selections.** LAPE at ``--top-rate`` on the paired pass's counts of each way, and the
   Jaccard index of two ways' selections per language; the same for ``--bf16`` / ``--fp32``
   statistics folders (``lapelens collect --dtype ...`` on the same text) against the paired
   float32 counts and against each other.

    python benchmarks/precision.py --model smollm2-135m --fp32 /work/runs/robustness/smollm2-135m/help_0_8k \
        --bf16 /work/runs/bf16/smollm2-135m
    python benchmarks/precision.py --model embedded --tokens 512 --languages en,fr    # a quick check
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch


def signs(model: Any, batch: torch.Tensor) -> list[torch.Tensor]:
    """``hook_pre > 0`` of every layer (bool, [batch, pos, neuron]) from one forward stopped at the last one."""
    from lapelens.activations import _hooks, _run_to_last_mlp
    from lapelens.models import neuron_spec

    out: list[torch.Tensor] = []
    with (
        torch.inference_mode(),
        model.hooks(fwd_hooks=_hooks(neuron_spec(model), lambda layer, pre: out.append(pre > 0))),
    ):
        _run_to_last_mlp(model, batch, use_cache=False)
    return out


def lape_jaccard(a: Any, b: Any, top_rate: float) -> tuple[Any, Any]:
    from lapelens.methods import identify

    la, lb = identify(a, "lape", top_rate=top_rate), identify(b, "lape", top_rate=top_rate)
    return la.compare(lb), (la, lb)


def main() -> None:
    from bench_generate import model_folder

    from lapelens import load_model
    from lapelens.activations import iter_chunks
    from lapelens.constants import PAPER_LANGUAGES
    from lapelens.corpus import load_corpus
    from lapelens.models import neuron_spec
    from lapelens.stats import ActivationStats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", default="embedded:help")
    ap.add_argument("--languages", default=",".join(PAPER_LANGUAGES))
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per language (whole chunks of 256)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--top-rate", type=float, default=0.01)
    ap.add_argument("--fp32", type=Path, help="float32 statistics of the same text (lapelens collect)")
    ap.add_argument(
        "--bf16", type=Path, help="bfloat16 statistics of the same text (lapelens collect --dtype bfloat16)"
    )
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    folder = model_folder(args.model)
    models = {
        "float32": load_model(folder),
        "bfloat16": load_model(folder, dtype="bfloat16"),
        "float32 eager": load_model(folder, attention="eager"),
    }
    spec = neuron_spec(models["float32"])
    langs = args.languages.split(",")
    texts = load_corpus(args.corpus, split="train", languages=langs)
    tok = models["float32"].tokenizer
    pairs = [("bfloat16", "float32"), ("float32 eager", "float32"), ("bfloat16", "float32 eager")]
    differ = {p: torch.zeros(spec.n_layers, dtype=torch.int64) for p in pairs}
    counts = {w: torch.zeros(len(langs), spec.n_layers, spec.d_mlp, dtype=torch.int64) for w in models}
    seconds = {w: 0.0 for w in models}
    n = torch.zeros(len(langs), dtype=torch.int64)
    for k, lang in enumerate(langs):
        chunks = torch.stack(list(iter_chunks(tok, texts[lang], 256, args.tokens)))
        for b, batch in enumerate(chunks.split(args.batch_size)):
            got = {}
            for w in list(models) if b % 2 == 0 else list(models)[::-1]:  # alternate the order of the timed runs
                start = time.perf_counter()
                got[w] = signs(models[w], batch)
                seconds[w] += time.perf_counter() - start
            for w, s in got.items():
                counts[w][k] += torch.stack([x.reshape(-1, spec.d_mlp).sum(0) for x in s])
            for p in pairs:
                differ[p] += torch.tensor([int((x != y).sum()) for x, y in zip(got[p[0]], got[p[1]])])
            n[k] += batch.numel()
        print(f"  {lang}: {int(n[k])} tokens", flush=True)
    decisions = int(n.sum()) * spec.n_neurons
    print(
        f"\n{args.model}: {int(n.sum()):,} tokens ({args.tokens:,} per language, {args.corpus}) x {spec.n_neurons:,} neurons "
        f"= {decisions:,} firing decisions per way"
    )
    print("\n| compared | decisions that differ | share | layers with most |\n|---|---:|---:|---|")
    for p in pairs:
        total = int(differ[p].sum())
        top = differ[p].argsort(descending=True)[:3].tolist()
        print(
            f"| {p[0]} vs {p[1]} | {total:,} | {total / decisions:.2e} | "
            + ", ".join(f"{l} ({int(differ[p][l]):,})" for l in top)
            + " |"
        )
    base = seconds["float32"]
    print(
        "\nforward time (same batches, interleaved): "
        + ", ".join(f"{w} {s:.1f} s ({s / base:.2f}x float32)" for w, s in seconds.items())
    )

    def stats_of(w: str) -> Any:
        z = torch.zeros(len(langs), spec.n_layers, spec.d_mlp, dtype=torch.float64)
        return ActivationStats(tuple(langs), n.clone(), counts[w], z, z.clone())

    tables = {
        "paired counts: bfloat16 vs float32": lape_jaccard(stats_of("bfloat16"), stats_of("float32"), args.top_rate)[0],
        "paired counts: float32 eager vs float32": lape_jaccard(
            stats_of("float32 eager"), stats_of("float32"), args.top_rate
        )[0],
    }
    if args.bf16:
        tables[f"collect --dtype bfloat16 ({args.bf16}) vs paired float32 counts"] = lape_jaccard(
            ActivationStats.load(args.bf16), stats_of("float32"), args.top_rate
        )[0]
    if args.fp32:
        tables[f"float32 statistics ({args.fp32}) vs paired float32 counts"] = lape_jaccard(
            ActivationStats.load(args.fp32), stats_of("float32"), args.top_rate
        )[0]
    if args.fp32 and args.bf16:
        tables[f"collect --dtype bfloat16 ({args.bf16}) vs float32 ({args.fp32})"] = lape_jaccard(
            ActivationStats.load(args.bf16), ActivationStats.load(args.fp32), args.top_rate
        )[0]
    for title, t in tables.items():
        print(f"\nLAPE at top_rate {args.top_rate}, {title}:\n")
        print("| language | " + " | ".join(map(str, t.columns)) + " |\n|---|" + "---:|" * len(t.columns))
        for lang, row in t.iterrows():
            print(
                f"| {lang} | "
                + " | ".join(f"{v:.4f}" if c == "jaccard" else f"{int(v)}" for c, v in row.items())
                + " |"
            )


if __name__ == "__main__":
    main()
