"""The GPU benchmark runs on the CPU with a tiny shape (CI's smoke test), its bridge shares the plain
model's weights and counts what plain PyTorch hooks on the HF modules count."""

import sys

import torch

from tiny import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402

from lapelens.activations import collect_chunks  # noqa: E402


def test_gpu_benchmark_smoke_on_cpu(capsys):
    rates = bench_gpu.main(
        ["--device", "cpu", "--shape", "tiny", "--tokens", "256", "--seq-len", "64", "--repeats", "1"]
    )
    assert set(rates) == {"hf logits", "hf body", "lapelens collect"} and all(r > 0 for r in rates.values())
    out = capsys.readouterr().out
    assert "tiny shape" in out and "bfloat16 on cpu" in out and "lapelens collect / hf body" in out


def test_the_bridge_shares_the_weights_and_counts_like_hf(tmp_path):
    hf, bridge = bench_gpu.build("tiny", "cpu", torch.bfloat16, tmp_path)
    ours = {p.data_ptr() for p in bridge.original_model.parameters()}
    assert ours == {p.data_ptr() for p in hf.parameters()}  # one copy of the weights
    chunks = torch.randint(0, 320, (3, 32), generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(2, 176, dtype=torch.int64)

    def count(i):
        def hook(module, args, out):
            counts[i] += (out > 0).sum((0, 1))

        return hook

    handles = [layer.mlp.gate_proj.register_forward_hook(count(i)) for i, layer in enumerate(hf.model.layers)]
    with torch.inference_mode():
        hf.model(chunks)
    for h in handles:
        h.remove()
    stats = collect_chunks(bridge, {"x": chunks}, progress=False)
    assert torch.equal(stats.count[0], counts) and stats.meta["dtype"] == "bfloat16"


def test_stage_benchmark_runs_every_way_on_the_embedded_model():
    """bench_stages.py end to end on tiny budgets: each chosen stage, the TransformerLens way and the floor."""
    import subprocess

    stages = ("stats", "ses", "steer_unconditional")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_stages.py"),
            "--model",
            "embedded",
            "--tiny",
            "--tl",
            "--stages",
            ",".join(stages),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(stages) <= set(rows)
    for stage in stages:
        cells = [c.strip() for c in rows[stage].split("|")[2:-1]]
        lapelens_s, tl_s, floor_s = (float(c) for c in cells[:3])
        assert min(lapelens_s, tl_s, floor_s) >= 0 and float(cells[3]) > 0
