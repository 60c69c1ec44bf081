"""Reduced precision: bfloat16 and float16 collections, and a float16 overflow stopping the run in
one line (exit code 2) before any statistics or checkpoint of bad sums is written."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lapelens import load_model
from lapelens.activations import NeuronAccumulator, collect
from lapelens.cli import main
from lapelens.constants import STATS_META, STATS_TENSORS
from lapelens.errors import LapelensError
from lapelens.models import NeuronSpec
from tiny import make_tiny_model

SEQ = 16
#: The first projection of each architecture's MLP (what hook_pre reads).
PRE = {"llama": "mlp.gate_proj", "gpt2": "mlp.c_fc"}


def _overflowing(arch, folder):
    """A tiny model whose layer-1 pre-activations reach ~1e5: finite in float32 and bfloat16, inf in float16."""
    make_tiny_model(arch, folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    layers = hf.model.layers if arch == "llama" else hf.transformer.h
    with torch.no_grad():
        layers[1].get_submodule(PRE[arch]).weight.mul_(1e5)
    hf.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    root = tmp_path_factory.mktemp("overflow")
    return {arch: _overflowing(arch, root / arch) for arch in PRE}


def _texts(tiny_texts):
    return {lang: tiny_texts[lang] for lang in ("en", "fr")}


@pytest.mark.parametrize("arch", sorted(PRE))
def test_float16_overflow_names_the_layer(overflowing, tiny_texts, arch):
    model = load_model(overflowing[arch], dtype="float16")
    with pytest.raises(LapelensError, match=r"float16 activations overflow at layer 1 .*bfloat16.*float32"):
        collect(model, _texts(tiny_texts), tokens_per_language=2 * SEQ, seq_len=SEQ, progress=False)
    # the same model counts in bfloat16 (float32's range), and its counts are float32's but for a few
    fp32 = collect(
        load_model(overflowing[arch]), _texts(tiny_texts), tokens_per_language=2 * SEQ, seq_len=SEQ, progress=False
    )
    bf16 = collect(
        load_model(overflowing[arch], dtype="bfloat16"),
        _texts(tiny_texts),
        tokens_per_language=2 * SEQ,
        seq_len=SEQ,
        progress=False,
    )
    assert bf16.meta["dtype"] == "bfloat16" and "dtype" not in fp32.meta
    assert torch.isfinite(bf16.act_sum).all() and torch.equal(bf16.n, fp32.n)
    differ = (bf16.count != fp32.count).float().mean().item()
    assert 0 < differ < 0.2  # rounding moves some decisions near zero, not most


def test_cli_float16_overflow_exits_2_and_writes_nothing(overflowing, tiny_texts, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang, docs in _texts(tiny_texts).items():
        (corpus / f"{lang}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    out = tmp_path / "stats"
    argv = [
        "collect",
        "--model",
        str(overflowing["llama"]),
        "--corpus",
        str(corpus),
        "--languages",
        "en,fr",
        "--tokens-per-language",
        str(4 * SEQ),
        "--seq-len",
        str(SEQ),
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--dtype",
        "float16",
        "--checkpoint-every",
        "0",
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lapelens collect: error: float16 activations overflow at layer 1") and "\n" not in err
    assert not (out / STATS_META).exists() and not (out / STATS_TENSORS).exists()
    assert not list(out.rglob("*.safetensors"))  # no checkpoint of the bad sums either


def test_nan_in_any_dtype_is_refused():
    spec = NeuronSpec(n_layers=3, d_mlp=4, gated=True, act_name="silu")
    acc = NeuronAccumulator(spec, ["en"])
    acc.update(0, 0, torch.ones(2, 5, 4))
    acc.check_finite()  # nothing wrong yet
    bad = torch.ones(2, 5, 4)
    bad[1, 3, 2] = float("nan")
    acc.update(0, 2, bad)
    acc.update(0, 1, bad)
    with pytest.raises(LapelensError, match=r"at layer 1 are inf or NaN .*float32"):
        acc.check_finite()
    acc.check_finite()  # the flags are cleared once reported


def test_a_relu_swallowing_minus_inf_is_still_caught_in_float16():
    spec = NeuronSpec(n_layers=2, d_mlp=4, gated=False, act_name="relu")
    acc = NeuronAccumulator(spec, ["en"])
    pre = torch.full((1, 3, 4), -1.0, dtype=torch.float16)
    pre[0, 1, 0] = float("-inf")  # relu(-inf) = 0: the activation sums stay finite
    acc.update(0, 0, pre)
    with pytest.raises(LapelensError, match="float16 activations overflow at layer 0"):
        acc.check_finite()


def test_unknown_dtype_is_refused():
    with pytest.raises(LapelensError, match="dtype 'float64' is not supported"):
        load_model("embedded", dtype="float64")
