"""``reproduce`` at scale: its stats stage resumes inside a collection, and runs data-parallel under torchrun.

On a tiny random model with a tiny budget (the later stages run too, on rank 0 only).
"""

import json
from pathlib import Path

import pytest
import torch

import lapelens.activations as acts
import lapelens.pipeline as pipeline
from lapelens.cli import main
from lapelens.stats import ActivationStats
from tiny import TEXTS, torchrun

KEYS = ("n", "count", "act_sum", "act_sq_sum")


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures are not what these tests check; drawing them (PNG/SVG through Chromium) is slow."""
    monkeypatch.setattr(pipeline, "_write_figure", lambda fig, path: None)


@pytest.fixture
def corpus(tmp_path):
    """A folder corpus with train and valid text for three languages."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang in ("en", "zh", "fr"):
        for split, n in (("train", 80), ("valid", 20)):
            docs = [f"{TEXTS[lang]} {split} {i}" for i in range(n)]
            (folder / f"{lang}.{split}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return folder


def argv(model, corpus, out, *extra):
    return [
        "reproduce",
        "--model",
        str(model),
        "--corpus",
        str(corpus),
        "--languages",
        "en,zh,fr",
        "--methods",
        "lape",
        "--seq-len",
        "16",
        "--tokens-per-language",
        "320",
        "--eval-tokens-per-language",
        "32",
        "--top-rate",
        "0.1",
        "--ses-texts",
        "4",
        "--n-samples",
        "1",
        "--n-prompts",
        "1",
        "--max-new-tokens",
        "2",
        "--unconditional-tokens",
        "2",
        "--sweep-target",
        "none",
        "--out",
        str(out),
        *extra,
    ]


def _identical(a, b):
    assert a.languages == b.languages
    for k in KEYS:
        assert torch.equal(getattr(a, k), getattr(b, k)), f"{k} differs"


def test_interrupted_stats_stage_resumes_from_its_checkpoint(tiny_dirs, corpus, tmp_path, monkeypatch, capsys):
    model = tiny_dirs["llama"]
    assert main(argv(model, corpus, tmp_path / "whole")) == 0
    real = acts.run_until
    calls = []

    def crash_after(n):
        def run(*a, **k):
            calls.append(1)
            if len(calls) > n:
                raise KeyboardInterrupt
            return real(*a, **k)

        return run

    monkeypatch.setattr(acts, "run_until", crash_after(7))
    capsys.readouterr()
    # a Ctrl-C inside the 8th batch: the checkpoint of the 7 before it stands, and the line says so
    assert main(argv(model, corpus, tmp_path / "resumed", "--checkpoint-every", "0")) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lapelens reproduce: interrupted; 768 tokens saved, no stage finished yet, re-run the same command to resume"
    )  # batches of 8 chunks of 16 tokens: en and zh (320 each, 3 batches) and fr's first
    checkpoints = list((tmp_path / "resumed" / pipeline.STATS_CHECKPOINT).glob("*/rank0-of-1.safetensors"))
    assert len(checkpoints) == 1 and not (tmp_path / "resumed" / "stats").exists()
    calls.clear()
    monkeypatch.setattr(acts, "run_until", crash_after(10**9))
    capsys.readouterr()
    assert main(argv(model, corpus, tmp_path / "resumed", "--checkpoint-every", "0")) == 0
    out = capsys.readouterr()
    assert "resuming from checkpoint 7" in out.err
    whole = ActivationStats.load(tmp_path / "whole" / "stats")
    _identical(ActivationStats.load(tmp_path / "resumed" / "stats"), whole)
    # The stats stage ran only the batches after the checkpoint; the later stages as in a fresh run.
    chunks = [int(n) // 16 for n in whole.n]
    n_batches = sum(-(-c // acts.DEFAULT_BATCH_SIZE) for c in chunks)
    stats_forwards = n_batches - 7
    assert stats_forwards > 0 and len(calls) >= stats_forwards
    assert not (tmp_path / "resumed" / pipeline.STATS_CHECKPOINT).exists()
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert a["perturbation"] == b["perturbation"]


def test_a_checkpoint_of_other_settings_is_discarded_not_mixed_in(tiny_dirs, corpus, tmp_path, monkeypatch):
    model = tiny_dirs["llama"]
    real = acts.run_until
    calls = []

    def crash(*a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(acts, "run_until", crash)
    assert main(argv(model, corpus, tmp_path / "run", "--checkpoint-every", "0")) == 130  # a Ctrl-C
    monkeypatch.setattr(acts, "run_until", real)
    # other tokens per language: the half-done collection of 320 tokens must not be resumed
    args = argv(model, corpus, tmp_path / "run")
    args[args.index("--tokens-per-language") + 1] = "256"
    assert main(args) == 0
    args[-1] = str(tmp_path / "fresh")
    assert main(args) == 0
    _identical(ActivationStats.load(tmp_path / "run" / "stats"), ActivationStats.load(tmp_path / "fresh" / "stats"))


def test_torchrun_reproduce_counts_exactly_as_one_process(tiny_dirs, corpus, tmp_path):
    model = tiny_dirs["llama"]
    assert main(argv(model, corpus, tmp_path / "one")) == 0
    run = torchrun("-m", "lapelens", *argv(model, corpus, tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("results, tables and figures in") == 1  # rank 0 alone reports
    one, two = ActivationStats.load(tmp_path / "one" / "stats"), ActivationStats.load(tmp_path / "two" / "stats")
    assert two.meta["world_size"] == 2
    assert torch.equal(one.n, two.n) and torch.equal(one.count, two.count)
    for k in ("act_sum", "act_sq_sum"):
        torch.testing.assert_close(getattr(one, k), getattr(two, k), rtol=1e-12, atol=1e-12)
    # Everything after the statistics is computed by rank 0 from them: LAPE's neurons are the same.
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert a["perturbation"] == b["perturbation"]
    assert not (tmp_path / "two" / pipeline.STATS_CHECKPOINT).exists()


LEAVE_SCRIPT = """
import os, sys
from lapelens.checkpoint import all_reduce_sum, leave_process_group
from lapelens.cli.collect import process_group
from lapelens.models import load_model
import torch
with process_group("cpu"):
    load_model(sys.argv[1])  # transformers imports torch.distributed.nn.functional here
    all_reduce_sum([torch.ones(3)])
    leave_process_group()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(sys.argv[2] + os.environ["RANK"], "w") as f:
    f.write(str(sum("gloo" in n for n in names)))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_leaving_the_group_stops_the_backend_threads_after_a_model_load(tiny_dirs, tmp_path):
    """A rank that leaves the group must not keep gloo's threads to interpreter shutdown.

    torch.distributed.nn.functional, imported while the group exists, holds it in default
    arguments; its threads then outlive destroy_process_group, and gloo's teardown at exit aborted
    a rank now and then (1 run in 12 of the torchrun reproduce command under load). Whether the
    threads are gone is deterministic, so this checks that rather than the rare abort.
    """
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT, encoding="utf-8")
    run = torchrun(str(script), str(tiny_dirs["llama"]), str(tmp_path / "rank"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    left = [(tmp_path / f"rank{r}").read_text() for r in (0, 1)]
    assert left == ["0", "0"], f"gloo threads still running after leaving the group: {left}"
