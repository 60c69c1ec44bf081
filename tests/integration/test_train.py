import json
import math

import pytest
import torch

from lapelens import load_model, neuron_spec
from lapelens.embedded.card import unigram_nll
from lapelens.embedded.tokenizer import CJK_CHARACTER, token_byte_lengths, train_tokenizer
from lapelens.embedded.train import TrainConfig, reevaluate, train
from lapelens.errors import LapelensError
from lapelens.training import continue_training, lr_schedule

DOCS = {
    "en": [
        "Choose Format - Cells and open the Numbers tab.",
        "Select the text you want to copy.",
        "The function returns the sum of all numbers.",
        "Click the icon to open the dialog.",
    ],
    "fr": [
        "Choisissez Format - Cellules et ouvrez l'onglet Nombres.",
        "Sélectionnez le texte à copier.",
        "La fonction renvoie la somme de tous les nombres.",
        "Cliquez sur l'icône pour ouvrir la boîte.",
    ],
    "zh": [
        "选择格式 - 单元格并打开数字选项卡。",
        "选择要复制的文本。",
        "此函数返回所有数字之和。",
        "单击图标打开对话框。",
    ],
}


@pytest.fixture
def folder_corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for lang, docs in DOCS.items():
        (root / f"{lang}.train.txt").write_text("\n".join(docs * 8) + "\n")
        (root / f"{lang}.valid.txt").write_text("\n".join(docs * 2) + "\n")
    return root


def _cfg(corpus, out, **kw):
    base = dict(
        out=str(out),
        corpus=str(corpus),
        languages=("en", "fr", "zh"),
        vocab_size=400,
        tokenizer_chars_per_language=5000,
        n_layers=2,
        d_model=32,
        d_mlp=64,
        n_heads=2,
        seq_len=32,
        batch_size=4,
        steps=30,
        lr=5e-3,
        warmup_steps=3,
        eval_every=10,
        eval_chunks_per_language=2,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_run_learns_and_loads(folder_corpus, tmp_path):
    out = train(_cfg(folder_corpus, tmp_path / "m"))
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 30
    # The text repeats, so a working loop must cut the loss well below its start.
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 1.0
    assert "valid_loss_zh" in log[9] and "valid_loss_zh" not in log[8]
    summary = json.loads((out / "training_summary.json").read_text())
    for lang in ("en", "fr", "zh"):
        r = summary["per_language"][lang]
        assert r["ratio"] == pytest.approx(r["valid_ppl"] / r["unigram_ppl"], rel=1e-6)
        # bits per byte = total nats over the predicted positions / (bytes of those tokens * ln 2)
        n_chunks = r["valid_tokens"] // 32
        nats = math.log(r["valid_ppl"]) * (r["valid_tokens"] - n_chunks)
        assert r["bits_per_byte"] == pytest.approx(nats / (r["valid_bytes"] * math.log(2)), rel=1e-6)
        assert 0 < r["valid_bytes"] <= sum(len(d.encode()) + 1 for d in DOCS[lang] * 2)
    assert "| zh |" in (out / "README.md").read_text()

    model = load_model(out)  # the same TransformerBridge path as a hub model
    spec = neuron_spec(model)
    assert (spec.n_layers, spec.d_mlp, spec.gated, spec.act_name) == (2, 64, True, "silu")
    tok = model.tokenizer
    assert tok.bos_token_id is not None and tok.pad_token_id is not None and tok.eos_token_id is not None
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {"<s>", "</s>", "<pad>"}
    toks = model.to_tokens("选择要复制的文本。")
    assert toks[0, 0].item() == tok.bos_token_id
    # The default tokenizer keeps Han characters apart, also after saving and loading.
    assert _multi_cjk_tokens(tok) == [] and toks.shape[1] >= 1 + 9
    assert model.tokenizer.decode(toks[0, 1:]) == "选择要复制的文本。"


def test_training_is_seeded(folder_corpus, tmp_path):
    a = train(_cfg(folder_corpus, tmp_path / "a", steps=5, eval_every=0))
    b = train(_cfg(folder_corpus, tmp_path / "b", steps=5, eval_every=0))
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_continue_training_moves_weights(folder_corpus, tmp_path):
    base = train(_cfg(folder_corpus, tmp_path / "base", steps=3, eval_every=0))
    tuned = continue_training(base, DOCS["fr"] * 8, tmp_path / "fr", steps=4, lr=1e-3, seq_len=32, batch_size=2)
    from safetensors.torch import load_file

    w0, w1 = load_file(str(base / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    changed = [k for k in w0 if not torch.equal(w0[k].float(), w1[k].float())]
    assert "model.layers.0.mlp.gate_proj.weight" in changed


def test_lr_schedule_golden():
    # warmup 10: step 0 -> 1/10; end of warmup -> 1; halfway through the cosine -> (1 + 0.1) / 2; end -> 0.1
    assert lr_schedule(0, 110, 10, 0.1) == pytest.approx(0.1)
    assert lr_schedule(10, 110, 10, 0.1) == pytest.approx(1.0)
    assert lr_schedule(60, 110, 10, 0.1) == pytest.approx(0.55)
    assert lr_schedule(110, 110, 10, 0.1) == pytest.approx(0.1)


def test_unigram_nll_golden():
    # vocab 3, train tokens [0, 0, 1] -> add-one counts [3, 2, 1] / 6; valid predicts tokens 1 and 2
    train_chunks = [torch.tensor([[0, 0, 1]])]
    valid = torch.tensor([[0, 1, 2]])
    expected = -(math.log(2 / 6) + math.log(1 / 6)) / 2
    assert unigram_nll(train_chunks, valid, 3) == pytest.approx(expected)


def test_init_from_continues_an_existing_model(folder_corpus, tmp_path):
    first = train(_cfg(folder_corpus, tmp_path / "first", steps=20, eval_every=0))
    more = train(_cfg(folder_corpus, tmp_path / "more", steps=10, eval_every=0, init_from=str(first), lr=1e-3))
    first_log = (first / "train_log.jsonl").read_text().splitlines()
    more_log = (more / "train_log.jsonl").read_text().splitlines()
    # The continued run's log carries the first run's 20 steps, then its own 10, numbered on.
    assert more_log[:20] == first_log and len(more_log) == 30
    a, b = json.loads(first_log[0]), json.loads(more_log[20])
    assert b["step"] == 21 and b["tokens"] == 21 * 4 * 32
    summary = json.loads((more / "training_summary.json").read_text())
    assert [s["tokens_seen"] for s in summary["stages"]] == [20 * 4 * 32, 10 * 4 * 32]
    assert summary["tokens_seen"] == 30 * 4 * 32
    assert "Trained in stages" in (more / "README.md").read_text()
    # The continued run starts from the trained weights, so its first loss is far below a fresh start's.
    assert b["train_loss"] < a["train_loss"] - 1.0
    assert (more / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()


def test_reevaluate_on_a_changed_corpus(folder_corpus, tmp_path):
    out = train(_cfg(folder_corpus, tmp_path / "m", steps=10, eval_every=0))
    before = json.loads((out / "training_summary.json").read_text())["per_language"]
    # Same corpus: the same numbers as the run's own final evaluation.
    again = reevaluate(out, str(folder_corpus))
    for lang in ("en", "fr", "zh"):
        assert again[lang]["valid_ppl"] == pytest.approx(before[lang]["valid_ppl"], rel=1e-6)
        assert again[lang]["valid_tokens"] == before[lang]["valid_tokens"]
    # A valid split half as long: fewer tokens, and the card and summary show the new numbers.
    for lang, docs in DOCS.items():
        (folder_corpus / f"{lang}.valid.txt").write_text("\n".join(docs) + "\n")
    changed = reevaluate(out, str(folder_corpus))
    assert changed["zh"]["valid_tokens"] < before["zh"]["valid_tokens"]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["per_language"]["zh"]["valid_tokens"] == changed["zh"]["valid_tokens"]
    assert f"| zh | {changed['zh']['valid_tokens']:,} |" in (out / "README.md").read_text()
    with pytest.raises(Exception, match="training_summary.json"):
        reevaluate(tmp_path, str(folder_corpus))


def _multi_cjk_tokens(tok) -> list[str]:
    import re

    pieces = [tok.decode([i]) for i in range(len(tok)) if i not in tok.all_special_ids]
    return [p for p in pieces if len(re.findall(CJK_CHARACTER, p)) >= 2]


def test_cjk_characters_keeps_han_and_kana_tokens_single():
    texts = {lang: docs * 8 for lang, docs in DOCS.items()} | {
        "ja": ["ファイルを開きます。", "ダイアログを閉じます。"] * 16
    }
    plain = train_tokenizer(texts, 400, 5000)
    split = train_tokenizer(texts, 400, 5000, cjk_characters=True)
    # The repeated Chinese and Japanese text makes plain BPE merge across characters ...
    assert any("文本" in p or "选择" in p for p in _multi_cjk_tokens(plain))
    assert any("ファ" in p or "ます" in p for p in _multi_cjk_tokens(plain))
    # ... and the split vocabulary never does, yet still round-trips every text.
    assert _multi_cjk_tokens(split) == []
    for docs in texts.values():
        for d in docs[:4]:
            assert split.decode(split(d, add_special_tokens=False)["input_ids"]) == d
    assert len(split("选择要复制的文本。", add_special_tokens=False)["input_ids"]) >= 9


def test_token_byte_lengths_sum_to_the_utf8_length():
    tok = train_tokenizer({lang: docs * 8 for lang, docs in DOCS.items()}, 400, 5000, cjk_characters=True)
    lengths = token_byte_lengths(tok)
    assert all(lengths[i] == 0 for i in tok.all_special_ids)
    for text in ["选择要复制的文本。", "Sélectionnez le texte à copier.", "Un texte 复制 mêlé, ünïcödé ½ 𝔘."]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    # A vocabulary whose pieces are not byte-level BPE symbols has no byte lengths.
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    word = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"复制": 0, "<unk>": 1}, unk_token="<unk>")), unk_token="<unk>"
    )
    with pytest.raises(LapelensError, match="byte-level"):
        token_byte_lengths(word)
