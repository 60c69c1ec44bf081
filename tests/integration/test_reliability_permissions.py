"""Saved files and folders get the modes the umask gives (issue 25): safetensors' writer makes its
files 0600 and mkdtemp its folders 0700, and os.replace kept those modes."""

import os
import stat
from pathlib import Path

import pytest
import torch

from lapelens import ActivationStats, identify, load_model
from lapelens.activations import collect
from lapelens.methods.pv import tune_per_language
from lapelens.pipeline import ReproduceConfig, reproduce
from tiny import TEXTS


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def _wrong(root: Path, mask: int) -> dict[str, str]:
    want = {True: 0o777 & ~mask, False: 0o666 & ~mask}
    return {name: oct(mode) for name, mode in _modes(root).items() if mode != want[(root / name).is_dir()]}


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True)
def test_saved_results_follow_the_umask(tiny_dirs, tmp_path, umask):
    model = load_model(tiny_dirs["llama"])
    texts = {lang: [f"{TEXTS[lang]} {i}" for i in range(20)] for lang in ("en", "zh", "fr")}
    stats = collect(model, texts, tokens_per_language=128, seq_len=16, progress=False)
    out = tmp_path / "out"
    stats.save(out / "stats")
    stats.to_official(out / "official", "tiny")
    lape = identify(stats, "lape", top_rate=0.1)
    lape.save(out / "neurons")
    lape.to_official(out / "mask.pth")
    tune_per_language(
        tiny_dirs["llama"], {"en": texts["en"]}, out / "tuned", steps=1, seq_len=16, batch_size=2, progress=False
    )
    assert (out / "stats" / "stats.safetensors").is_file() and (out / "tuned" / "en" / "model.safetensors").is_file()
    assert _wrong(out, umask) == {}
    assert torch.equal(ActivationStats.load(out / "stats").count, stats.count)


@pytest.mark.parametrize("umask", [0o022], indirect=True)
def test_a_reproduce_run_folder_is_readable_by_others(tiny_dirs, tmp_path, umask):
    out = tmp_path / "run"
    reproduce(
        ReproduceConfig.quick(
            str(out),
            model=str(tiny_dirs["llama"]),
            languages=("en", "zh"),
            seq_len=32,
            methods=("lape", "random"),
            tokens_per_language=512,
            eval_tokens_per_language=128,
            top_rate=0.1,
            sweep_target="none",
            ses_texts=4,
            n_samples=2,
            n_prompts=2,
            max_new_tokens=4,
            unconditional_tokens=4,
        ),
        log=lambda _: None,
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".png" for p in files)
    assert _wrong(out, umask) == {}
