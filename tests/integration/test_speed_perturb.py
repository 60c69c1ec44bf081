"""The perturbation matrix with rows started at their first perturbed block: the same per-chunk
losses as full forwards (bit for bit), agreeing with plain PyTorch hooks on the Hugging Face
modules, and the blocks below each row's start are not run."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from lapelens import load_model
from lapelens.evaluate.perplexity import NONE, perturbation_matrix, row_contexts
from lapelens.evaluate.sweep import selection_ratio_sweep
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats
from tiny import make_tiny_model

LANGS = ("low", "high", "empty", "mid")


@pytest.fixture(scope="module")
def deep_llama(tmp_path_factory):
    return make_tiny_model("llama", tmp_path_factory.mktemp("deep") / "llama", n_layers=4)


def _neurons(n_layers: int, d_mlp: int) -> LanguageNeurons:
    """Rows that start at block 0 (low), 2 (high), nowhere (empty: no neurons) and 1 (mid)."""
    mask = torch.zeros(len(LANGS), n_layers, d_mlp, dtype=torch.bool)
    mask[0, 0, :5] = mask[0, 3, 7:9] = True
    mask[1, 2, ::4] = mask[1, 3, 1] = True
    mask[3, 1, 3:20:2] = True
    return LanguageNeurons(LANGS, mask, "hand")


def _chunks(vocab: int, n: int = 5, pos: int = 12):
    gen = torch.Generator().manual_seed(3)
    return {
        "x": torch.randint(3, vocab, (n, pos), generator=gen),
        "y": torch.randint(3, vocab, (n, pos), generator=gen),
    }


def _hf_nll(folder, chunks: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-chunk summed NLL of the plain Hugging Face model with the masked neurons' inputs to
    down_proj zeroed by forward pre-hooks: an independent computation of a deactivation."""
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    handles = []
    for i, layer in enumerate(hf.model.layers):
        idx = mask[i].nonzero().flatten()

        def zero(module, args, idx=idx):
            x = args[0].clone()
            x[..., idx] = 0
            return (x,)

        handles.append(layer.mlp.down_proj.register_forward_pre_hook(zero))
    with torch.inference_mode():
        logits = hf(chunks).logits
    for h in handles:
        h.remove()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), chunks[:, 1:].reshape(-1), reduction="none")
    return nll.view(len(chunks), -1).double().sum(dim=1).numpy()


@pytest.mark.parametrize("which", ["deep_llama", "embedded"])
def test_resumed_rows_equal_full_forwards(request, which):
    folder = request.getfixturevalue("deep_llama") if which == "deep_llama" else "embedded"
    model = load_model(folder)
    neurons = _neurons(model.cfg.n_layers, model.cfg.d_mlp)
    chunks = _chunks(min(300, model.cfg.d_vocab))
    resumed = perturbation_matrix(model, neurons, chunks, batch_size=2, progress=False, n_boot=10)
    # a mapping of contexts carries no start layers: every row is a full forward, row by row
    full = perturbation_matrix(model, row_contexts(model, neurons), chunks, batch_size=2, progress=False, n_boot=10)
    a, b = resumed.chunks, full.chunks
    assert list(a.columns) == list(b.columns) and a[["perturbed", "evaluated", "chunk"]].equals(
        b[["perturbed", "evaluated", "chunk"]]
    )
    assert np.array_equal(a["nll"].to_numpy(), b["nll"].to_numpy())
    assert resumed.ppl.equals(full.ppl)
    none = a[a["perturbed"] == NONE]["nll"].to_numpy()
    assert np.array_equal(a[a["perturbed"] == "empty"]["nll"].to_numpy(), none)
    assert not np.array_equal(a[a["perturbed"] == "high"]["nll"].to_numpy(), none)


def test_resumed_rows_agree_with_plain_pytorch_hooks(deep_llama):
    model = load_model(deep_llama)
    neurons = _neurons(4, model.cfg.d_mlp)
    chunks = _chunks(300)
    result = perturbation_matrix(model, neurons, chunks, batch_size=3, progress=False, n_boot=10)
    for k, row in enumerate(LANGS):  # noqa: B007 (read by the query below)
        for lang, c in chunks.items():  # noqa: B007
            got = result.chunks.query("perturbed == @row and evaluated == @lang")["nll"].to_numpy()
            np.testing.assert_allclose(got, _hf_nll(deep_llama, c, neurons.mask[k]), rtol=1e-5)


def test_blocks_below_a_rows_start_are_not_run(deep_llama):
    model = load_model(deep_llama)
    neurons = _neurons(4, model.cfg.d_mlp)
    chunks = _chunks(300, n=4)
    runs = torch.zeros(4, dtype=torch.long)

    def count(layer):
        def hook(pre, hook):
            runs[layer] += pre.shape[0]

        return hook

    with model.hooks(fwd_hooks=[(f"blocks.{i}.mlp.hook_pre", count(i)) for i in range(4)]):
        perturbation_matrix(model, neurons, chunks, batch_size=2, progress=False, n_boot=10)
    n = sum(len(c) for c in chunks.values())
    # none and low run every block; mid starts at 1, high at 2; empty (no neurons) runs nothing
    assert runs.tolist() == [2 * n, 3 * n, 4 * n, 4 * n]


def test_sweep_rows_start_late_and_equal_full_forwards(deep_llama):
    model = load_model(deep_llama)
    gen = torch.Generator().manual_seed(5)
    n = torch.tensor([1000, 1000])
    count = torch.zeros(2, 4, model.cfg.d_mlp, dtype=torch.int64)
    count[:, 2:] = torch.randint(0, 1000, (2, 2, model.cfg.d_mlp), generator=gen)  # only layers 2-3 ever fire
    stats = ActivationStats(
        ("fr", "en"),
        n,
        count,
        torch.rand(2, 4, model.cfg.d_mlp, dtype=torch.float64),
        torch.rand(2, 4, model.cfg.d_mlp, dtype=torch.float64),
    )
    chunks = _chunks(300, n=3)
    sweep = selection_ratio_sweep(
        model, stats, "fr", chunks, ratios=(0, 0.05, 0.2), batch_size=2, progress=False, n_boot=10
    )
    from lapelens.evaluate.sweep import sweep_masks

    masks, _ = sweep_masks(stats, "fr", (0.05, 0.2))
    assert all(not m[:2].any() for m in masks.values())  # the rows start at block 2
    full = perturbation_matrix(
        model,
        {f"{r:g}": (lambda m=m: _deactivated(model, m)) for r, m in masks.items()},
        chunks,
        batch_size=2,
        progress=False,
        n_boot=10,
    )
    got = sweep.matrix.chunks.set_index(["perturbed", "evaluated", "chunk"])["nll"]
    ref = full.chunks.set_index(["perturbed", "evaluated", "chunk"])["nll"]
    assert np.array_equal(got.loc[ref.index].to_numpy(), ref.to_numpy())
    assert set(got.index.get_level_values(0)) == {NONE, "0.05", "0.2"}


def _deactivated(model, mask):
    from lapelens.interventions import deactivate

    return deactivate(model, mask)
