"""Tiny random Hugging Face models, saved with ``save_pretrained`` like a real checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from lapelens.constants import STATS_META, STATS_TENSORS
from lapelens.stats import ActivationStats

#: Architectures the suite covers: plain MLPs (gpt2, bloom, opt) and gated ones (llama, mistral, qwen2).
ARCHS = ("gpt2", "bloom", "opt", "llama", "mistral", "qwen2")
GATED = {"llama", "mistral", "qwen2"}

TEXTS = {
    "en": "The quick brown fox jumps over the lazy dog. Open the file and save the document.",
    "fr": "Le renard brun saute par-dessus le chien paresseux. Ouvrez le fichier et enregistrez.",
    "zh": "敏捷的棕色狐狸跳过了懒狗。打开文件并保存文档。",
    "ja": "素早い茶色の狐がのろまな犬を飛び越える。ファイルを開いて文書を保存します。",
}


def tiny_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(TEXTS.values()) * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_config(arch: str, vocab_size: int, n_layers: int = 2, d_model: int = 32, d_mlp: int = 64):
    import transformers as tf

    special = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if arch == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=4, n_inner=d_mlp, n_positions=128, **special
        )
    if arch == "bloom":  # BLOOM's MLP width is fixed at 4 * hidden
        return tf.BloomConfig(vocab_size=vocab_size, hidden_size=d_model, n_layer=n_layers, n_head=4, **special)
    if arch == "opt":
        return tf.OPTConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            ffn_dim=d_mlp,
            max_position_embeddings=128,
            word_embed_proj_dim=d_model,
            **special,
        )
    common = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **special,
    )
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    raise ValueError(arch)


def make_tiny_model(arch: str, folder: Path, seed: int = 0, **shape) -> Path:
    """Save a random ``arch`` model and its tokenizer to ``folder``; returns the folder."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok), **shape))
    # Random init gives tiny weights; scale so that activations take both signs and vary.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def torchrun(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 ARGS`` on a free local port, one thread per rank."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def refuse_model_loads(monkeypatch, why: str) -> None:
    """Make ``load_model`` fail with ``why`` in every lapelens module that imported it (each command's
    module imports it at the top, so replacing ``lapelens.models.load_model`` alone is not enough)."""
    import lapelens.models
    from lapelens.cli import build_parser

    def refuse(*args, **kwargs):
        raise AssertionError(why)

    build_parser()  # every command's module imported, so that each one's load_model is replaced
    real = lapelens.models.load_model
    for module in [m for name, m in sys.modules.items() if name.startswith("lapelens")]:
        if getattr(module, "load_model", None) is real:
            monkeypatch.setattr(module, "load_model", refuse)


#: ``lapelens ARGS`` in a child where every call of MODULE.NAME (one batch) takes DELAY s more, so
#: that a signal or a second command lands in the middle of a stage; READY is touched after each call.
_SLOW_CLI = r"""
import importlib, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
module = importlib.import_module({module!r})
real = getattr(module, {name!r})
def slow(*a, **k):
    out = real(*a, **k)
    Path({ready!r}).touch()
    time.sleep({delay!r})
    return out
setattr(module, {name!r}, slow)
from lapelens.cli import main
sys.exit(main(sys.argv[1:]))
"""
#: What ``slow_cli`` slows down: a batch of a collection, a batch of generations.
BATCH_OF_COLLECT = ("lapelens.activations", "run_until")
BATCH_OF_GENERATION = ("lapelens.evaluate.generation", "generate_ids")


def slow_cli(
    argv: list[str], ready: Path, slow: tuple[str, str] = BATCH_OF_COLLECT, delay: float = 0.2, timeout: float = 300
) -> subprocess.Popen:
    """Start ``lapelens ARGV`` (one thread) with ``slow`` slowed down; returns once its first batch is done."""
    code = _SLOW_CLI.format(
        root=str(Path(__file__).resolve().parent.parent), ready=str(ready), module=slow[0], name=slow[1], delay=delay
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + timeout
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return child


def explorer_run(root: Path) -> Path:
    """A `lapelens reproduce`-shaped folder for a tiny random LLaMA (stats, LAPE, LAP, config.json)
    over a corpus folder of the four TEXTS (train: the texts; valid: reversed and plain)."""
    import json

    import lapelens
    from lapelens.activations import collect
    from lapelens.methods import identify

    model_dir = make_tiny_model("llama", root / "model")
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for lang, text in TEXTS.items():
        (corpus / f"{lang}.train.txt").write_text("\n".join([text] * 8) + "\n")
        (corpus / f"{lang}.valid.txt").write_text("\n".join([text[::-1]] * 4 + [text] * 4) + "\n")
    run = root / "run"
    model = lapelens.load_model(model_dir)
    stats = collect(model, lapelens.load_corpus(str(corpus), "train"), seq_len=16, progress=False)
    stats.save(run / "stats")
    identify(stats, "lape", top_rate=0.2).save(run / "neurons_lape")
    identify(stats, "lap").save(run / "neurons_lap")
    (run / "config.json").write_text(json.dumps({"model": str(model_dir), "corpus": str(corpus), "seq_len": 16}))
    return run


def chromium(playwright):
    """Debian's Chromium through Playwright (never a downloaded browser), or None if it is missing."""
    import shutil

    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if path is None:
        return None
    return playwright.chromium.launch(
        executable_path=path,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
    )


# ---- a tiny finished run, built from results (no model) ------------------------------------------
#: The languages and methods of :func:`fake_run`.
RUN_LANGS = ("en", "zh", "fr")
RUN_METHODS = ("lape", "random")
#: The model :func:`fake_run`'s results record: the embedded model's folder on some machine.
FAKE_MODEL = "/somewhere/lapelens/data/model"


def fake_perturbation(method: str, seed: int, rows=None, hurt=(0.4, 0.05)):
    """Per-chunk NLLs where deactivating a language hurts that language most (a Fig. 2 diagonal):
    by ``hurt[0]`` nats per token on its own text, ``hurt[1]`` on the others'."""
    import numpy as np
    import pandas as pd

    from lapelens.evaluate.perplexity import NONE, PerturbationResult

    rng = np.random.default_rng(seed)
    records = []
    for row in rows or (NONE, *RUN_LANGS):
        for lang in RUN_LANGS:
            for chunk in range(3):
                tokens = 40 + 5 * chunk
                extra = 0.0 if row == NONE else (hurt[0] if row == lang else hurt[1])
                records.append((row, lang, chunk, tokens * (2.0 + extra + rng.normal(0, 0.03)), tokens))
    chunks = pd.DataFrame(records, columns=["perturbed", "evaluated", "chunk", "nll", "tokens"])
    return PerturbationResult(
        chunks,
        {
            "method": method,
            "unit": "neurons",
            "model": FAKE_MODEL,
            "seq_len": [46],
            "sizes": {lang: 10 + k for k, lang in enumerate(RUN_LANGS)},
        },
        n_boot=50,
        seed=0,
    )


def fake_run(layers: int = 4) -> dict:
    """One result of every experiment of ``reproduce``, by experiment name (as ``Run.results`` holds them)."""
    import numpy as np
    import pandas as pd

    from lapelens.evaluate.embeddings import SentenceEmbeddings
    from lapelens.evaluate.generation import GenerationResult
    from lapelens.evaluate.layers import NeuronLayout
    from lapelens.evaluate.sweep import SweepResult, _label
    from lapelens.neurons import LanguageNeurons

    langs = RUN_LANGS
    gen = torch.Generator().manual_seed(0)
    lape = LanguageNeurons(
        langs,
        torch.rand(len(langs), layers, 16, generator=gen) < 0.2,
        "lape",
        {"model": FAKE_MODEL, "settings": {"top_rate": 0.2}},
    )
    ratios = (0.0, 0.01, 0.02)
    sweep = SweepResult(
        "fr",
        ratios,
        (0, 5, 10),
        (False, False, True),
        fake_perturbation("lape", 9, rows=tuple(_label(r) for r in ratios)),
        {"method": "lape", "model": FAKE_MODEL, "selected_rate": 0.01},
    )
    emb = SentenceEmbeddings(
        langs, 3 + torch.randn(len(langs), 6, layers, 5, generator=gen), {"model": "/x/lapelens/data/model"}
    )
    target = pd.Index(langs, name="target")
    thirds = [1 / 3, 2 / 3, 1.0]
    samples = pd.DataFrame({"target": list(langs), "text": ["a", "b", "c"]})
    sampling = {"max_new_tokens": 16, "do_sample": True, "temperature": 1.0}
    neurons = {lang: 10 + k for k, lang in enumerate(langs)}
    uncond = lambda name, method, **kw: GenerationResult(  # noqa: E731
        pd.DataFrame({"before": [0.0, 1 / 12, 0.25], "after": thirds, "n_samples": [12, 12, 12]}, index=target),
        samples,
        {
            "experiment": name,
            "model": FAKE_MODEL,
            "method": method,
            "sampling": sampling,
            "neurons": neurons,
            "n_samples": 12,
            **kw,
        },
        ["before", "after"],
    )
    pairs_index = pd.MultiIndex.from_tuples(
        [(a, b) for a in langs for b in langs if a != b], names=["source", "target"]
    )
    prompted = GenerationResult(
        pd.DataFrame(
            {"before": 0.0, "steered": np.linspace(0, 1, 6), "deactivated_and_steered": 1 / 7, "n_prompts": 4},
            index=pairs_index,
        ),
        samples,
        {
            "experiment": "prompted steering",
            "model": FAKE_MODEL,
            "method": "lape",
            "scale": 8.0,
            "prompt_tokens": 32,
            "n_prompts": 4,
            "neurons": neurons,
            "sampling": {"max_new_tokens": 24, "do_sample": False, "repetition_penalty": 1.1},
        },
        ["before", "steered", "deactivated_and_steered"],
    )
    columns = pd.MultiIndex.from_product(
        [["normal", "deactivated"], ["share_in_language", "ppl"]], names=["condition", "metric"]
    )
    deact = GenerationResult(
        pd.DataFrame([[1.0, 12.5, 2 / 3, 30.25]] * 3, index=pd.Index(langs, name="language"), columns=columns),
        samples,
        {
            "experiment": "generation under deactivation",
            "model": FAKE_MODEL,
            "method": "lape",
            "prompt_tokens": 32,
            "n_prompts": {lang: 4 for lang in langs},
            "neurons": neurons,
            "sampling": {"max_new_tokens": 24, "do_sample": False, "repetition_penalty": 1.1},
        },
        [["normal", "share_in_language"], ["deactivated", "share_in_language"]],
    )  # lists, as JSON gives them back
    return {
        "layers": NeuronLayout("lape", lape),
        "perturb": {m: fake_perturbation(m, k) for k, m in enumerate(RUN_METHODS)},
        "sweep": sweep,
        "ses": emb.similarity(lape, n_boot=20),
        "dominance": emb.dominance(n_boot=20),
        "steer_unconditional": uncond("unconditional steering", "lape", scale=8.0, deactivate_others=True),
        "steer_prompted": prompted,
        "deactivated_generation": deact,
        "kojima": uncond("Kojima median pinning", "ap"),
    }


def save_run(results: dict, folder: Path, methods=(*RUN_METHODS, "ap")) -> Path:
    """The stage folders ``reproduce`` writes for ``results`` (``fake_run``'s form), and the
    config.json it writes last (AP in the methods for Kojima's stage, without an AP perturbation:
    a figure per saved stage, no more). The layers experiment saves nothing: its neurons do."""
    import json

    from lapelens.evaluate import EXPERIMENTS

    stages = {}
    for name, result in results.items():
        exp = EXPERIMENTS[name]
        if not exp.cached:
            stages[f"neurons_{result.method}"] = result.neurons
        elif exp.per_method:
            stages.update({exp.stage(m): r for m, r in result.items()})
        else:
            stages[exp.stage()] = result
    for name, result in stages.items():
        result.save(folder / name)
    (folder / "config.json").write_text(json.dumps({"methods": list(methods), "stages": {n: "x" for n in stages}}))
    return folder


# ---- shared by several test files (no test file imports another) -------------------------------------
#: The tests folder, and the repository above it.
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def hf_mlp(hf, arch, layer):
    """(up-or-in projection, gate projection or None, down projection) modules of an HF layer."""
    if arch == "gpt2":
        mlp = hf.transformer.h[layer].mlp
        return mlp.c_fc, None, mlp.c_proj
    if arch == "bloom":
        mlp = hf.transformer.h[layer].mlp
        return mlp.dense_h_to_4h, None, mlp.dense_4h_to_h
    if arch == "opt":
        block = hf.model.decoder.layers[layer]
        return block.fc1, None, block.fc2
    mlp = hf.model.layers[layer].mlp
    return mlp.up_proj, mlp.gate_proj, mlp.down_proj


def save_schema_1(stats: ActivationStats, folder, kind: bool = True):
    """``stats`` written as lapelens wrote statistics before schema 2: tensors ``layer x neuron x
    lang``, ``has_activation_sums`` a meta key (only when False); ``kind=False``: a marker without
    kind and schema version, as before markers had them. Files in ``folder`` are replaced, others kept."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "n": stats.n,
            **{k: getattr(stats, k).permute(1, 2, 0).contiguous() for k in ("count", "act_sum", "act_sq_sum")},
        },
        str(folder / STATS_TENSORS),
    )
    meta = {"kind": "activation_stats", "schema_version": 1} if kind else {}
    meta.update({"lapelens_version": "0.1.0", **stats.meta, "languages": list(stats.languages)})
    if not stats.has_activation_sums:
        meta["has_activation_sums"] = False
    (folder / STATS_META).write_text(json.dumps(meta))
    return folder


#: A collection cut into 10 batches per language, for the resume tests (in-process and in a child).
RESUME_SEQ, RESUME_BATCH, RESUME_TOKENS = 16, 2, 320
RESUME_TEXTS = {lang: [f"{TEXTS[lang]} {i}" for i in range(60)] for lang in ("en", "zh")}


# ---- a tiny random LLaMA as a GGUF file ------------------------------------------------------------
# Write a tiny random LLaMA as a GGUF file with the ``gguf`` package's writer, the way llama.cpp's
# ``convert_hf_to_gguf.py`` lays one out (tensor names, the rotary permutation of q/k, a byte-level
# BPE tokenizer as ``tokenizer.ggml.model = "gpt2"``). Tensors are stored as F32 (and optionally one
# as Q8_0), so a correct reader gives back the original model exactly.


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp stores q/k with the two rotary halves interleaved per head; transformers undoes it.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(hf_dir: Path, out: Path, quantize_embedding: bool = False) -> Path:
    import gguf
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    cfg = model.config
    tok = json.loads((Path(hf_dir) / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    added = {t["id"]: t["content"] for t in tok.get("added_tokens", [])}
    tokens = [added.get(i, piece) for piece, i in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in added else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    w.add_add_bos_token(False)

    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not cfg.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    per_layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for hf, gg in names.items():
        t = sd[hf].astype(np.float32)
        if gg.endswith("attn_q.weight"):
            t = _permute(t, cfg.num_attention_heads)
        elif gg.endswith("attn_k.weight"):
            t = _permute(t, cfg.num_key_value_heads)
        if quantize_embedding and gg == "token_embd.weight":
            from gguf.quants import quantize

            w.add_tensor(gg, quantize(t, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gg, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
