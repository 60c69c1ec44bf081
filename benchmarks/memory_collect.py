"""Peak memory of ``collect`` for N and for 10N tokens: it must not grow with the corpus.

Each measurement runs in a fresh process (peak RSS only ever rises within one), on a small
random LLaMA-architecture model, with the documents streamed from a generator so that the
text itself is not held in memory either. Prints the peak RSS of both runs, the ratio, and
the growth above the RSS right after loading the model.

    python benchmarks/memory_collect.py [--chunks 32] [--seq-len 128] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` of its own address space. Not ``ru_maxrss``: Linux keeps
    that across ``exec``, so a child started from a 7 GB parent (the speed benchmark, holding
    every way's model) reported the parent's 7 GB as its own peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the Linux-less fallback


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(folder: str, tokens: int, seq_len: int, batch_size: int) -> None:
    from _models import TEXTS

    from lapelens import load_model
    from lapelens.activations import collect

    model = load_model(folder)
    texts = list(TEXTS.values())

    def documents():  # endless stream; collect stops at `tokens`
        i = 0
        while True:
            yield f"{texts[i % len(texts)]} {i}"
            i += 1

    base, load_peak = _current_rss_mb(), _peak_rss_mb()  # the peak so far is the load's (a GGUF conversion: GBs)
    stats = collect(
        model, {"mix": documents()}, tokens_per_language=tokens, seq_len=seq_len, batch_size=batch_size, progress=False
    )
    print(
        json.dumps(
            {"tokens": int(stats.n[0]), "peak_mb": _peak_rss_mb(), "after_load_mb": base, "load_peak_mb": load_peak}
        )
    )


def peak_rss_of_collect(folder: str | Path, tokens: int, seq_len: int, batch_size: int) -> dict:
    """Peak RSS (MB) of ``collect`` on ``tokens`` tokens of the model in ``folder``, in a fresh process."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(folder),
            str(tokens),
            "--seq-len",
            str(seq_len),
            "--batch-size",
            str(batch_size),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(runs: list[dict]) -> float:
    """Print the N and 10N runs; returns peak(10N) / peak(N).

    ``peak_mb`` is the process's lifetime peak, so a load that peaks higher than the collection
    (converting a GGUF file, for one) hides the collection's own: both are printed.
    """
    for r in runs:
        load = f", load peak {r['load_peak_mb']:.1f} MB" if "load_peak_mb" in r else ""
        print(
            f"{r['tokens']:>8} tokens: peak RSS {r['peak_mb']:8.1f} MB  (after model load {r['after_load_mb']:.1f} MB{load}, "
            f"growth during collect {r['peak_mb'] - r['after_load_mb']:+.1f} MB)"
        )
    ratio = runs[1]["peak_mb"] / runs[0]["peak_mb"]
    print(f"peak RSS 10N / N = {ratio:.3f} (target < 1.05)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=32, help="N = chunks x seq-len tokens (default 32)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.seq_len, args.batch_size)
        return

    from _models import make_llama

    n = args.chunks * args.seq_len
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_llama(Path(tmp) / "llama", n_layers=4, d_model=256, d_mlp=1024, n_heads=4)
        runs = [peak_rss_of_collect(folder, tokens, args.seq_len, args.batch_size) for tokens in (n, 10 * n)]
    report(runs)


if __name__ == "__main__":
    main()
