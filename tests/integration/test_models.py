import pytest
import torch

from lapelens import LapelensError, load_model, neuron_spec
from tiny import GATED


@pytest.mark.parametrize("arch", ["gpt2", "bloom", "opt", "llama", "mistral", "qwen2"])
def test_load_model_logits_equal_hf(tiny_dirs, arch):
    from transformers import AutoModelForCausalLM

    model = load_model(tiny_dirs[arch])
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    toks = torch.tensor([[0, 5, 17, 42, 99, 120]])
    with torch.no_grad():
        assert torch.allclose(model(toks), hf(toks).logits, atol=1e-5)
    spec = neuron_spec(model)
    assert spec.gated == (arch in GATED)
    assert spec.n_layers == 2
    assert spec.d_mlp == (128 if arch == "bloom" else 64)
    expected_act = {"gpt2": "gelu_new", "bloom": "gelu_pytorch_tanh", "opt": "relu"}.get(arch, "silu")
    assert spec.act_name == expected_act


def test_unsupported_activation_is_refused(tiny_dirs, tmp_path):
    import json

    from tiny import make_tiny_model

    folder = make_tiny_model("llama", tmp_path / "tanh")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_act"] = "tanh"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LapelensError, match="tanh"):
        load_model(folder)


def test_bad_paths(tmp_path):
    with pytest.raises(LapelensError, match="does not exist"):
        load_model("./no/such/model")
    with pytest.raises(LapelensError, match="config.json"):
        load_model(tmp_path)
