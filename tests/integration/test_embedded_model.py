"""The shipped embedded model: its files, and its hooks and logits against the HF modules."""

import json

import pytest
import torch

from lapelens import load_model, neuron_spec
from lapelens.models import embedded_model_dir

TEXTS = ["选择要复制的文本。", "Sélectionnez le texte à copier.", "テキストを選択します。"]


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded")


@pytest.fixture(scope="module")
def hf():
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(embedded_model_dir(), dtype=torch.float32).eval()


def test_embedded_files():
    from safetensors import safe_open

    folder = embedded_model_dir()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["hidden_act"] == "silu"
    assert cfg["num_hidden_layers"] >= 8
    assert cfg["num_hidden_layers"] * cfg["intermediate_size"] >= 8192
    assert sum(f.stat().st_size for f in folder.iterdir()) < 30e6
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    summary = json.loads((folder / "training_summary.json").read_text())
    assert set(summary["per_language"]) == {"en", "zh", "fr", "es", "vi", "id", "ja"}


def test_embedded_training_files_agree():
    # The summary, the log and the model card were written by one run: the log has one entry per
    # step, its last token count is the summary's (steps x batch x sequence length), and the card
    # (README.md, which states the wall time, tokens and perplexities) is what `model_card` writes
    # from the summary and the log, so a number edited in one of them fails here.
    from lapelens.embedded.card import model_card

    folder = embedded_model_dir()
    summary = json.loads((folder / "training_summary.json").read_text())
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines() if line]
    cfg = summary["config"]
    assert [e["step"] for e in log] == list(range(1, cfg["steps"] + 1))
    assert summary["tokens_seen"] == log[-1]["tokens"] == cfg["steps"] * cfg["batch_size"] * cfg["seq_len"]
    assert (folder / "README.md").read_text() == model_card(summary, log)


def test_embedded_logits_and_hooks_equal_hf(embedded, hf):
    spec = neuron_spec(embedded)
    assert (spec.gated, spec.act_name) == (True, "silu")
    layer = spec.n_layers // 2
    seen = {}

    def pre_hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        seen["gate"], seen["post"] = module.gate_proj(x), module.act_fn(module.gate_proj(x)) * module.up_proj(x)

    for text in TEXTS:
        toks = embedded.to_tokens(text)
        assert toks[0, 0].item() == embedded.tokenizer.bos_token_id
        assert embedded.tokenizer.decode(toks[0, 1:]) == text
        handle = hf.model.layers[layer].mlp.register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            with torch.no_grad():
                hf_logits = hf(toks).logits
        finally:
            handle.remove()
        with torch.no_grad():
            logits, cache = embedded.run_with_cache(toks, names_filter=[spec.hook_pre(layer), spec.hook_post(layer)])
        assert torch.allclose(logits, hf_logits, atol=1e-4)
        assert torch.allclose(cache[spec.hook_pre(layer)], seen["gate"], atol=1e-5)
        assert torch.allclose(cache[spec.hook_post(layer)], seen["post"], atol=1e-5)


def test_embedded_generates_from_bos_and_from_a_prompt(embedded):
    from lapelens.evaluate.generation import Sampling, generate_ids

    bos = embedded.tokenizer.bos_token_id
    prompt = embedded.to_tokens("Sélectionnez le texte")[0].tolist()
    greedy = Sampling(max_new_tokens=8, do_sample=False)
    out_bos, out_prompt = generate_ids(embedded, [[bos], prompt], greedy)
    eos = embedded.tokenizer.eos_token_id
    # Greedy decoding is the argmax of the forward pass, step by step (an independent check of the
    # batched, left-padded, cached generation); it stops before the first EOS.
    for start, out in (([bos], out_bos), (prompt, out_prompt)):
        seq = list(start)
        while len(seq) - len(start) < 8 and (len(seq) == len(start) or seq[-1] != eos):
            with torch.no_grad():
                seq.append(int(embedded(torch.tensor([seq]))[0, -1].argmax()))
        expected = seq[len(start) :]
        assert out == (expected[: expected.index(eos)] if eos in expected else expected)
    assert len(out_bos) > 0 and len(out_prompt) > 0


def test_cli_loads_the_model_quietly(capfd):
    # The evaluation commands load their model with load_model_quietly: nothing the loading prints
    # (transformers' weight-loading bar, log lines, warnings) reaches the terminal.
    import argparse

    from lapelens.cli._evaluation import load_model_quietly

    capfd.readouterr()
    model = load_model_quietly(argparse.Namespace(model="embedded", device="cpu", dtype="float32"))
    assert capfd.readouterr() == ("", "")
    assert (
        neuron_spec(model).n_layers
        == json.loads((embedded_model_dir() / "config.json").read_text())["num_hidden_layers"]
    )
