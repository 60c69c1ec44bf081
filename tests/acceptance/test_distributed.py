"""Data-parallel collection (torch.distributed, gloo) and device_map loading, against one process."""

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lapelens import load_model
from lapelens.activations import collect
from lapelens.stats import ActivationStats
from tiny import TEXTS, torchrun

SEQ, BATCH, TOKENS = 16, 2, 352  # 11 batches per language: the ranks get 6 and 5


def _docs(lang, n=60):
    return [f"{TEXTS[lang]} {i}" for i in range(n)]


TEXTS_ALL = {lang: _docs(lang) for lang in TEXTS}


def _close(a, b):
    """Counts exactly; float sums to rounding (returns the largest relative difference)."""
    assert a.languages == b.languages
    assert torch.equal(a.n, b.n) and torch.equal(a.count, b.count)
    worst = 0.0
    for k in ("act_sum", "act_sq_sum"):
        x, y = getattr(a, k), getattr(b, k)
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
        worst = max(worst, ((x - y).abs() / x.abs().clamp_min(1e-300)).max().item())
    return worst


@pytest.fixture(scope="module")
def one_process(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    return collect(model, TEXTS_ALL, tokens_per_language=TOKENS, seq_len=SEQ, batch_size=BATCH, progress=False)


def test_torchrun_two_processes_equal_one(tiny_dirs, one_process, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang, docs in TEXTS_ALL.items():
        (corpus / f"{lang}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    out = tmp_path / "stats"
    run = torchrun(
        "-m",
        "lapelens",
        "collect",
        "--model",
        str(tiny_dirs["llama"]),
        "--corpus",
        str(corpus),
        "--languages",
        ",".join(TEXTS_ALL),
        "--seq-len",
        str(SEQ),
        "--batch-size",
        str(BATCH),
        "--tokens-per-language",
        str(TOKENS),
        "--out",
        str(out),
        "--quiet",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("Wrote statistics") == 1 and "summed over 2 processes" in run.stdout  # rank 0 writes
    stats = ActivationStats.load(out)
    assert stats.meta["world_size"] == 2
    _close(stats, one_process)
    assert not (out / "collect.checkpoint").exists()


def _crashing(docs, after):
    yield from docs[:after]
    raise KeyboardInterrupt


def _rank_main(rank, world, init, folder, out):
    """One rank: uninterrupted run; a run that crashes part-way with checkpoints; its resumption."""
    import lapelens.activations as acts
    import lapelens.tokens

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = load_model(folder)
        kw = dict(tokens_per_language=TOKENS, seq_len=SEQ, batch_size=BATCH, progress=False)
        whole = collect(model, TEXTS_ALL, **kw)
        ck = Path(out) / "ck"
        lapelens.tokens._TOKENIZE_GROUP = 1  # so that the crash comes after document 3 of "fr", part-way through it
        crash = {l: _crashing(d, 3) if l == "fr" else d for l, d in TEXTS_ALL.items()}
        try:
            collect(model, crash, checkpoint=ck, checkpoint_every=0, **kw)
        except KeyboardInterrupt:
            pass
        info = json.loads(
            __import__("safetensors")
            .safe_open(str(ck / f"rank{rank}-of-{world}.safetensors"), "pt")
            .metadata()["lapelens_checkpoint"]
        )
        forwards = []
        real = acts.run_until
        acts.run_until = lambda *a, **k: (forwards.append(1), real(*a, **k))
        resumed = collect(model, TEXTS_ALL, checkpoint=ck, checkpoint_every=0, **kw)
        acts.run_until = real
        assert not ck.exists()  # every rank's file and then the folder are removed at the end
        if rank == 0:
            whole.save(Path(out) / "whole")
            resumed.save(Path(out) / "resumed")
        (Path(out) / f"rank{rank}.json").write_text(
            json.dumps({"positions": [p["batches"] for p in info["positions"]], "forwards": len(forwards)})
        )
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_resume_bit_identical(tiny_dirs, one_process, tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_main, args=(2, init, str(tiny_dirs["llama"]), str(tmp_path)), nprocs=2, join=True)
    whole, resumed = ActivationStats.load(tmp_path / "whole"), ActivationStats.load(tmp_path / "resumed")
    for k in ("n", "count", "act_sum", "act_sq_sum"):
        assert torch.equal(getattr(whole, k), getattr(resumed, k)), k
    _close(whole, one_process)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(ranks):
        en, fr, zh, ja = info["positions"]  # batches read per language when it crashed
        assert en == 11 and 0 < fr < 11 and zh == ja == 0
        own_left = sum(1 for b in range(fr, 11) if b % 2 == r) + 2 * sum(1 for b in range(11) if b % 2 == r)
        assert info["forwards"] == own_left  # each rank resumed from its own checkpoint, not from zero


def test_device_map_with_a_layer_offloaded_to_disk(tiny_dirs, one_process, tmp_path):
    """Accelerate's dispatch through the same bridge and hooks: one layer's weights live on disk."""
    from transformer_lens.model_bridge import TransformerBridge

    from lapelens.fastpath import use_sdpa

    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    model = TransformerBridge.boot_transformers(
        str(tiny_dirs["llama"]), device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    model.eval()
    use_sdpa(model)  # as load_model does: the one-process statistics were made with fused attention
    assert model.original_model.hf_device_map["model.layers.1"] == "disk"
    stats = collect(model, TEXTS_ALL, tokens_per_language=TOKENS, seq_len=SEQ, batch_size=BATCH, progress=False)
    _close(stats, one_process)


def test_load_model_device_map(tiny_dirs, one_process, tmp_path):
    import inspect

    if "device_map" not in inspect.signature(load_model).parameters:
        pytest.skip("lapelens.load_model has no device_map parameter yet (models.py)")
    model = load_model(tiny_dirs["llama"], device_map="auto")
    stats = collect(model, TEXTS_ALL, tokens_per_language=TOKENS, seq_len=SEQ, batch_size=BATCH, progress=False)
    _close(stats, one_process)
