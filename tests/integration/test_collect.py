"""collect / collect_sentence_means against an independent computation on the HF modules."""

import itertools

import pytest
import torch

from lapelens import LapelensError, load_model, neuron_spec
from lapelens.activations import NeuronAccumulator, collect, collect_chunks, collect_sentence_means
from lapelens.cli import main
from lapelens.tokens import iter_chunks, pack_chunks, separator_id
from tiny import ARCHS, TEXTS, tiny_tokenizer

SEQ = 16


# ---- an independent reference: plain PyTorch hooks on the HF MLP modules ----------------------
def _hf_neuron_fns(hf, arch):
    """Per layer: (module whose input is the MLP input x, fn x -> act(W1 x)), from HF modules only."""
    if arch == "gpt2":
        return [(b.mlp, lambda x, m=b.mlp: m.act(m.c_fc(x))) for b in hf.transformer.h]
    if arch == "bloom":
        return [(b.mlp, lambda x, m=b.mlp: m.gelu_impl(m.dense_h_to_4h(x))) for b in hf.transformer.h]
    if arch == "opt":
        # fc1's own input (calling fc1 inside its pre-hook would recurse, so apply its weights).
        fc1 = [l.fc1 for l in hf.model.decoder.layers]
        return [(f, lambda x, f=f: torch.relu(torch.nn.functional.linear(x, f.weight, f.bias))) for f in fc1]
    return [(l.mlp, lambda x, m=l.mlp: m.act_fn(m.gate_proj(x))) for l in hf.model.layers]


class HFReference:
    """Neuron activations ``act(W1 x)`` per layer, read from the HF model's MLP inputs."""

    def __init__(self, folder, arch):
        from transformers import AutoModelForCausalLM

        self.hf = AutoModelForCausalLM.from_pretrained(folder).eval()
        self.fns = _hf_neuron_fns(self.hf, arch)

    def activations(self, tokens, attention_mask=None):
        """List over layers of act(W1 x), shape [batch, pos, neuron]."""
        out = {}
        handles = []
        for i, (module, fn) in enumerate(self.fns):

            def pre_hook(mod, args, kwargs, i=i, fn=fn):
                x = args[0] if args else kwargs["hidden_states"]
                out[i] = fn(x).reshape(tokens.shape[0], tokens.shape[1], -1)

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        try:
            with torch.no_grad():
                self.hf(tokens, attention_mask=attention_mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return [out[i] for i in range(len(self.fns))]

    def stats(self, chunks):
        acts = torch.stack(self.activations(chunks))  # [layer, batch, pos, neuron]
        flat = acts.flatten(1, 2).double()
        return (acts > 0).flatten(1, 2).sum(1), flat.sum(1), (flat**2).sum(1)


def _chunks(model, texts):
    return {lang: pack_chunks(model.tokenizer, docs, SEQ) for lang, docs in texts.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_collect_equals_hf_hooks(tiny_dirs, tiny_texts, arch):
    model = load_model(tiny_dirs[arch])
    ref = HFReference(tiny_dirs[arch], arch)
    chunks = _chunks(model, tiny_texts)
    # One batch per language in both runs, so that both see identical inputs.
    stats = collect(model, tiny_texts, seq_len=SEQ, batch_size=64, progress=False)
    assert stats.languages == tuple(tiny_texts)
    spec = neuron_spec(model)
    assert stats.count.shape == (len(tiny_texts), spec.n_layers, spec.d_mlp)
    for k, lang in enumerate(stats.languages):
        count, total, sq = ref.stats(chunks[lang])
        assert stats.n[k] == chunks[lang].numel()
        assert torch.equal(stats.count[k], count), f"{arch} {lang}: firing counts differ"
        torch.testing.assert_close(stats.act_sum[k], total, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(stats.act_sq_sum[k], sq, rtol=1e-5, atol=1e-4)
    # Not degenerate: neurons fire on some tokens and not on others.
    p = stats.firing_probability()
    assert 0.1 < p.mean() < 0.9 and (p > 0).any() and (p < 1).any()
    assert stats.count.dtype == torch.int64 and stats.act_sum.dtype == torch.float64
    assert stats.meta["seq_len"] == SEQ and stats.meta["model"] == str(model.cfg.model_name)
    assert "lapelens_version" in stats.meta


# ---- packing ----------------------------------------------------------------------------------
def test_pack_chunks_golden():
    tok = tiny_tokenizer()
    docs = [TEXTS["en"], "", TEXTS["fr"], TEXTS["zh"], TEXTS["en"][:9]]
    stream = []
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        if ids:
            stream += [tok.bos_token_id] + ids
    n = len(stream) // SEQ
    expected = torch.tensor(stream[: n * SEQ]).view(n, SEQ)
    got = pack_chunks(tok, docs, SEQ)
    assert got.dtype == torch.long and torch.equal(got, expected)
    assert torch.equal(pack_chunks(tok, docs, SEQ, max_tokens=2 * SEQ + 3), expected[:2])
    assert got[0, 0] == tok.bos_token_id and n >= 3


def test_iter_chunks_is_lazy():
    tok = tiny_tokenizer()
    endless = itertools.cycle([TEXTS["en"], TEXTS["ja"]])  # would never end if read to the end
    chunks = list(iter_chunks(tok, endless, SEQ, max_tokens=5 * SEQ))
    assert len(chunks) == 5 and all(c.shape == (SEQ,) for c in chunks)


def test_separator_falls_back_to_eos():
    tok = tiny_tokenizer()
    assert separator_id(tok) == tok.bos_token_id
    tok.bos_token = None
    assert separator_id(tok) == tok.eos_token_id
    assert pack_chunks(tok, [TEXTS["en"]] * 3, SEQ)[0, 0] == tok.eos_token_id
    tok.eos_token = None
    with pytest.raises(LapelensError, match="neither a BOS nor an EOS"):
        separator_id(tok)


# ---- streaming --------------------------------------------------------------------------------
def _equal_stats(a, b, exact_sums=False):
    assert a.languages == b.languages
    assert torch.equal(a.n, b.n) and torch.equal(a.count, b.count)
    if exact_sums:
        assert torch.equal(a.act_sum, b.act_sum) and torch.equal(a.act_sq_sum, b.act_sq_sum)
    else:
        torch.testing.assert_close(a.act_sum, b.act_sum, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(a.act_sq_sum, b.act_sq_sum, rtol=1e-12, atol=1e-9)


def test_merge_of_chunk_halves_equals_whole(tiny_dirs, tiny_texts):
    model = load_model(tiny_dirs["llama"])
    chunks = _chunks(model, tiny_texts)
    whole = collect(model, tiny_texts, seq_len=SEQ, batch_size=4, progress=False)
    # collect() is exactly collect_chunks() on pack_chunks().
    _equal_stats(whole, collect_chunks(model, chunks, batch_size=4, progress=False), exact_sums=True)
    first = {l: c[:8] for l, c in chunks.items()}
    second = {l: c[8:] for l, c in chunks.items()}
    a = collect_chunks(model, first, batch_size=4, progress=False)
    b = collect_chunks(model, second, batch_size=4, progress=False)
    _equal_stats(whole, a.merge(b))
    # The chunks may also come as a lazy iterable of single chunks.
    lazy = collect_chunks(model, {l: iter(c) for l, c in chunks.items()}, batch_size=4, progress=False)
    _equal_stats(whole, lazy, exact_sums=True)


def test_merge_of_document_halves_equals_whole(tiny_dirs):
    model = load_model(tiny_dirs["qwen2"])
    tok = model.tokenizer
    base = [t[:n] for t in TEXTS.values() for n in (7, 23, 41, 60, 90)]
    docs = base * 3
    sizes = [len(tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs]
    # A split point where the first half fills whole chunks, so both runs cut the same chunks.
    seq_len, cut = next(
        (L, d)
        for d in range(len(docs) // 3, len(docs))
        for L in range(12, 40)
        if sum(sizes[:d]) % L == 0 and sum(sizes[d:]) >= 2 * L
    )
    whole = collect(model, {"mix": docs}, seq_len=seq_len, batch_size=3, progress=False)
    a = collect(model, {"mix": docs[:cut]}, seq_len=seq_len, batch_size=3, progress=False)
    b = collect(model, {"mix": docs[cut:]}, seq_len=seq_len, batch_size=3, progress=False)
    merged = a.merge(b)
    assert merged.n[0] == whole.n[0] == (sum(sizes) // seq_len) * seq_len
    torch.testing.assert_close(merged.act_sum, whole.act_sum, rtol=1e-5, atol=1e-4)
    assert torch.equal(merged.count, whole.count)


def test_tokens_per_language_takes_whole_leading_chunks(tiny_dirs, tiny_texts):
    model = load_model(tiny_dirs["gpt2"])
    chunks = _chunks(model, tiny_texts)
    stats = collect(
        model, tiny_texts, tokens_per_language=3 * SEQ + 5, seq_len=SEQ, batch_size=2, progress=False, corpus="tiny"
    )
    assert stats.n.tolist() == [3 * SEQ] * len(tiny_texts)
    _equal_stats(
        stats,
        collect_chunks(model, {l: c[:3] for l, c in chunks.items()}, batch_size=2, progress=False),
        exact_sums=True,
    )
    assert stats.meta["tokens_per_language"] == 3 * SEQ + 5 and stats.meta["corpus"] == "tiny"


def _state_bytes(obj):
    return sum(v.numel() * v.element_size() for v in vars(obj).values() if isinstance(v, torch.Tensor))


def test_accumulator_matches_direct_sums_and_holds_no_per_token_state(monkeypatch):
    import lapelens.activations as lc

    monkeypatch.setattr(lc, "_BLOCK_BYTES", 4 * 64 * 50)  # 50 rows per block: exercise the block loop
    spec = lc.NeuronSpec(n_layers=2, d_mlp=64, gated=True, act_name="silu")
    acc = NeuronAccumulator(spec, ["en", "fr"])
    torch.manual_seed(0)
    pres = [torch.randn(3, 41, 64) for _ in range(3)]
    for pre in pres:
        acc.update(1, 0, pre)
        acc.add_tokens(1, 3 * 41)
    size = _state_bytes(acc)
    x = torch.cat([p.reshape(-1, 64) for p in pres]).double()
    act = torch.nn.functional.silu(x)
    stats = acc.result()
    assert stats.n.tolist() == [0, 3 * 3 * 41]
    assert torch.equal(stats.count[1, 0], (x > 0).sum(0))
    torch.testing.assert_close(stats.act_sum[1, 0], act.sum(0), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(stats.act_sq_sum[1, 0], (act**2).sum(0), rtol=1e-6, atol=1e-5)
    assert stats.count[:, 1].sum() == 0 and stats.count[0].sum() == 0
    for _ in range(30):  # ten times more tokens: the state does not grow
        acc.update(0, 1, pres[0])
    assert _state_bytes(acc) == size


# ---- per-sentence means -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_sentence_means_equal_unpadded_single_runs(tiny_dirs, arch):
    model = load_model(tiny_dirs[arch])
    ref = HFReference(tiny_dirs[arch], arch)
    tok = model.tokenizer
    sentences = {lang: [text, text[:12], text[:30]] for lang, text in TEXTS.items()}
    acts = collect_sentence_means(model, sentences, batch_size=5, progress=False)
    assert acts.languages == tuple(sentences)
    assert acts.labels.tolist() == [k for k in range(len(sentences)) for _ in range(3)]
    row = 0
    for lang, sents in sentences.items():
        for s in sents:
            ids = torch.tensor([[tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]])
            alone = torch.stack([a[0, 1:].mean(0) for a in ref.activations(ids)])  # [layer, neuron]
            torch.testing.assert_close(
                acts.means[row],
                alone,
                rtol=1e-4,
                atol=1e-5,
                msg=lambda m, arch=arch, lang=lang, s=s: f"{arch} {lang} {s!r}: {m}",
            )
            row += 1
    assert row == acts.means.shape[0]


def test_sentence_means_truncate(tiny_dirs):
    model = load_model(tiny_dirs["opt"])
    ref = HFReference(tiny_dirs["opt"], "opt")
    acts = collect_sentence_means(model, {"en": [TEXTS["en"]]}, max_tokens_per_sentence=5, progress=False)
    ids = [model.tokenizer.bos_token_id] + model.tokenizer(TEXTS["en"], add_special_tokens=False)["input_ids"][:5]
    expected = torch.stack([a[0, 1:].mean(0) for a in ref.activations(torch.tensor([ids]))])
    torch.testing.assert_close(acts.means[0], expected, rtol=1e-4, atol=1e-5)


# ---- bad input --------------------------------------------------------------------------------
def _one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


def test_language_without_text(tiny_dirs, tiny_texts):
    model = load_model(tiny_dirs["llama"])
    for empty in ([], [""]):
        with pytest.raises(LapelensError, match="'fr'.*no text") as exc:
            collect(model, {"en": tiny_texts["en"], "fr": empty}, seq_len=SEQ, progress=False)
        _one_line(exc)
    with pytest.raises(LapelensError, match="'fr' has no sentences"):
        collect_sentence_means(model, {"en": ["Open the file."], "fr": []}, progress=False)


def test_text_shorter_than_one_chunk(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    with pytest.raises(LapelensError, match=r"'en'.*only \d+ tokens.*seq_len=64") as exc:
        collect(model, {"en": ["Open the file."]}, seq_len=64, progress=False)
    assert "smaller seq_len" in _one_line(exc)
    with pytest.raises(LapelensError, match="exceeds the model's context of 128"):
        collect(model, {"en": ["Open the file."]}, seq_len=4096, progress=False)


def test_unknown_model_path():
    with pytest.raises(LapelensError, match="does not exist") as exc:
        load_model("./no/such/model")
    _one_line(exc)


def test_model_without_mlp_hooks(tmp_path):
    import transformers as tf
    from transformer_lens.model_bridge import TransformerBridge

    tok = tiny_tokenizer()
    cfg = tf.MixtralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=2,
        num_experts_per_tok=1,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
    )
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(LapelensError, match="no MLP hooks") as exc:
        load_model(tmp_path)
    _one_line(exc)
    moe = TransformerBridge.boot_transformers(str(tmp_path))  # bypassing load_model's check
    with pytest.raises(LapelensError, match="dense MLP blocks"):
        collect(moe, {"en": [TEXTS["en"]] * 4}, seq_len=SEQ, progress=False)
    with pytest.raises(LapelensError, match="dense MLP blocks"):
        collect_sentence_means(moe, {"en": [TEXTS["en"]]}, progress=False)


# ---- CLI --------------------------------------------------------------------------------------
@pytest.fixture
def corpus_dir(tmp_path, tiny_texts):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang, docs in tiny_texts.items():
        (folder / f"{lang}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return folder


def test_cli_collect(tiny_dirs, tiny_texts, corpus_dir, tmp_path, capsys):
    from lapelens.stats import ActivationStats, SentenceActivations

    out = tmp_path / "stats"
    argv = [
        "collect",
        "--model",
        str(tiny_dirs["mistral"]),
        "--corpus",
        str(corpus_dir),
        "--languages",
        "en,zh",
        "--tokens-per-language",
        "48",
        "--seq-len",
        str(SEQ),
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--official-tag",
        "tiny",
        "--sentences-out",
        str(tmp_path / "sent"),
        "--sentences-per-language",
        "2",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "en 48 tokens, zh 48 tokens" in capsys.readouterr().out
    got = ActivationStats.load(out)
    model = load_model(tiny_dirs["mistral"])
    texts = {l: tiny_texts[l] for l in ("en", "zh")}
    expected = collect(model, texts, tokens_per_language=48, seq_len=SEQ, batch_size=2, progress=False)
    assert got.languages == ("en", "zh")
    _equal_stats(got, expected, exact_sums=True)
    assert got.meta["corpus"] == f"{corpus_dir}:train" and got.meta["seq_len"] == SEQ
    official = ActivationStats.from_official(out, "tiny", ["en", "zh"])
    assert torch.equal(official.count, expected.count) and torch.equal(official.n, expected.n)
    sent = SentenceActivations.load(tmp_path / "sent")
    torch.testing.assert_close(
        sent.means,
        collect_sentence_means(model, {l: d[:2] for l, d in texts.items()}, batch_size=2, progress=False).means,
    )


@pytest.mark.parametrize(
    "case, match",
    [
        ("model", "does not exist"),
        ("short", "only"),
        ("seq", "positive"),
    ],
)
def test_cli_errors_are_one_line(tiny_dirs, corpus_dir, tmp_path, capsys, case, match):
    argv = [
        "collect",
        "--model",
        str(tiny_dirs["bloom"]),
        "--corpus",
        str(corpus_dir),
        "--languages",
        "en,fr",
        "--seq-len",
        str(SEQ),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    if case == "model":
        argv[2] = "./no/such/model"
    elif case == "short":
        argv[argv.index("--seq-len") + 1] = "120"
        (corpus_dir / "fr.txt").write_text("Bonjour.\n", encoding="utf-8")
    else:
        argv[argv.index("--seq-len") + 1] = "0"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lapelens collect: error:") and "\n" not in err and match in err
    assert not (tmp_path / "o").exists()
