"""Resuming a collection from its checkpoint: bit-identical to an uninterrupted run, never mixed."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

import lapelens.activations as acts
import lapelens.tokens
from lapelens import LapelensError, load_model
from lapelens.activations import collect
from lapelens.checkpoint import CHECKPOINT_FILE, Checkpointer, Shard
from lapelens.cli import main
from tiny import RESUME_BATCH as BATCH
from tiny import RESUME_SEQ as SEQ
from tiny import RESUME_TEXTS as TEXTS_EN_ZH
from tiny import RESUME_TOKENS as TOKENS
from tiny import TESTS, TEXTS

KEYS = ("n", "count", "act_sum", "act_sq_sum")


def _assert_identical(a, b):
    assert a.languages == b.languages
    for k in KEYS:
        assert torch.equal(getattr(a, k), getattr(b, k)), f"{k} differs"


def _crashing(docs, after):
    """The documents, then a crash (as a Ctrl-C would raise it) once ``after`` were read."""
    yield from docs[:after]
    raise KeyboardInterrupt


def _checkpoint_info(folder):
    with safe_open(str(folder / CHECKPOINT_FILE.format(rank=0, world=1)), framework="pt") as f:
        return json.loads(f.metadata()["lapelens_checkpoint"])


def _count_forwards(monkeypatch):
    calls = []
    real = acts.run_until
    monkeypatch.setattr(acts, "run_until", lambda *a, **k: (calls.append(1), real(*a, **k)))
    return calls


@pytest.fixture(autouse=True)
def one_document_at_a_time(monkeypatch):
    """Tokenize one document per call, so that a crash after document d happens there."""
    monkeypatch.setattr(lapelens.tokens, "_TOKENIZE_GROUP", 1)


@pytest.fixture(scope="module")
def model(tiny_dirs):
    return load_model(tiny_dirs["llama"])


@pytest.fixture(scope="module")
def whole(model):
    return collect(model, TEXTS_EN_ZH, tokens_per_language=TOKENS, seq_len=SEQ, batch_size=BATCH, progress=False)


def _run(model, texts, folder, **kw):
    args = dict(
        tokens_per_language=TOKENS,
        seq_len=SEQ,
        batch_size=BATCH,
        progress=False,
        corpus="tiny",
        checkpoint=folder,
        checkpoint_every=0,
    )
    args.update(kw)
    return collect(model, texts, **args)


def test_crash_then_resume_is_bit_identical_and_skips_the_counted_batches(model, whole, tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    crash = {"en": TEXTS_EN_ZH["en"], "zh": _crashing(TEXTS_EN_ZH["zh"], 3)}  # en done, zh part-way
    with pytest.raises(KeyboardInterrupt):
        _run(model, crash, folder)
    info = _checkpoint_info(folder)
    done = [p["batches"] for p in info["positions"]]
    assert done[0] == 10 and 0 < done[1] < 10 and info["saves"] == sum(done)  # one save per batch
    with safe_open(str(folder / CHECKPOINT_FILE.format(rank=0, world=1)), framework="pt") as f:
        count = f.get_tensor("count")  # lang x layer x neuron, as ActivationStats: en is complete
    assert count.shape == whole.count.shape and torch.equal(count[0].round().long(), whole.count[0])
    calls = _count_forwards(monkeypatch)
    resumed = _run(model, TEXTS_EN_ZH, folder)
    assert len(calls) == 20 - sum(done)  # it did not start from zero
    _assert_identical(resumed, whole)
    assert not folder.exists()  # removed once the collection is complete


def test_checkpoint_of_other_settings_or_text_is_refused(model, tmp_path):
    folder = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        _run(model, {"en": _crashing(TEXTS_EN_ZH["en"], 3)}, folder)
    before = (folder / CHECKPOINT_FILE.format(rank=0, world=1)).read_bytes()
    en = {"en": TEXTS_EN_ZH["en"]}
    for kwargs, key in [
        ({"seq_len": 8}, "seq_len"),
        ({"tokens_per_language": 640}, "tokens_per_language"),
        ({"corpus": "other"}, "corpus"),
        ({"batch_size": 4}, "batch_size"),
    ]:
        with pytest.raises(LapelensError, match=f"other settings \\({key}: ") as err:
            _run(model, en, folder, **kwargs)
        assert "\n" not in str(err.value) and "delete" in str(err.value)
    with pytest.raises(LapelensError, match="other settings \\(languages: "):
        _run(model, {"fr": [f"{TEXTS['fr']} {i}" for i in range(60)]}, folder)
    with pytest.raises(LapelensError, match="other text for 'en'"):
        _run(model, {"en": [d.upper() for d in TEXTS_EN_ZH["en"]]}, folder)
    assert (folder / CHECKPOINT_FILE.format(rank=0, world=1)).read_bytes() == before  # untouched


def test_checkpoint_of_another_model_is_refused(model, tiny_dirs, tmp_path):
    folder = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        _run(model, {"en": _crashing(TEXTS_EN_ZH["en"], 3)}, folder)
    with pytest.raises(LapelensError, match="other settings \\((d_mlp|model|n_layers): "):
        _run(load_model(tiny_dirs["gpt2"]), {"en": TEXTS_EN_ZH["en"]}, folder)


def test_checkpoint_of_another_format_is_refused(tmp_path, monkeypatch):
    import lapelens.checkpoint as ck

    with monkeypatch.context() as m:  # as a lapelens with another checkpoint layout would write it
        m.setattr(ck, "_FORMAT", 0)
        Checkpointer(tmp_path, Shard(), {"a": 1}).save({"x": torch.zeros(1)}, [])
    with pytest.raises(LapelensError, match="has format 0, not this lapelens' 1") as err:
        Checkpointer(tmp_path, Shard(), {"a": 1}).load()
    assert "\n" not in str(err.value)


def test_checkpoint_of_another_number_of_processes_is_refused(tmp_path):
    Checkpointer(tmp_path, Shard(0, 1), {"a": 1}).save({"x": torch.zeros(1)}, [])
    with pytest.raises(LapelensError, match="different number of processes"):
        Checkpointer(tmp_path, Shard(1, 2), {"a": 1}).load()


def test_checkpoints_are_written_at_most_every_interval(model, tmp_path, monkeypatch):
    saves = []
    monkeypatch.setattr(Checkpointer, "save", lambda self, *a: saves.append(1))
    _run(model, TEXTS_EN_ZH, tmp_path / "ck", checkpoint_every=3600)
    assert saves == []  # 20 batches in well under an hour
    _run(model, TEXTS_EN_ZH, tmp_path / "ck", checkpoint_every=0)
    assert len(saves) == 20


def test_cli_resumes_says_so_and_matches_an_uninterrupted_run(tiny_dirs, tmp_path, monkeypatch, capsys):
    import lapelens.cli.collect
    from lapelens.stats import ActivationStats

    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang, docs in TEXTS_EN_ZH.items():
        (folder / f"{lang}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")

    def argv(out, seq=SEQ):
        return [
            "collect",
            "--model",
            str(tiny_dirs["llama"]),
            "--corpus",
            str(folder),
            "--seq-len",
            str(seq),
            "--batch-size",
            str(BATCH),
            "--tokens-per-language",
            str(TOKENS),
            "--checkpoint-every",
            "0",
            "--quiet",
            "--out",
            str(tmp_path / out),
        ]

    assert main(argv("whole")) == 0
    real = lapelens.cli.collect.load_corpus

    def crash_in(langs):
        monkeypatch.setattr(
            lapelens.cli.collect,
            "load_corpus",
            lambda *a, **k: {l: _crashing(d, 3) if l in langs else d for l, d in real(*a, **k).items()},
        )
        capsys.readouterr()
        assert main(argv("resumed" if langs == ("zh",) else "other")) == 130  # a Ctrl-C: the shell's code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.fullmatch(
            r"lapelens collect: interrupted; [\d,]+ tokens saved, "
            "re-run the same command to resume",
            err[0],
        ), err
        monkeypatch.setattr(lapelens.cli.collect, "load_corpus", real)

    crash_in(("zh",))
    assert (tmp_path / "resumed" / "collect.checkpoint").is_dir()
    capsys.readouterr()
    assert main(argv("resumed")) == 0
    err = capsys.readouterr().err
    assert "lapelens collect: resuming from checkpoint" in err and "en 320 tokens" in err
    _assert_identical(ActivationStats.load(tmp_path / "resumed"), ActivationStats.load(tmp_path / "whole"))
    assert not (tmp_path / "resumed" / "collect.checkpoint").exists()
    # a checkpoint of other settings: one line on stderr, exit code 2
    crash_in(("en", "zh"))
    capsys.readouterr()
    assert main(argv("other", seq=8)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lapelens collect: error: The checkpoint in") and "\n" not in err and "seq_len" in err


_CHILD = r"""
import sys, time
sys.path.insert(0, {tests!r})
from lapelens import load_model
from lapelens.activations import collect
from tiny import RESUME_TEXTS as TEXTS_EN_ZH, RESUME_TOKENS as TOKENS, RESUME_SEQ as SEQ, RESUME_BATCH as BATCH
import lapelens.tokens
lapelens.tokens._TOKENIZE_GROUP = 1

def slow(docs):
    for d in docs:
        time.sleep(0.05)  # keep the run going long enough to be killed part-way
        yield d

model = load_model({model!r})
collect(model, {{l: slow(d) for l, d in TEXTS_EN_ZH.items()}}, tokens_per_language=TOKENS, seq_len=SEQ,
        batch_size=BATCH, progress=False, corpus="tiny", checkpoint={folder!r}, checkpoint_every=0)
print("finished")
"""


def test_killed_process_resumes_bit_identical(model, whole, tiny_dirs, tmp_path, monkeypatch):
    """Kill -9 right after the first checkpoint (SIGTERM without a handler ends a process the same way;
    SIGINT raises KeyboardInterrupt, as in the tests above)."""
    folder = tmp_path / "ck"
    code = _CHILD.format(tests=str(TESTS), model=str(tiny_dirs["llama"]), folder=str(folder))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck = folder / CHECKPOINT_FILE.format(rank=0, world=1)
    deadline = time.monotonic() + 120
    while not ck.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=60)
    assert "finished" not in out, "the child ended before it could be killed"
    assert ck.exists(), err[-2000:]
    read = sum(p["batches"] for p in _checkpoint_info(folder)["positions"])
    assert 0 < read < 20
    calls = _count_forwards(monkeypatch)
    _assert_identical(_run(model, TEXTS_EN_ZH, folder), whole)
    assert len(calls) == 20 - read


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
        (["--device-map", "{cpu"], "--device-map is not valid JSON"),
    ],
)
def test_cli_checkpoint_and_device_map_flags_are_checked(tmp_path, capsys, flags, match):
    assert main(["collect", "--out", str(tmp_path / "o"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lapelens collect: error:") and "\n" not in err and match in err
